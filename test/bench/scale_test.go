package bench_test

import (
	"crypto/rand"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/secret-relay/secret-relay/test/cluster"
)

// Names of measurement 5: an upstream namespace of its own, read by its own reader
// through a store that points there.
const (
	scaleUpstreamNamespace = "scale"
	scaleNamespace         = "bench-scale"
	scaleStore             = "scale-store"
	// scaleCreateWorkers create the upstream Secrets side by side.
	scaleCreateWorkers = 16
)

// Targets of the issue for scale.
const (
	readyTarget     = 5 * time.Second
	rssGrowthTarget = 2.0 // RSS growth below this many times the cached data
)

// scaleResult is measurement 5: memory and restart of secret-relay with many
// relayed Secrets, against a fresh process restarted before any of them existed.
type scaleResult struct {
	UpstreamSecrets       int     `json:"upstreamSecrets"`
	SecretBytes           int     `json:"secretBytes"`
	CreateUpstreamSeconds float64 `json:"createUpstreamSeconds"`
	RelayPods             int     `json:"relayPods"`
	ItemsPerPod           int     `json:"itemsPerPod"`
	RelayPodCreate        latency `json:"relayPodCreate"`
	RelayPodsRefused      int     `json:"relayPodsRefused"`
	// Relayed counts the managed local copies found afterwards.
	Relayed int `json:"relayed"`
	// CachedDataBytes is the sum of their data values.
	CachedDataBytes int64 `json:"cachedDataBytes"`

	RSSBeforeBytes       int64   `json:"rssBeforeBytes"`
	RSSAfterBytes        int64   `json:"rssAfterBytes"`
	RSSGrowthBytes       int64   `json:"rssGrowthBytes"`
	RSSGrowthRatio       float64 `json:"rssGrowthRatio"`
	RSSAfterRestartBytes int64   `json:"rssAfterRestartBytes"`

	// Baseline: the restart before the scale Secrets existed.
	ReadyBaselineSeconds        float64 `json:"readyBaselineSeconds"`
	WarmAdmissionBaselineMs     float64 `json:"warmAdmissionBaselineMs"`
	ReadyAfterRestartSeconds    float64 `json:"readyAfterRestartSeconds"`
	WarmAdmissionAfterRestartMs float64 `json:"warmAdmissionAfterRestartMs"`
	// WarmScaleAdmissionAfterRestartMs is a pod asking for itemsPerPod relayed
	// Secrets, right after the seed pod.
	WarmScaleAdmissionAfterRestartMs float64 `json:"warmScaleAdmissionAfterRestartMs"`
	// UpstreamDuringRestart are the scale reader's requests from the second stop
	// until those admissions were answered.
	UpstreamDuringRestart upstreamCounts `json:"upstreamDuringRestart"`
}

