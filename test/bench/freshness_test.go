package bench_test

import (
	"context"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
)

// Names of measurement 3: an upstream Secret of its own in the seed store's
// namespace, so that its updates disturb no other measurement, copied whole into a
// namespace of its own.
const (
	freshNamespace = "bench-fresh"
	freshSecret    = "fresh-credentials"
	freshKey       = "password"
)

// freshnessTarget is the goal for the freshness p99.
const freshnessTarget = time.Second

// freshnessResult is measurement 3: from an upstream update until the local copy
// holds it, against the same update seen by an upstream watch.
type freshnessResult struct {
	Updates        int     `json:"updates"`
	TimeoutSeconds float64 `json:"timeoutSeconds"`
	// UpdateCall is the upstream Update call itself, which the lags start after.
	UpdateCall latency `json:"updateCall"`
	Relay      lagStat `json:"secretRelay"`
	Baseline   lagStat `json:"baseline"`
}

// lagStat summarises lags of which some may have timed out. A percentile that falls
// on a timeout is unknown and left out (null in the JSON).
type lagStat struct {
	Observed latency  `json:"observed"`
	TimedOut int      `json:"timedOut"`
	P50Ms    *float64 `json:"p50Ms"`
	P99Ms    *float64 `json:"p99Ms"`
}

// measureFreshness is measurement 3. It updates the upstream Secret's password, waits
// until the local copy has it or the timeout passes, and only then updates again.
// Lags run from the moment the Update call returns to the moment a watch delivers
// the new value: downstream on the local copy, upstream on the Secret itself (the
// floor, often 0 because the event beats the Update response).
func (b *bench) measureFreshness(t *testing.T) {
	n, timeout := b.cfg.freshnessUpdates, b.cfg.freshnessTimeout
	upstream := b.up.CoreV1().Secrets("default")
	ctx, cancel := callContext(t)
	current, err := upstream.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: freshSecret},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{"username": []byte("fresh"), freshKey: []byte("rev-0")},
	}, metav1.CreateOptions{})
	cancel()
	require.NoError(t, err)
	b.w.SeedStore(t, freshNamespace, seedStore)
	b.waitForStoreReady(t, freshNamespace, seedStore)
	b.createPod(t, shorthandPod(t, "fresh", freshNamespace, seedStore, freshSecret))
	ctx, cancel = callContext(t)
	local, err := b.down.CoreV1().Secrets(freshNamespace).Get(ctx, freshSecret, metav1.GetOptions{})
	cancel()
	require.NoError(t, err, "the pod's Secret should be relayed")
	require.Equal(t, "rev-0", string(local.Data[freshKey]))

	upstreamSeen := watchSecretKey(t, b.up, "default", freshSecret, freshKey, current.ResourceVersion)
	localSeen := watchSecretKey(t, b.down, freshNamespace, freshSecret, freshKey, local.ResourceVersion)

	var relayLags, baselineLags, calls []time.Duration
	var relayTimeouts, baselineTimeouts int
	for i := 1; i <= n; i++ {
		value := fmt.Sprintf("rev-%d", i)
		next := current.DeepCopy()
		next.Data[freshKey] = []byte(value)
		ctx, cancel := callContext(t)
		call := time.Now()
		current, err = upstream.Update(ctx, next, metav1.UpdateOptions{})
		cancel()
		require.NoError(t, err)
		updated := time.Now()
		calls = append(calls, updated.Sub(call))
		deadline := updated.Add(timeout)
		// A watch may deliver before Update returns; that counts as no lag.
		if at, ok := upstreamSeen.await(value, deadline); ok {
			baselineLags = append(baselineLags, max(0, at.Sub(updated)))
		} else {
			baselineTimeouts++
		}
		if at, ok := localSeen.await(value, deadline); ok {
			relayLags = append(relayLags, max(0, at.Sub(updated)))
		} else {
			relayTimeouts++
		}
		if i%10 == 0 {
			t.Logf("%d of %d updates, %d not relayed within %s", i, n, relayTimeouts, timeout)
		}
	}

	result := &freshnessResult{
		Updates:        n,
		TimeoutSeconds: timeout.Seconds(),
		UpdateCall:     summarize(calls),
		Relay:          lagStats(relayLags, relayTimeouts),
		Baseline:       lagStats(baselineLags, baselineTimeouts),
	}
	b.report.Freshness = result
	what := fmt.Sprintf("(%d updates)", n)
	b.report.add(
		row{
			Measurement: "freshness p50 " + what,
			Relay:       result.Relay.format(result.Relay.P50Ms, n),
			Baseline:    result.Baseline.format(result.Baseline.P50Ms, n) + " (upstream watch)",
			Target:      metNone,
			Met:         metNone,
		},
		row{
			Measurement: "freshness p99 " + what,
			Relay:       result.Relay.format(result.Relay.P99Ms, n),
			Baseline:    result.Baseline.format(result.Baseline.P99Ms, n) + " (upstream watch)",
			Target:      "≤ " + formatDuration(freshnessTarget),
			Met:         metIf(result.Relay.P99Ms != nil && fromMs(*result.Relay.P99Ms) <= freshnessTarget),
		},
	)
}

