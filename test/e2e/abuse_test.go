package e2e_test

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/secret-relay/secret-relay/relay"
	"github.com/secret-relay/secret-relay/test/cluster"
)

// Limits the relay's webhook server is expected to keep (cmd/secret-relay/serve.go).
const (
	relayReadHeaderTimeout = 5 * time.Second
	// closeMargin is how late past ReadHeaderTimeout a slow header may be dropped on
	// two busy cores.
	closeMargin = 3 * time.Second
)

// Each flood is floodWorkers clients sending floodRounds bodies of floodBodySize, one
// after another.
const (
	floodWorkers  = 40
	floodRounds   = 10
	floodBodySize = 64 << 20
)

// TestAbuse sends the webhook port what no API server would: slow headers, bodies far
// over the limit, junk. Each gets a 4xx or a closed connection, the relay stays
// ready and keeps admitting pods, and its memory stays bounded.
func TestAbuse(t *testing.T) {
	w := newWorld(t)
	ns := "abuse"
	w.SeedStore(t, ns, "remote-k8s-store")
	r := w.Relay

	var pods atomic.Int32
	admitPod := func(t *testing.T) {
		t.Helper()
		name := fmt.Sprintf("abused-%d", pods.Add(1))
		created, err := w.Down.Client.CoreV1().Pods(ns).Create(cluster.Context(t), cluster.Pod(name, map[string]string{
			relay.AnnotationStore:   "remote-k8s-store",
			relay.AnnotationSecrets: seedAnnotation,
		}), metav1.CreateOptions{})
		require.NoError(t, err, "a pod is admitted while the webhook is abused")
		assert.Contains(t, created.Annotations, relay.AnnotationStatus, "the relay mutated it")
	}
	// slowloris holds n connections that trickle a header, and returns how long
	// each lived; it runs on any goroutine, so it reports failures as an error.
	slowloris := func(t *testing.T, n int) ([]time.Duration, error) {
		lived := make([]time.Duration, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				lived[i], errs[i] = r.SlowHeader(t, 200*time.Millisecond, relayReadHeaderTimeout+20*time.Second)
			})
		}
		wg.Wait()
		return lived, errors.Join(errs...)
	}
	assertReady := func(t *testing.T) {
		t.Helper()
		resp, err := http.Get(r.ProbeURL + "/readyz")
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode)
	}

	t.Run("Slowloris connections should be closed within ReadHeaderTimeout while pods are still admitted.", func(t *testing.T) {
		const conns = 200
		var (
			lived   []time.Duration
			slowErr error
		)
		done := make(chan struct{})
		go func() {
			defer close(done)
			lived, slowErr = slowloris(t, conns)
		}()
		time.Sleep(time.Second) // the connections are open and trickling
		took := cluster.Timed(func() { admitPod(t) })
		<-done
		require.NoError(t, slowErr)

		slices.Sort(lived)
		t.Logf("%d slow-header connections closed after %s (fastest), %s (median), %s (slowest); a pod was admitted meanwhile in %s",
			len(lived), lived[0].Round(time.Millisecond), lived[len(lived)/2].Round(time.Millisecond), lived[len(lived)-1].Round(time.Millisecond), took.Round(time.Millisecond))
		assert.Less(t, lived[len(lived)-1], relayReadHeaderTimeout+closeMargin)
		assert.Greater(t, lived[0], relayReadHeaderTimeout/2, "the connections stayed open long enough to be a test")
		assertReady(t)
	})

	// Both floods run with junk reviews and slow headers alongside, and a pod
	// admitted in the middle. Bodies with a Content-Length are refused unread, so the
	// relay's memory should hardly move. Chunked bodies are read until they pass
	// MaxReviewBytes (413) or the 32 MiB all bodies share past their first 64 KiB is
	// spent (429), so the peak is about three times that budget (buffers being read,
	// buffers outgrown and not yet collected, and the garbage collector's headroom),
	// whatever the number of clients: the bound is four times. Whole bodies would
	// take 64 MiB each, and bodies read to the limit without a shared budget 6 MiB
	// each, 240 MiB for these 40 clients.
	floods := map[string]struct {
		chunked   bool
		maxGrowth int64
	}{
		"Bodies over the limit with a Content-Length should get 413 unread, and memory should barely grow.": {
			chunked: false, maxGrowth: 32 << 20,
		},
		"Chunked bodies over the limit should get 413 or 429, and memory should stay within the shared budget.": {
			chunked: true, maxGrowth: 128 << 20,
		},
	}
	for _, name := range slices.Sorted(maps.Keys(floods)) {
		test := floods[name]
		t.Run(name, func(t *testing.T) {
			pid := r.PID()
			require.NoError(t, cluster.ResetPeakMemory(pid))
			before, err := cluster.ReadProcessMemory(pid)
			require.NoError(t, err)

			var sent, busy atomic.Int64
			statuses := make(chan string, floodWorkers*floodRounds+64)
			var wg sync.WaitGroup
			for range floodWorkers {
				wg.Go(func() {
					for range floodRounds {
						status, n, err := r.PostStream(t, floodBodySize, test.chunked)
						sent.Add(n)
						switch {
						case err != nil:
							statuses <- err.Error()
						case status == http.StatusTooManyRequests:
							busy.Add(1)
						case status != http.StatusRequestEntityTooLarge:
							statuses <- fmt.Sprintf("oversized body: %d", status)
						}
					}
				})
			}
			client := r.HTTPSClient(t)
			junk := map[string][]byte{
				"empty":      nil,
				"not JSON":   []byte("not json at all"),
				"wrong kind": []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"x"}}`),
				"no request": []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`),
			}
			for kind, body := range junk {
				wg.Go(func() {
					for range 5 {
						resp, err := client.Post(r.WebhookURL, "application/json", bytes.NewReader(body))
						if err != nil {
							statuses <- fmt.Sprintf("%s: %v", kind, err)
							continue
						}
						resp.Body.Close()
						if resp.StatusCode < 400 || resp.StatusCode >= 500 {
							statuses <- fmt.Sprintf("%s: %d", kind, resp.StatusCode)
						}
					}
				})
			}
			var (
				lived   []time.Duration
				slowErr error
			)
			wg.Go(func() { lived, slowErr = slowloris(t, 100) })
			took := cluster.Timed(func() { admitPod(t) })
			wg.Wait()
			close(statuses)
			require.NoError(t, slowErr)

			after, err := cluster.ReadProcessMemory(pid)
			require.NoError(t, err)
			growth := after.Peak - before.RSS
			t.Logf("%d bodies of %d MiB (chunked: %t; %d MiB taken by the sockets; %d refused 429 while the budget was spent), %d junk reviews, %d slow headers (slowest closed after %s); a pod was admitted meanwhile in %s",
				floodWorkers*floodRounds, floodBodySize>>20, test.chunked, sent.Load()>>20, busy.Load(), len(junk)*5, len(lived), slices.Max(lived).Round(time.Millisecond), took.Round(time.Millisecond))
			t.Logf("relay RSS: %d MiB before, %d MiB after, %d MiB peak: %d MiB growth at the peak (bound %d MiB)",
				before.RSS>>20, after.RSS>>20, after.Peak>>20, growth>>20, test.maxGrowth>>20)

			wrong := map[string]int{}
			for s := range statuses {
				wrong[s]++
			}
			assert.Empty(t, wrong, "every oversized body gets 413 or 429 and every junk review a 4xx (answer: count)")
			assert.Less(t, slices.Max(lived), relayReadHeaderTimeout+closeMargin)
			assert.Greater(t, sent.Load(), 4*test.maxGrowth, "the relay was sent far more than the bound")
			assert.Less(t, growth, test.maxGrowth)
			assertReady(t)
			admitPod(t)
		})
	}
}
