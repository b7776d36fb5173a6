package e2e_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/secret-relay/secret-relay/relay"
	"github.com/secret-relay/secret-relay/test/cluster"
)

// TestGracefulShutdown sends SIGTERM to one of two replicas behind a balancer while
// pods are created steadily: the replica drains, the review it holds finishes, and
// no admission fails.
func TestGracefulShutdown(t *testing.T) {
	const (
		shutdownDelay = 3 * time.Second
		workers       = 4
	)
	w := cluster.NewUnregisteredWorld(t, relayBinary, suiteDir, "--shutdown-delay", shutdownDelay.String())
	first := w.Relay
	registerLog(first.LogFile)
	// Both replicas serve the same certificate, as two pods of one Deployment do.
	second := cluster.StartRelay(t, relayBinary, suiteDir, w.Down, "--shutdown-delay", shutdownDelay.String(),
		"--tls-cert-file", first.Cert.CertFile, "--tls-key-file", first.Cert.KeyFile)
	registerLog(second.LogFile)
	lb := cluster.StartBalancer(t, first, second)
	w.Down.RegisterPodWebhook(t, "secret-relay-balanced", lb.URL(), first.Cert.CA.CertPEM())
	w.Down.WaitForWebhook(t, "default", func() bool {
		return first.Metric(t, "secret_relay_admissions_total")+second.Metric(t, "secret_relay_admissions_total") > 0
	})
	w.SeedStore(t, "default", "remote-k8s-store")
	w.SeedSilentStore(t, "held")
	annotations := map[string]string{relay.AnnotationStore: "remote-k8s-store", relay.AnnotationSecrets: seedAnnotation}

	var (
		mu         sync.Mutex
		n, created int
		failures   []string
		stop       = make(chan struct{})
		wg         sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				n++
				name := fmt.Sprintf("steady-%d", n)
				mu.Unlock()
				_, err := w.Down.Client.CoreV1().Pods("default").Create(cluster.Context(t), cluster.Pod(name, annotations), metav1.CreateOptions{})
				mu.Lock()
				if err != nil {
					failures = append(failures, err.Error())
				} else {
					created++
				}
				mu.Unlock()
			}
		})
	}
	time.Sleep(2 * time.Second)
	servedBefore := first.Metric(t, "secret_relay_admissions_total")

	// A review that takes the whole upstream timeout is in flight on the first
	// replica when the signal comes: it must end in its denial, not in a failed call.
	held := make(chan *admissionv1.AdmissionReview, 1)
	go func() {
		body := cluster.Review(t, "held-review", "held", cluster.Pod("held", map[string]string{
			relay.AnnotationStore: "silent", relay.AnnotationSecrets: seedAnnotation,
		}))
		resp, err := first.HTTPSClient(t).Post(first.WebhookURL, "application/json", bytes.NewReader(body))
		if err != nil {
			t.Errorf("the held review failed: %v", err)
			held <- nil
			return
		}
		defer resp.Body.Close()
		var review admissionv1.AdmissionReview
		if err := json.NewDecoder(resp.Body).Decode(&review); err != nil {
			t.Errorf("the held review's answer: %v", err)
		}
		held <- &review
	}()
	time.Sleep(500 * time.Millisecond)
	stopped := cluster.Timed(func() { first.Stop(t) })
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()

	t.Logf("%d pods created, %d failed; first replica served %.0f reviews before SIGTERM and stopped %s after it; balancer connections %v, refused %d",
		created, len(failures), servedBefore, stopped.Round(time.Millisecond), lb.Connections(), lb.Refused.Load())
	t.Run("No admission should fail while a replica shuts down.", func(t *testing.T) {
		assert.Empty(t, failures)
		assert.Positive(t, created)
		assert.Positive(t, servedBefore, "the balancer sent reviews to the replica that stopped")
	})
	t.Run("The review in flight should end in its denial.", func(t *testing.T) {
		review := <-held
		require.NotNil(t, review)
		require.NotNil(t, review.Response)
		assert.False(t, review.Response.Allowed)
		assert.Contains(t, review.Response.Result.Message, "secret-relay: upstream of store SecretStore/silent is unreachable")
	})
	t.Run("The replica should drain for --shutdown-delay, then stop.", func(t *testing.T) {
		assert.GreaterOrEqual(t, stopped, shutdownDelay)
		assert.Less(t, stopped, shutdownDelay+5*time.Second)
		assert.Contains(t, first.LogTail(), `"msg":"shutting down"`)
	})
	t.Run("The other replica should go on serving.", func(t *testing.T) {
		_, err := w.Down.Client.CoreV1().Pods("default").Create(cluster.Context(t), cluster.Pod("after", annotations), metav1.CreateOptions{})
		require.NoError(t, err)
		assert.Positive(t, second.Metric(t, "secret_relay_admissions_total", `result="admitted"`))
	})
}
