package e2e_test

import (
	"fmt"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/secret-relay/secret-relay/relay"
	"github.com/secret-relay/secret-relay/test/cluster"
)

// The values the fault tests move upstream: fixture values, so that the suite's log
// scan looks for them.
const (
	valueBefore = "s3cr3t-api-key"
	valueAfter  = "s3cr3t-db-password"
)

// outcomes counts how the reviews of a fault test ended.
type outcomes struct {
	mu                                  sync.Mutex
	admitted, warned, deniedUnreachable int
	failed                              []string
	slowest                             time.Duration
	admittedSecrets                     map[string]map[string]bool // namespace, Secret
}

func (o *outcomes) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return fmt.Sprintf("%d reviews: %d admitted (%d with the unreachable warning), %d denied as unreachable, %d failed otherwise; slowest %s",
		o.admitted+o.deniedUnreachable+len(o.failed), o.admitted, o.warned, o.deniedUnreachable, len(o.failed), o.slowest.Round(time.Millisecond))
}

// createPods creates pods from workers in parallel until stopped, each pod wanting
// the whole Secret that next picks, and records how each review ended. stop waits
// for the reviews in flight.
func createPods(t *testing.T, w *cluster.World, workers int, next func() (ns, secret string)) (o *outcomes, stopPods func()) {
	t.Helper()
	o = &outcomes{admittedSecrets: map[string]map[string]bool{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for worker := range workers {
		warnings := &cluster.WarningCollector{}
		client := w.Down.ClientWithWarnings(t, warnings)
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				ns, secret := next()
				o.record(t, client, warnings, ns, secret, fmt.Sprintf("w%d-%d", worker, i))
			}
		})
	}
	stopPods = sync.OnceFunc(func() {
		close(stop)
		wg.Wait()
	})
	t.Cleanup(stopPods)
	return o, stopPods
}

