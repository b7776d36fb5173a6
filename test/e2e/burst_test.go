package e2e_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/secret-relay/secret-relay/relay"
	"github.com/secret-relay/secret-relay/test/cluster"
)

// TestColdBurst creates 30 pods at once that want one Secret nobody has asked for
// yet: the upstream sees at most one read of it.
func TestColdBurst(t *testing.T) {
	w := newWorld(t)
	ns := "burst"
	w.SeedStore(t, ns, "remote-k8s-store")
	w.Up.CreateSecret(t, "default", "burst-secret", map[string]string{"token": "s3cr3t-api-key"})

	reads := func() int {
		n := 0
		for _, ev := range w.Up.AuditEvents(t) {
			if ev.Verb == "get" && ev.ObjectRef.Resource == "secrets" && ev.ObjectRef.Name == "burst-secret" {
				n++
			}
		}
		return n
	}
	require.Zero(t, reads())

	const pods = 30
	var wg sync.WaitGroup
	errs := make([]error, pods)
	for i := range pods {
		wg.Go(func() {
			_, errs[i] = w.Down.Client.CoreV1().Pods(ns).Create(cluster.Context(t), cluster.Pod(fmt.Sprintf("burst-%d", i), map[string]string{
				relay.AnnotationStore: "remote-k8s-store", relay.AnnotationSecrets: `["burst-secret"]`,
			}), metav1.CreateOptions{})
		})
	}
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "pod %d", i)
	}
	s, err := w.Down.Client.CoreV1().Secrets(ns).Get(cluster.Context(t), "burst-secret", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, []byte("s3cr3t-api-key"), s.Data["token"])
	got := reads()
	t.Logf("%d pods admitted with %d upstream GET of the Secret; cache hits %v, misses %v", pods, got,
		w.Relay.Metric(t, "secret_relay_cache_hits_total"), w.Relay.Metric(t, "secret_relay_cache_misses_total"))
	assert.LessOrEqual(t, got, 1, "concurrent misses share one upstream read")
}
