package bench_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// burstCase names one burst of measurement 4: an upstream Secret and the downstream
// namespace whose pods all ask for it.
type burstCase struct {
	namespace string
	secret    string
	// warm relays the Secret with one pod before the burst.
	warm bool
}

// The cold burst's Secret has never been seen by secret-relay; the warm baseline's
// was relayed before its burst.
var (
	coldBurst = burstCase{namespace: "bench-burst-cold", secret: "burst-secret"}
	warmBurst = burstCase{namespace: "bench-burst-warm", secret: "burst-warm-secret", warm: true}
)

// coldBurstResult is measurement 4: many pods created at once that ask for one
// upstream Secret, never seen before, against the same burst on a relayed Secret.
type coldBurstResult struct {
	Pods     int         `json:"pods"`
	Relay    burstResult `json:"secretRelay"`
	Baseline burstResult `json:"baseline"`
}

// burstResult is one burst: the pods admitted, how long until all were answered, and
// the upstream requests for the Secret meanwhile.
type burstResult struct {
	Secret       string         `json:"secret"`
	Admitted     int            `json:"admitted"`
	FirstError   string         `json:"firstError,omitempty"`
	Seconds      float64        `json:"seconds"`
	Upstream     upstreamCounts `json:"upstream"`
	UpstreamRead int            `json:"upstreamReads"`
}

// measureColdBurst is measurement 4. Its target counts the requests that read the
// burst's Secret alone (gets, lists by name); the lists and watches of the whole
// namespace that a store's cache makes when it starts are reported beside them.
func (b *bench) measureColdBurst(t *testing.T) {
	n := b.cfg.burstPods
	result := &coldBurstResult{Pods: n, Baseline: b.burst(t, warmBurst, n), Relay: b.burst(t, coldBurst, n)}
	b.report.ColdBurst = result
	relay, base := result.Relay, result.Baseline
	b.report.add(
		row{
			Measurement: fmt.Sprintf("cold burst: upstream reads of the Secret (%d pods)", n),
			Relay:       fmt.Sprintf("%d (%s)", relay.UpstreamRead, relay.Upstream),
			Baseline:    fmt.Sprintf("%d (%s) warm", base.UpstreamRead, base.Upstream),
			Target:      "1 read of the Secret",
			Met:         metIf(relay.Admitted == n && relay.UpstreamRead <= 1),
		},
		row{
			Measurement: fmt.Sprintf("cold burst: until all %d admitted", n),
			Relay:       fmt.Sprintf("%s (%d/%d admitted)", formatDuration(seconds(relay.Seconds)), relay.Admitted, n),
			Baseline:    fmt.Sprintf("%s (%d/%d admitted) warm", formatDuration(seconds(base.Seconds)), base.Admitted, n),
			Target:      formatRatio(ratio(relay.Seconds, base.Seconds)),
			Met:         metNone,
		},
	)
}

// burst creates n pods at once in c's namespace that all copy c's Secret. The
// upstream requests are counted from before the Secret and the store exist, when
// cold, so that a cache that reads eagerly is counted too.
func (b *bench) burst(t *testing.T, c burstCase, n int) burstResult {
	t.Helper()
	setUp := func() {
		b.w.Up.CreateSecret(t, "default", c.secret, map[string]string{"token": "burst-" + c.secret})
		b.w.SeedStore(t, c.namespace, seedStore)
		b.waitForStoreReady(t, c.namespace, seedStore)
	}
	var before upstreamCounts
	if c.warm {
		setUp()
		b.createPod(t, shorthandPod(t, "warm-up", c.namespace, seedStore, c.secret))
		before = b.upstreamSecretRequests(t, "default", c.secret)
	} else {
		before = b.upstreamSecretRequests(t, "default", c.secret)
		setUp()
	}

	pods := make([]*corev1.Pod, n)
	for i := range pods {
		pods[i] = shorthandPod(t, fmt.Sprintf("burst-%03d", i), c.namespace, seedStore, c.secret)
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	startGun := make(chan struct{})
	for i, pod := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := callContext(t)
			defer cancel()
			<-startGun
			_, errs[i] = b.down.CoreV1().Pods(c.namespace).Create(ctx, pod, metav1.CreateOptions{})
		}()
	}
	start := time.Now()
	close(startGun)
	wg.Wait()
	took := time.Since(start)

	res := burstResult{Secret: c.secret, Seconds: took.Seconds()}
	for _, err := range errs {
		if err == nil {
			res.Admitted++
		} else if res.FirstError == "" {
			res.FirstError = err.Error()
		}
	}
	if res.FirstError != "" {
		t.Logf("%s burst: %d of %d pods refused, first: %s", c.secret, n-res.Admitted, n, res.FirstError)
	}
	ctx, cancel := callContext(t)
	defer cancel()
	_, err := b.down.CoreV1().Secrets(c.namespace).Get(ctx, c.secret, metav1.GetOptions{})
	assert.NoError(t, err, "the burst's Secret should be relayed")

	// The audit log is written as requests complete; give the last ones a moment.
	time.Sleep(time.Second)
	res.Upstream = b.upstreamSecretRequests(t, "default", c.secret).minus(before)
	res.UpstreamRead = res.Upstream.reads()
	return res
}

// seconds turns float seconds into a duration.
func seconds(v float64) time.Duration { return time.Duration(v * float64(time.Second)) }