// measureScale is measurement 5. It restarts secret-relay first, so that memory is
// measured on a process that carries nothing from the earlier measurements, and that
// restart is the baseline of the second one, made with every Secret relayed.
func (b *bench) measureScale(t *testing.T) {
	cfg := b.cfg
	res := &scaleResult{UpstreamSecrets: cfg.scaleSecrets, SecretBytes: cfg.scaleSecretBytes, ItemsPerPod: cfg.scaleItemsPerPod}
	b.report.Scale = res
	seed := newReviewTemplate(t, seedPod("bench-restart", "default"))

	ready, warm := b.restartRelay(t, seed)
	res.ReadyBaselineSeconds, res.WarmAdmissionBaselineMs = ready.Seconds(), ms(warm)
	res.RSSBeforeBytes = relayRSS(t, b.w.Relay)

	start := time.Now()
	names := b.createScaleSecrets(t, cfg.scaleSecrets, cfg.scaleSecretBytes)
	res.CreateUpstreamSeconds = time.Since(start).Seconds()
	t.Logf("created %d upstream Secrets in %s", len(names), time.Since(start).Round(time.Millisecond))
	b.createScaleStore(t)

	var creates []time.Duration
	// scalePod is the first of them, reviewed again after the restart.
	var scalePod *corev1.Pod
	for i := 0; i*cfg.scaleItemsPerPod < cfg.scaleRelayed; i++ {
		items := names[i*cfg.scaleItemsPerPod : min((i+1)*cfg.scaleItemsPerPod, cfg.scaleRelayed)]
		pod := shorthandPod(t, fmt.Sprintf("relay-%03d", i), scaleNamespace, scaleStore, items...)
		if scalePod == nil {
			scalePod = pod
		}
		res.RelayPods++
		ctx, cancel := callContext(t)
		begin := time.Now()
		_, err := b.down.CoreV1().Pods(scaleNamespace).Create(ctx, pod, metav1.CreateOptions{})
		took := time.Since(begin)
		cancel()
		if err != nil {
			res.RelayPodsRefused++
			t.Errorf("pod %s with %d Secrets was refused after %s: %v", pod.Name, len(items), took, err)
			continue
		}
		creates = append(creates, took)
	}
	res.RelayPodCreate = summarize(creates)
	res.Relayed, res.CachedDataBytes = b.relayedData(t, scaleNamespace)
	assert.Equal(t, cfg.scaleRelayed, res.Relayed, "every Secret asked for should be relayed")

	// Let the work of the last admissions settle before reading memory.
	time.Sleep(2 * time.Second)
	res.RSSAfterBytes = relayRSS(t, b.w.Relay)
	res.RSSGrowthBytes = res.RSSAfterBytes - res.RSSBeforeBytes
	res.RSSGrowthRatio = ratio(float64(res.RSSGrowthBytes), float64(res.CachedDataBytes))

	before := b.upstreamSecretRequests(t, scaleUpstreamNamespace, "")
	ready, warm = b.restartRelay(t, seed)
	res.ReadyAfterRestartSeconds, res.WarmAdmissionAfterRestartMs = ready.Seconds(), ms(warm)
	relay := newWebhookTarget(t, "secret-relay", b.w.Relay.WebhookURL, b.w.Relay.Cert.CA.CertPEM(), 1)
	res.WarmScaleAdmissionAfterRestartMs = ms(relay.untilAdmitted(t, newReviewTemplate(t, scalePod), 30*time.Second))
	res.UpstreamDuringRestart = b.upstreamSecretRequests(t, scaleUpstreamNamespace, "").minus(before)
	res.RSSAfterRestartBytes = relayRSS(t, b.w.Relay)

	what := fmt.Sprintf("%d relayed of %d", res.Relayed, res.UpstreamSecrets)
	b.report.add(
		row{
			Measurement: "RSS growth, " + what,
			Relay:       fmt.Sprintf("%s (%s → %s)", formatBytes(res.RSSGrowthBytes), formatBytes(res.RSSBeforeBytes), formatBytes(res.RSSAfterBytes)),
			Baseline:    formatBytes(res.CachedDataBytes) + " cached data",
			Target:      fmt.Sprintf("%s (< %.0f×)", formatRatio(res.RSSGrowthRatio), rssGrowthTarget),
			Met:         metIf(res.Relayed == cfg.scaleRelayed && res.RSSGrowthRatio < rssGrowthTarget),
		},
		row{
			Measurement: "ready after restart, " + what,
			Relay:       fmt.Sprintf("%s (upstream: %s)", formatDuration(seconds(res.ReadyAfterRestartSeconds)), res.UpstreamDuringRestart.namespaceString()),
			Baseline:    formatDuration(seconds(res.ReadyBaselineSeconds)) + " (before relaying)",
			Target:      fmt.Sprintf("%s (< %s)", formatRatio(ratio(res.ReadyAfterRestartSeconds, res.ReadyBaselineSeconds)), formatDuration(readyTarget)),
			Met:         metIf(seconds(res.ReadyAfterRestartSeconds) < readyTarget),
		},
		row{
			Measurement: "first warm admission after ready, " + what,
			Relay: fmt.Sprintf("%s (then %d-Secret pod: %s)", formatMs(res.WarmAdmissionAfterRestartMs),
				min(cfg.scaleItemsPerPod, cfg.scaleRelayed), formatMs(res.WarmScaleAdmissionAfterRestartMs)),
			Baseline: formatMs(res.WarmAdmissionBaselineMs) + " (before relaying)",
			Target:   formatRatio(ratio(res.WarmAdmissionAfterRestartMs, res.WarmAdmissionBaselineMs)),
			Met:      metNone,
		},
	)
}

