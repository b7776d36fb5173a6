package bench_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/secret-relay/secret-relay/test/cluster"
)

// Sizes of the sweep measurement: sweepPods relayed pods in one namespace, five to
// each copy, and the idle window each process is measured over.
const (
	sweepNamespace = "bench-sweep"
	sweepCopies    = 1000
	sweepWindow    = 30 * time.Second
)

// sweepResult is the orphan sweep's cost at many relayed pods. Three fresh processes
// are measured idle: the baseline, with one pod per copy; then, with every pod,
// one that sweeps every second (a 10 s grace period) and one that sweeps once a
// minute (an hour's): the difference of their CPU is the sweeps', and the growth
// over the baseline's memory is the relayed pods' cache, which the sweep reads.
type sweepResult struct {
	Pods   int `json:"pods"`
	Copies int `json:"copies"`

	RSSBaselineBytes int64 `json:"rssBaselineBytes"`
	RSSBytes         int64 `json:"rssBytes"`
	BytesPerPod      int64 `json:"bytesPerPod"`

	WindowSeconds float64 `json:"windowSeconds"`
	// CoresSweeping and CoresIdle are the processes' CPU over the window, in cores.
	CoresSweeping float64 `json:"coresSweeping"`
	CoresIdle     float64 `json:"coresIdle"`
	// MsPerSweep is the difference, per sweep of the first.
	MsPerSweep float64 `json:"msPerSweep"`
}

// measureSweep is the orphan sweep's measurement.
func (b *bench) measureSweep(t *testing.T) {
	pods := b.cfg.sweepPods
	res := &sweepResult{Pods: pods, Copies: min(sweepCopies, pods), WindowSeconds: sweepWindow.Seconds()}
	b.report.Sweep = res
	b.w.Down.EnsureNamespace(t, sweepNamespace)
	b.w.SeedStore(t, sweepNamespace, seedStore)
	create := func(from, to int) {
		parallel(t, to-from, func(ctx context.Context, i int) error {
			_, err := b.down.CoreV1().Pods(sweepNamespace).Create(ctx, sweepPod(from+i, res.Copies), metav1.CreateOptions{})
			return ignoreExists(err)
		})
	}
	t.Cleanup(func() { // pods, then their copies, so that no later sweep deletes them mid-measurement
		now := metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}
		_ = b.down.CoreV1().Pods(sweepNamespace).DeleteCollection(context.Background(), now, metav1.ListOptions{})
		_ = b.down.CoreV1().Secrets(sweepNamespace).DeleteCollection(context.Background(), now, metav1.ListOptions{LabelSelector: managedBySelector})
	})
	seed := newReviewTemplate(t, seedPod("bench-restart", "default"))

	create(0, res.Copies)
	b.restartLeader(t, seed)
	res.RSSBaselineBytes = settledRSS(t, b.w.Relay).RSS

	start := time.Now()
	create(res.Copies, pods)
	t.Logf("created %d relayed pods in %s", pods-res.Copies, time.Since(start).Round(time.Millisecond))

	// Each process is measured alike. Copies earlier measurements left unused are
	// deleted by the first a grace period and a mark's wait after it leads: not
	// in its window.
	measure := func(grace string) (rss int64, cores float64) {
		b.restartLeader(t, seed, "--orphan-grace-period="+grace)
		led := time.Now()
		rss = settledRSS(t, b.w.Relay).RSS
		time.Sleep(time.Until(led.Add(25 * time.Second)))
		return rss, b.idleCores(t)
	}
	res.RSSBytes, res.CoresSweeping = measure("10s") // sweeps every second
	res.BytesPerPod = (res.RSSBytes - res.RSSBaselineBytes) / int64(pods-res.Copies)
	_, res.CoresIdle = measure("1h")                            // sweeps once a minute
	res.MsPerSweep = (res.CoresSweeping - res.CoresIdle) * 1000 // one sweep a second
	b.restartRelay(t, seed)

	b.report.add(
		row{
			Measurement: fmt.Sprintf("sweep: memory per relayed pod, %d pods on %d copies", pods, res.Copies),
			Relay:       fmt.Sprintf("%s (%s → %s settled)", formatBytes(res.BytesPerPod), formatBytes(res.RSSBaselineBytes), formatBytes(res.RSSBytes)),
			Baseline:    fmt.Sprintf("fresh process, %d pods", res.Copies),
			Target:      "-",
			Met:         metNone,
		},
		row{
			Measurement: fmt.Sprintf("sweep: CPU of a sweep a second, %d pods on %d copies", pods, res.Copies),
			Relay:       fmt.Sprintf("%.2f ms a sweep (%.4f cores over %s)", res.MsPerSweep, res.CoresSweeping, sweepWindow),
			Baseline:    fmt.Sprintf("%.4f cores, a sweep a minute", res.CoresIdle),
			Target:      "-",
			Met:         metNone,
		},
	)
}

// sweepPod is relayed pod i of the sweep's namespace, wanting copy i mod copies.
// It is never scheduled, so it lives until deleted, and is deleted at once.
func sweepPod(i, copies int) *corev1.Pod {
	p := cluster.Pod(fmt.Sprintf("sweep-%05d", i), map[string]string{
		annotationStore:   seedStore,
		annotationSecrets: strings.Replace(seedAnnotation, "pulled-secrets", fmt.Sprintf("sweep-%04d", i%copies), 1),
	})
	p.Namespace = sweepNamespace
	return p
}

// restartLeader restarts secret-relay with extra flags and waits until it leads,
// so that it sweeps.
func (b *bench) restartLeader(t *testing.T, seed *reviewTemplate, extra ...string) {
	t.Helper()
	b.restartRelay(t, seed, extra...)
	deadline := time.Now().Add(time.Minute)
	for !b.w.Relay.BecameLeader() {
		require.True(t, time.Now().Before(deadline), "secret-relay did not take the leader lease within a minute")
		time.Sleep(100 * time.Millisecond)
	}
}

// idleCores is secret-relay's CPU, in cores, over sweepWindow of nothing but its own
// work.
func (b *bench) idleCores(t *testing.T) float64 {
	t.Helper()
	pid := b.w.Relay.PID()
	m := startCPU(t, pid, pid)
	time.Sleep(sweepWindow)
	_, cores := m.cores(t)
	return cores
}
