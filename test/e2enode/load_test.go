package e2enode_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/secret-relay/secret-relay/test/cluster"
	"github.com/secret-relay/secret-relay/test/node"
)

// load is many creators at once, each creating annotated pods in a loop: what a
// busy cluster sends the webhook while secret-relay rolls, loses a pod or is killed.
// Its pods are bound to a node that does not exist, so that they are admitted and
// stored but never run, and each is deleted once created.
//
// Beside them, reviewers post the same pod's AdmissionReview to the Service's
// ClusterIP themselves, each on a new connection, from inside the node: a client
// that does not keep its connections, as an API server that just restarted, or one
// of several, does. The API server keeps long-lived connections and retries some
// failures itself, so its creates alone may not show a replica that stopped
// answering while the Service still sends it traffic; new connections do.
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

// Creators and reviewers, and their pace: 8 × 5 pods/s and 4 × 5 reviews/s.
const (
	creators     = 8
	reviewers    = 4
	createPeriod = 200 * time.Millisecond
)

func (w *world) startLoad(t *testing.T, ns string) *load {
	t.Helper()
	l := &load{stop: make(chan struct{}), started: time.Now()}
	pods := w.node.Client.CoreV1().Pods(ns)
	l.run(creators, func(name string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		pod := loadPod("load-" + name)
		_, err := pods.Create(ctx, pod, metav1.CreateOptions{})
		if err == nil {
			_ = pods.Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
		}
		return err
	})
	post := w.reviewPoster(t, ns)
	l.run(reviewers, func(name string) error { return post("review-" + name) })
	t.Cleanup(func() { l.finish() })
	return l
}

// reviewPoster returns a func that posts the AdmissionReview of a load pod to
// secret-relay's Service, on a new TLS connection from inside the node, trusting the
// webhook configuration's caBundle; it fails unless the pod is allowed.
func (w *world) reviewPoster(t *testing.T, ns string) func(name string) error {
	t.Helper()
	ctx := context.Background()
	svc, err := w.node.Client.CoreV1().Services(relayNamespace).Get(ctx, "secret-relay", metav1.GetOptions{})
	require.NoError(t, err)
	cfg, err := w.node.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "secret-relay", metav1.GetOptions{})
	require.NoError(t, err)
	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM(cfg.Webhooks[0].ClientConfig.CABundle))
	client := &http.Client{
		Timeout: 5 * time.Second, // the webhook's timeoutSeconds
		Transport: &http.Transport{
			DialContext:       w.node.DialContext,
			DisableKeepAlives: true,
			TLSClientConfig:   &tls.Config{RootCAs: roots, ServerName: "secret-relay.secret-relay.svc", MinVersion: tls.VersionTLS12},
		},
	}
	url := "https://" + net.JoinHostPort(svc.Spec.ClusterIP, "443") + "/mutate-pods"
	return func(name string) error {
		body := cluster.Review(t, name, ns, loadPod(name))
		resp, err := client.Post(url, "application/json", bytes.NewReader(body))
		if err != nil {
			return fmt.Errorf("direct review: %w", err)
		}
		defer resp.Body.Close()
		var review admissionv1.AdmissionReview
		if err := json.NewDecoder(resp.Body).Decode(&review); err != nil || resp.StatusCode != http.StatusOK {
			return fmt.Errorf("direct review: HTTP %d (%v)", resp.StatusCode, err)
		}
		if review.Response == nil || !review.Response.Allowed {
			return fmt.Errorf("direct review: not allowed: %+v", review.Response)
		}
		return nil
	}
}

// run starts n workers that each call do every createPeriod, with a name of its
// own each time, and record what it returns, until the load stops.
func (l *load) run(n int, do func(name string) error) {
	for c := range n {
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
				l.record(do(fmt.Sprintf("%d-%d", c, i)))
			}
		}()
	}
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
	s := fmt.Sprintf("%d pods admitted, %d failed, in %s (%d creators and %d direct reviewers, one each every %s)", len(r.admitted), len(r.failures), r.took.Round(100*time.Millisecond), creators, reviewers, createPeriod)
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
