package bench_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Namespaces of measurement 2.
const (
	// podsRelayNamespace holds the pods the API server sends to secret-relay.
	podsRelayNamespace = "bench-pods"
	// podsBaselineNamespace is the relay's own namespace, which the webhook's
	// namespaceSelector excludes: its annotated pods are never sent to the webhook.
	podsBaselineNamespace = "secret-relay"
)

// podCreationResult is measurement 2: the same annotated pod created through the API
// server where the webhook is called and where it is not.
type podCreationResult struct {
	Pods       int     `json:"pods"`
	Relay      latency `json:"secretRelay"`
	Baseline   latency `json:"baseline"`
	AddedP50Ms float64 `json:"addedP50Ms"`
	AddedP99Ms float64 `json:"addedP99Ms"`
}

// measurePodCreation is measurement 2. It creates the pods one at a time, a baseline
// pod and a relayed pod in turn, so that both see the same API server load.
func (b *bench) measurePodCreation(t *testing.T) {
	n := b.cfg.pods
	b.w.SeedStore(t, podsRelayNamespace, seedStore)
	b.waitForStoreReady(t, podsRelayNamespace, seedStore)
	// The first relayed pod writes pulled-secrets; the measured ones find it current.
	for _, ns := range []string{podsRelayNamespace, podsBaselineNamespace} {
		b.createPod(t, seedPod("warm-up", ns))
	}

	var relay, baseline []time.Duration
	for i := range n {
		baseline = append(baseline, b.createPod(t, seedPod(fmt.Sprintf("baseline-%04d", i), podsBaselineNamespace)))
		relay = append(relay, b.createPod(t, seedPod(fmt.Sprintf("relayed-%04d", i), podsRelayNamespace)))
	}
	result := &podCreationResult{Pods: n, Relay: summarize(relay), Baseline: summarize(baseline)}
	result.AddedP50Ms = result.Relay.P50Ms - result.Baseline.P50Ms
	result.AddedP99Ms = result.Relay.P99Ms - result.Baseline.P99Ms
	b.report.PodCreation = result

	for _, p := range []struct {
		name                   string
		relay, baseline, added float64
	}{
		{"p50", result.Relay.P50Ms, result.Baseline.P50Ms, result.AddedP50Ms},
		{"p99", result.Relay.P99Ms, result.Baseline.P99Ms, result.AddedP99Ms},
	} {
		b.report.add(row{
			Measurement: fmt.Sprintf("pod create %s (%d pods, sequential)", p.name, n),
			Relay:       formatMs(p.relay),
			Baseline:    formatMs(p.baseline) + " (webhook not called)",
			Target:      "added " + signedMs(p.added),
			Met:         metNone,
		})
	}
}

// createPod creates pod through the API server and returns how long the call took.
func (b *bench) createPod(t *testing.T, pod *corev1.Pod) time.Duration {
	t.Helper()
	ctx, cancel := callContext(t)
	defer cancel()
	start := time.Now()
	_, err := b.down.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	took := time.Since(start)
	require.NoError(t, err, "pod %s/%s should be admitted", pod.Namespace, pod.Name)
	return took
}

// signedMs prints a difference in milliseconds with its sign.
func signedMs(v float64) string {
	if v < 0 {
		return "-" + formatMs(-v)
	}
	return "+" + formatMs(v)
}
