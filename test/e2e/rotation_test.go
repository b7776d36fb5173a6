package e2e_test

import (
	"crypto/tls"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/secret-relay/secret-relay/relay"
	"github.com/secret-relay/secret-relay/test/cluster"
)

// TestCertRotation replaces the serving certificate while pods are created: the
// relay picks it up from the files, with no restart and no failed admission.
func TestCertRotation(t *testing.T) {
	w := newWorld(t)
	w.SeedStore(t, "default", "remote-k8s-store")
	served := func() []byte {
		conn, err := w.Relay.DialWebhook(t, &tls.Config{})
		require.NoError(t, err)
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].Raw
	}
	before := served()

	var created, failed int
	deadline := time.Now().Add(4 * time.Second)
	rotated := false
	for i := 0; time.Now().Before(deadline); i++ {
		if !rotated && i == 5 {
			kp, err := w.Relay.Cert.CA.ServingCert("127.0.0.1", "localhost")
			require.NoError(t, err)
			w.Relay.Cert.Write(t, kp)
			rotated = true
		}
		_, err := w.Down.Client.CoreV1().Pods("default").Create(cluster.Context(t), cluster.Pod(fmt.Sprintf("p-%d", i), map[string]string{
			relay.AnnotationStore: "remote-k8s-store", relay.AnnotationSecrets: seedAnnotation,
		}), metav1.CreateOptions{})
		if err != nil {
			failed++
			t.Logf("pod %d: %v", i, err)
			continue
		}
		created++
	}
	t.Logf("%d pods admitted, %d failed, across a certificate rotation", created, failed)
	assert.Zero(t, failed)
	assert.Positive(t, created)
	assert.NotEqual(t, before, served(), "the relay serves the new certificate without a restart")
}