// lagStats takes percentiles over every update, counting a timeout as longer than any
// observed lag.
func lagStats(observed []time.Duration, timedOut int) lagStat {
	s := lagStat{Observed: summarize(observed), TimedOut: timedOut}
	total := len(observed) + timedOut
	if total == 0 {
		return s
	}
	sorted := slices.Sorted(slices.Values(observed))
	at := func(p float64) *float64 {
		// Nearest rank over all updates; ranks past the observed ones are timeouts.
		rank := min(max(int(math.Ceil(p*float64(total))), 1), total)
		if rank > len(sorted) {
			return nil
		}
		v := ms(sorted[rank-1])
		return &v
	}
	s.P50Ms, s.P99Ms = at(0.50), at(0.99)
	return s
}

// format prints a percentile, or why it is unknown.
func (s lagStat) format(v *float64, n int) string {
	if v == nil {
		return fmt.Sprintf("n/a (%d of %d timed out)", s.TimedOut, n)
	}
	if s.TimedOut > 0 {
		return fmt.Sprintf("%s (%d of %d timed out)", formatMs(*v), s.TimedOut, n)
	}
	return formatMs(*v)
}

// keyObservation is one value of a Secret's key and when a watch delivered it.
type keyObservation struct {
	value string
	at    time.Time
}

// keyWatch follows one key of one Secret through a watch that survives disconnects.
type keyWatch struct {
	seen chan keyObservation
}

// watchSecretKey watches Secret ns/name from resourceVersion and records every value
// of key it sees, with the time the event arrived.
func watchSecretKey(t *testing.T, client kubernetes.Interface, ns, name, key, resourceVersion string) *keyWatch {
	t.Helper()
	secrets := client.CoreV1().Secrets(ns)
	selector := fields.OneTermEqualSelector("metadata.name", name).String()
	rw, err := watchtools.NewRetryWatcherWithContext(t.Context(), resourceVersion, &cache.ListWatch{
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			opts.FieldSelector = selector
			return secrets.Watch(ctx, opts)
		},
	})
	require.NoError(t, err)
	t.Cleanup(rw.Stop)
	kw := &keyWatch{seen: make(chan keyObservation, 1024)}
	go func() {
		for ev := range rw.ResultChan() {
			s, ok := ev.Object.(*corev1.Secret)
			if !ok || (ev.Type != watch.Added && ev.Type != watch.Modified) {
				continue
			}
			select {
			case kw.seen <- keyObservation{value: string(s.Data[key]), at: time.Now()}:
			case <-t.Context().Done():
				return
			}
		}
	}()
	return kw
}

// await returns when the watch delivered value, skipping older values, or false when
// it has not by deadline.
func (kw *keyWatch) await(value string, deadline time.Time) (time.Time, bool) {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		select {
		case o := <-kw.seen:
			if o.value == value {
				return o.at, true
			}
		case <-timer.C:
			return time.Time{}, false
		}
	}
}
