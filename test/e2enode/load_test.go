package e2enode_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/secret-relay/secret-relay/test/node"
)

// load is many creators at once, each creating annotated pods in a loop: what a
// busy cluster sends the webhook while secret-relay rolls, loses a pod or is killed.
// Its pods are bound to a node that does not exist, so that they are admitted and
// stored but never run, and each is deleted once created.
type load struct {
	stop chan struct{}
	wg   sync.WaitGroup

	mu       sync.Mutex
	admitted []time.Time
	failures []failure
	started  time.Time
}

type failure struct {
	at  time.Time
	msg string
}

// Creators and their pace: 8 × 5 pods/s.
const (
	creators     = 8
	createPeriod = 200 * time.Millisecond
)

func (w *world) startLoad(t *testing.T, ns string) *load {
	t.Helper()
	l := &load{stop: make(chan struct{}), started: time.Now()}
	pods := w.node.Client.CoreV1().Pods(ns)
	for c := range creators {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			tick := time.NewTicker(createPeriod)
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				case <-tick.C:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				pod := loadPod(fmt.Sprintf("load-%d-%d", c, i))
				_, err := pods.Create(ctx, pod, metav1.CreateOptions{})
				if err == nil {
					_ = pods.Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
				}
				cancel()
				l.record(err)
			}
		}()
	}
	t.Cleanup(func() { l.finish() })
	return l
}

// underLoad runs disrupt while the creators run, from 2 s after they start to 2 s
// before they stop, and says what they saw.
func (w *world) underLoad(t *testing.T, disrupt func()) loadResult {
	t.Helper()
	l := w.startLoad(t, "load")
	time.Sleep(2 * time.Second)
	disrupt()
	time.Sleep(2 * time.Second)
	return l.result()
}

func (l *load) record(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.failures = append(l.failures, failure{at: time.Now(), msg: err.Error()})
		return
	}
	l.admitted = append(l.admitted, time.Now())
}

// finish stops the creators and waits for them.
func (l *load) finish() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

// result stops the load and says what it saw.
func (l *load) result() loadResult {
	l.finish()
	l.mu.Lock()
	defer l.mu.Unlock()
	return loadResult{admitted: slices.Clone(l.admitted), failures: slices.Clone(l.failures), took: time.Since(l.started)}
}

type loadResult struct {
	admitted []time.Time
	failures []failure
	took     time.Duration
}

// admittedAfter counts the pods admitted after t.
func (r loadResult) admittedAfter(t time.Time) int {
	n := 0
	for _, at := range r.admitted {
		if at.After(t) {
			n++
		}
	}
	return n
}

// String counts the failures by message, for the test's log.
func (r loadResult) String() string {
	s := fmt.Sprintf("%d pods admitted, %d creates failed, in %s (%d creators, one create each every %s)", len(r.admitted), len(r.failures), r.took.Round(100*time.Millisecond), creators, createPeriod)
	counts := map[string]int{}
	for _, f := range r.failures {
		counts[f.msg]++
	}
	for _, msg := range slices.Sorted(maps.Keys(counts)) {
		s += fmt.Sprintf("\n  %d× %s", counts[msg], msg)
	}
	return s
}

// loadPod is an annotated pod for a node that does not exist.
func loadPod(name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"load": "true"}, Annotations: relayAnnotations},
		Spec: corev1.PodSpec{
			NodeName:   "nowhere",
			Containers: []corev1.Container{{Name: "app", Image: node.ReaderImage, ImagePullPolicy: corev1.PullNever}},
		},
	}
}