// restartRelay stops secret-relay and starts a new process, with relayArgs and
// extraArgs. It returns how long the new one took to report ready, as
// cluster.StartRelay waits for /readyz, and then how long until it admitted review,
// sent to it directly. Then it points the webhook configuration at the new process.
func (b *bench) restartRelay(t *testing.T, review *reviewTemplate, extraArgs ...string) (ready, warm time.Duration) {
	t.Helper()
	old := b.w.Relay
	old.Stop(t)
	start := time.Now()
	r := cluster.StartRelay(t, b.binary, b.logDir, b.w.Down, append(slices.Clone(relayArgs), extraArgs...)...)
	ready = time.Since(start)
	b.w.Relay = r
	warm = newWebhookTarget(t, "secret-relay", r.WebhookURL, r.Cert.CA.CertPEM(), 1).untilAdmitted(t, review, 30*time.Second)

	webhooks := b.down.AdmissionregistrationV1().MutatingWebhookConfigurations()
	ctx, cancel := callContext(t)
	defer cancel()
	list, err := webhooks.List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	for _, cfg := range list.Items {
		for _, wh := range cfg.Webhooks {
			if u := wh.ClientConfig.URL; u != nil && *u == old.WebhookURL {
				require.NoError(t, webhooks.Delete(ctx, cfg.Name, metav1.DeleteOptions{}))
				break
			}
		}
	}
	r.Register(t, b.w.Down)
	return ready, warm
}

// createScaleSecrets creates n upstream Secrets of size random bytes each in the
// scale namespace, side by side, and returns their names in order.
func (b *bench) createScaleSecrets(t *testing.T, n, size int) []string {
	t.Helper()
	b.w.Up.EnsureNamespace(t, scaleUpstreamNamespace)
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("scale-%05d", i)
	}
	work := make(chan string)
	errs := make(chan error, scaleCreateWorkers)
	var wg sync.WaitGroup
	for range scaleCreateWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for name := range work {
				payload := make([]byte, size)
				_, _ = rand.Read(payload)
				ctx, cancel := callContext(t)
				_, err := b.up.CoreV1().Secrets(scaleUpstreamNamespace).Create(ctx, &corev1.Secret{
					ObjectMeta: metav1.ObjectMeta{Name: name},
					Type:       corev1.SecretTypeOpaque,
					Data:       map[string][]byte{"payload": payload},
				}, metav1.CreateOptions{})
				cancel()
				if err != nil {
					errs <- fmt.Errorf("could not create upstream Secret %s: %w", name, err)
					return
				}
			}
		}()
	}
	go func() {
		defer close(work)
		for _, name := range names {
			select {
			case work <- name:
			case <-t.Context().Done():
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return names
}

// createScaleStore gives the scale namespace upstream its own reader, and the scale
// namespace downstream a store that reads there with that reader's token.
func (b *bench) createScaleStore(t *testing.T) {
	t.Helper()
	reader := b.w.Up.SeedReader(t, scaleUpstreamNamespace)
	b.w.SeedStoreReading(t, scaleNamespace, scaleStore, reader)
	b.waitForStoreReady(t, scaleNamespace, scaleStore)
}

// relayedData counts the managed local Secrets in ns and sums their data bytes.
func (b *bench) relayedData(t *testing.T, ns string) (int, int64) {
	t.Helper()
	ctx, cancel := callContext(t)
	defer cancel()
	list, err := b.down.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{LabelSelector: managedBySelector})
	require.NoError(t, err)
	var size int64
	for _, s := range list.Items {
		for _, v := range s.Data {
			size += int64(len(v))
		}
	}
	return len(list.Items), size
}

// relayRSS is the resident memory of the secret-relay process behind r.
func relayRSS(t *testing.T, r *cluster.Relay) int64 {
	t.Helper()
	m, err := cluster.ReadProcessMemory(r.PID())
	require.NoError(t, err)
	return m.RSS
}

// settledRSS waits, at most a minute, for secret-relay's resident memory to stop
// falling, and returns it with the process's peak so far. The Go runtime gives
// freed memory back to the system gradually, so RSS read right after a burst of
// work still holds garbage already collected: what a memory limit must hold at
// rest is the settled figure, and the peak is reported beside it.
func settledRSS(t *testing.T, r *cluster.Relay) cluster.ProcessMemory {
	t.Helper()
	last, err := cluster.ReadProcessMemory(r.PID())
	require.NoError(t, err)
	steady := 0
	for deadline := time.Now().Add(time.Minute); steady < 5 && time.Now().Before(deadline); {
		time.Sleep(time.Second)
		m, err := cluster.ReadProcessMemory(r.PID())
		require.NoError(t, err)
		if m.RSS >= last.RSS-last.RSS/100 {
			steady++
		} else {
			steady = 0
		}
		last = m
	}
	return last
}