func (o *outcomes) record(t *testing.T, client kubernetes.Interface, warnings *cluster.WarningCollector, ns, secret, name string) {
	before := len(warnings.All())
	var err error
	took := cluster.Timed(func() {
		_, err = client.CoreV1().Pods(ns).Create(cluster.Context(t), cluster.Pod(name, map[string]string{
			relay.AnnotationStore: "remote-k8s-store", relay.AnnotationSecrets: fmt.Sprintf("[%q]", secret),
		}), metav1.CreateOptions{})
	})
	warned := false
	for _, w := range warnings.All()[before:] {
		warned = warned || strings.HasPrefix(w, "secret-relay: upstream unreachable, using copy synced at ")
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.slowest = max(o.slowest, took)
	switch {
	case err == nil:
		o.admitted++
		if warned {
			o.warned++
		}
		if o.admittedSecrets[ns] == nil {
			o.admittedSecrets[ns] = map[string]bool{}
		}
		o.admittedSecrets[ns][secret] = true
	case strings.Contains(err.Error(), "secret-relay: upstream of store SecretStore/remote-k8s-store is unreachable"):
		o.deniedUnreachable++
	default:
		o.failed = append(o.failed, fmt.Sprintf("%s/%s after %s: %v", ns, name, took.Round(time.Millisecond), err))
	}
}

// managedCopies lists the managed Secrets of ns by name.
func managedCopies(t *testing.T, w *cluster.World, ns string) map[string]*corev1.Secret {
	t.Helper()
	list, err := w.Down.Client.CoreV1().Secrets(ns).List(cluster.Context(t), metav1.ListOptions{
		LabelSelector: relay.LabelManagedBy + "=" + relay.ManagedByValue,
	})
	require.NoError(t, err)
	copies := map[string]*corev1.Secret{}
	for i := range list.Items {
		copies[list.Items[i].Name] = &list.Items[i]
	}
	return copies
}

// hostPort is the host:port of an API server URL.
func hostPort(t *testing.T, rawURL string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	require.NoError(t, err)
	return u.Host
}

// setUpstream writes value into every named upstream Secret.
func setUpstream(t *testing.T, w *cluster.World, value string, names ...string) {
	t.Helper()
	for _, name := range names {
		s, err := w.Up.Client.CoreV1().Secrets("default").Get(cluster.Context(t), name, metav1.GetOptions{})
		require.NoError(t, err)
		s.Data = map[string][]byte{"token": []byte(value)}
		_, err = w.Up.Client.CoreV1().Secrets("default").Update(cluster.Context(t), s, metav1.UpdateOptions{})
		require.NoError(t, err)
	}
}

// TestSlowUpstream puts 3 s of latency between the relay and its upstream: every
// review is still answered within --upstream-timeout plus a second, from the copy
// with a warning or with a denial naming the store, and once the latency goes the
// copies catch up.
func TestSlowUpstream(t *testing.T) {
	const (
		upstreamTimeout = 2 * time.Second // the default
		latency         = 3 * time.Second
		runFor          = 12 * time.Second
	)
	w := newWorld(t)
	proxy := cluster.StartProxy(t, hostPort(t, w.Up.URL()))
	w.SeedStoreAt(t, "default", "remote-k8s-store", proxy.URL())
	w.Up.CreateSecret(t, "default", "warm", map[string]string{"token": valueBefore})
	for i := range 50 {
		w.Up.CreateSecret(t, "default", fmt.Sprintf("cold-%d", i), map[string]string{"token": valueBefore})
	}
	_, err := w.Down.Client.CoreV1().Pods("default").Create(cluster.Context(t), cluster.Pod("warm-up", map[string]string{
		relay.AnnotationStore: "remote-k8s-store", relay.AnnotationSecrets: `["warm"]`,
	}), metav1.CreateOptions{})
	require.NoError(t, err)

	proxy.SetLatency(latency)
	proxy.CutAll()
	var cold int
	var mu sync.Mutex
	o, stopPods := createPods(t, w, 4, func() (string, string) {
		mu.Lock()
		defer mu.Unlock()
		if rand.N(2) == 0 || cold == 50 {
			return "default", "warm"
		}
		cold++
		return "default", fmt.Sprintf("cold-%d", cold-1)
	})
	time.Sleep(runFor)
	stopPods()
	t.Cleanup(func() { t.Logf("slow upstream (%s per round trip): %s; proxy %+v", latency, o, proxy.Stats()) })

	t.Run("Every review should be answered within the upstream timeout plus a second.", func(t *testing.T) {
		assert.Less(t, o.slowest, upstreamTimeout+time.Second)
	})
	t.Run("Every review should end in an admission or a denial naming the store.", func(t *testing.T) {
		assert.Empty(t, o.failed)
		assert.Positive(t, o.warned, "some pods used the copy, with the warning")
		assert.Positive(t, o.deniedUnreachable, "some pods without a copy were denied")
	})
	t.Run("Once the latency is gone, an upstream change should reach the copy within 10 s.", func(t *testing.T) {
		proxy.SetLatency(0)
		proxy.CutAll()
		setUpstream(t, w, valueAfter, "warm")
		took := cluster.Timed(func() {
			assert.Eventually(t, func() bool {
				return string(managedCopies(t, w, "default")["warm"].Data["token"]) == valueAfter
			}, 10*time.Second, 50*time.Millisecond)
		})
		t.Logf("caught up in %s", took.Round(time.Millisecond))
	})
}

// TestFlakyUpstream drops half the connections to the upstream while pods are
// created and upstream Secrets change: no review fails other than by a denial naming
// the store, no copy loses data or appears twice, and the copies catch up once the
// upstream is healthy.
func TestFlakyUpstream(t *testing.T) {
	const (
		namespaces = 4
		secrets    = 10
		runFor     = 12 * time.Second
	)
	w := newWorld(t)
	proxy := cluster.StartProxy(t, hostPort(t, w.Up.URL()))
	var names []string
	for i := range secrets {
		names = append(names, fmt.Sprintf("flaky-%d", i))
		w.Up.CreateSecret(t, "default", names[i], map[string]string{"token": valueBefore})
	}
	for i := range namespaces {
		w.SeedStoreAt(t, fmt.Sprintf("flaky-%d", i), "remote-k8s-store", proxy.URL())
	}
	// Half the Secrets have copies in every namespace before the faults start.
	healthy := &outcomes{admittedSecrets: map[string]map[string]bool{}}
	for i := range namespaces {
		for _, name := range names[:secrets/2] {
			healthy.record(t, w.Down.Client, &cluster.WarningCollector{}, fmt.Sprintf("flaky-%d", i), name, "before-"+name)
		}
	}
	require.Equal(t, namespaces*secrets/2, healthy.admitted, "%s", healthy)

	proxy.SetFlaky(true)
	proxy.CutAll()
	setUpstream(t, w, valueAfter, names...)
	o, stopPods := createPods(t, w, 4, func() (string, string) {
		return fmt.Sprintf("flaky-%d", rand.N(namespaces)), names[rand.N(secrets)]
	})

	// Watch the copies while the faults go on: no copy may ever hold anything but a
	// value the upstream had.
	var lost []string
	deadline := time.Now().Add(runFor)
	for time.Now().Before(deadline) {
		for i := range namespaces {
			ns := fmt.Sprintf("flaky-%d", i)
			for name, s := range managedCopies(t, w, ns) {
				if v := string(s.Data["token"]); len(s.Data) != 1 || (v != valueBefore && v != valueAfter) {
					lost = append(lost, fmt.Sprintf("%s/%s holds %d keys", ns, name, len(s.Data)))
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	stopPods()
	proxy.SetFlaky(false)
	t.Cleanup(func() { t.Logf("flaky upstream: %s; proxy %+v", o, proxy.Stats()) })

	t.Run("Every review should end in an admission or a denial naming the store.", func(t *testing.T) {
		assert.Empty(t, o.failed)
		assert.Positive(t, o.admitted)
	})
	t.Run("No copy should ever hold anything but an upstream value.", func(t *testing.T) {
		assert.Empty(t, lost)
	})
	t.Run("Each namespace should hold exactly the copies its admitted pods wanted.", func(t *testing.T) {
		for i := range namespaces {
			ns := fmt.Sprintf("flaky-%d", i)
			want := map[string]bool{}
			for name := range healthy.admittedSecrets[ns] {
				want[name] = true
			}
			for name := range o.admittedSecrets[ns] {
				want[name] = true
			}
			got := map[string]bool{}
			for name := range managedCopies(t, w, ns) {
				got[name] = true
			}
			assert.Equal(t, want, got, "namespace %s", ns)
		}
	})
	t.Run("Once the upstream is healthy, every copy should catch up within 10 s.", func(t *testing.T) {
		proxy.CutAll()
		took := cluster.Timed(func() {
			assert.Eventually(t, func() bool {
				for i := range namespaces {
					for _, s := range managedCopies(t, w, fmt.Sprintf("flaky-%d", i)) {
						if string(s.Data["token"]) != valueAfter {
							return false
						}
					}
				}
				return true
			}, 10*time.Second, 100*time.Millisecond)
		})
		t.Logf("caught up in %s", took.Round(time.Millisecond))
	})
}
