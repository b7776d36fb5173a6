package bench_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	kwhhttp "github.com/slok/kubewebhook/v2/pkg/http"
	kwhmodel "github.com/slok/kubewebhook/v2/pkg/model"
	kwhmutating "github.com/slok/kubewebhook/v2/pkg/webhook/mutating"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/secret-relay/secret-relay/test/cluster"
)

// Targets of the issue for warm admission.
const (
	admissionP99Target        = 1.5  // relay p99 at most this many times the baseline's
	admissionThroughputTarget = 2000 // admissions per second at least
)

// admissionResult is measurement 1: the same warm AdmissionReview sent to
// secret-relay and to a no-op kubewebhook webhook, in alternating rounds at fixed
// concurrency over HTTPS keep-alive.
type admissionResult struct {
	Workers          int                  `json:"workers"`
	Rounds           int                  `json:"rounds"`
	RoundSeconds     float64              `json:"roundSeconds"`
	Relay            admissionLoad        `json:"secretRelay"`
	Baseline         admissionLoad        `json:"baseline"`
	P99Ratio         float64              `json:"p99Ratio"`
	RoundThroughputs map[string][]float64 `json:"roundThroughputs"`
}

// admissionLoad is what one webhook did across all its rounds.
type admissionLoad struct {
	Latency      latency `json:"latency"`
	PerSecond    float64 `json:"perSecond"`
	Failures     int     `json:"failures"`
	FirstFailure string  `json:"firstFailure,omitempty"`
}

// measureAdmission is measurement 1. Both webhooks run in processes of their own and
// get the same client, the same review and the same share of the rounds; only
// requests answered with an admission count.
func (b *bench) measureAdmission(t *testing.T) {
	cfg := b.cfg
	// The seed pod: its pulled-secrets is relayed and current, so every review is warm
	// and, with dryRun false, writes nothing.
	result := b.compareAdmission(t, newReviewTemplate(t, seedPod("bench-admission", "default")), cfg.admissionRounds)
	b.report.Admission = result

	relay, base := result.Relay, result.Baseline
	failed := ""
	if relay.Failures > 0 {
		failed = fmt.Sprintf(" (%d failed)", relay.Failures)
		t.Logf("secret-relay failed %d reviews, first: %s", relay.Failures, relay.FirstFailure)
	}
	what := fmt.Sprintf("%d workers", cfg.admissionWorkers)
	b.report.add(
		row{
			Measurement: "warm admission p50 (" + what + ")",
			Relay:       formatMs(relay.Latency.P50Ms) + failed,
			Baseline:    formatMs(base.Latency.P50Ms),
			Target:      formatRatio(ratio(relay.Latency.P50Ms, base.Latency.P50Ms)),
			Met:         metNone,
		},
		row{
			Measurement: "warm admission p99 (" + what + ")",
			Relay:       formatMs(relay.Latency.P99Ms) + failed,
			Baseline:    formatMs(base.Latency.P99Ms),
			Target:      fmt.Sprintf("%s (≤ %.1f×)", formatRatio(result.P99Ratio), admissionP99Target),
			Met:         metIf(relay.Failures == 0 && result.P99Ratio <= admissionP99Target),
		},
		row{
			Measurement: "warm admission throughput (" + what + ")",
			Relay:       fmt.Sprintf("%.0f req/s", relay.PerSecond) + failed,
			Baseline:    fmt.Sprintf("%.0f req/s", base.PerSecond),
			Target:      fmt.Sprintf("%s (≥ %d req/s)", formatRatio(ratio(relay.PerSecond, base.PerSecond)), admissionThroughputTarget),
			Met:         metIf(relay.Failures == 0 && relay.PerSecond >= admissionThroughputTarget),
		},
	)
}

// compareAdmission sends review, warm, to secret-relay and to a no-op kubewebhook
// webhook in rounds that alternate which goes first.
func (b *bench) compareAdmission(t *testing.T, review *reviewTemplate, rounds int) *admissionResult {
	t.Helper()
	cfg := b.cfg
	noopURL, noopCA := startNoopWebhook(t)
	targets := []*webhookTarget{
		newWebhookTarget(t, "baseline", noopURL, noopCA, cfg.admissionWorkers),
		newWebhookTarget(t, "secret-relay", b.w.Relay.WebhookURL, b.w.Relay.Cert.CA.CertPEM(), cfg.admissionWorkers),
	}
	// Open the connections and warm both servers; these figures are dropped.
	for _, tg := range targets {
		res := tg.load(review, cfg.admissionWorkers, time.Second)
		require.Zero(t, res.failures, "warm-up of %s: %s", tg.name, res.firstFailure)
	}

	totals := map[string]*loadResult{}
	perRound := map[string][]float64{}
	for round := range rounds {
		// Alternate which goes first, so that neither always follows the other's load.
		order := []*webhookTarget{targets[0], targets[1]}
		if round%2 == 1 {
			order[0], order[1] = order[1], order[0]
		}
		for _, tg := range order {
			res := tg.load(review, cfg.admissionWorkers, cfg.admissionRound)
			perRound[tg.name] = append(perRound[tg.name], float64(len(res.latencies))/res.elapsed.Seconds())
			if totals[tg.name] == nil {
				totals[tg.name] = &loadResult{}
			}
			totals[tg.name].merge(res)
		}
	}

	result := &admissionResult{
		Workers:          cfg.admissionWorkers,
		Rounds:           rounds,
		RoundSeconds:     cfg.admissionRound.Seconds(),
		Relay:            totals["secret-relay"].summary(),
		Baseline:         totals["baseline"].summary(),
		RoundThroughputs: perRound,
	}
	result.P99Ratio = ratio(result.Relay.Latency.P99Ms, result.Baseline.Latency.P99Ms)
	return result
}

// noopWebhookEnv, set to a directory holding tls.crt and tls.key, turns the test
// binary into the no-op webhook (see TestMain).
const noopWebhookEnv = "SECRET_RELAY_BENCH_NOOP_WEBHOOK"

// TestMain lets the test binary double as the no-op webhook: started again with
// noopWebhookEnv set, it serves until it is signalled. The baseline so runs in a
// process of its own, as secret-relay does, and does not share a garbage collector
// or a scheduler with the load generator.
func TestMain(m *testing.M) {
	if dir := os.Getenv(noopWebhookEnv); dir != "" {
		if err := serveNoopWebhook(dir); err != nil {
			fmt.Fprintln(os.Stderr, "no-op webhook:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// startNoopWebhook runs the no-op webhook in a child process, with a serving
// certificate of its own, and returns its URL and the CA to trust.
func startNoopWebhook(t *testing.T) (string, []byte) {
	t.Helper()
	cert := cluster.NewServingCert(t)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), noopWebhookEnv+"="+cert.Dir)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	// The child prints its address once it listens.
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			addr <- strings.TrimPrefix(sc.Text(), "listening on ")
		}
		close(addr)
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case a, ok := <-addr:
		require.True(t, ok, "the no-op webhook exited before it listened")
		return "https://" + a + "/mutate-pods", cert.CA.CertPEM()
	case <-time.After(30 * time.Second):
		t.Fatal("the no-op webhook did not listen within 30s")
		return "", nil
	}
}

// serveNoopWebhook serves a kubewebhook mutating webhook that admits every pod
// unchanged, with secret-relay's TLS setup (TLS 1.2 or later, HTTP/1.1 only) and the
// certificate in dir, on a free loopback port that it prints; until SIGTERM.
func serveNoopWebhook(dir string) error {
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
	if err != nil {
		return fmt.Errorf("could not load the serving certificate: %w", err)
	}
	wh, err := kwhmutating.NewWebhook(kwhmutating.WebhookConfig{
		ID:  "noop",
		Obj: &corev1.Pod{},
		Mutator: kwhmutating.MutatorFunc(func(_ context.Context, _ *kwhmodel.AdmissionReview, obj metav1.Object) (*kwhmutating.MutatorResult, error) {
			return &kwhmutating.MutatorResult{MutatedObject: obj}, nil
		}),
	})
	if err != nil {
		return err
	}
	handler, err := kwhhttp.HandlerFor(kwhhttp.HandlerConfig{Webhook: wh})
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("POST /mutate-pods", handler)
	srv := &http.Server{
		Handler: mux,
		TLSConfig: &tls.Config{
			MinVersion:   tls.VersionTLS12,
			NextProtos:   []string{"http/1.1"},
			Certificates: []tls.Certificate{pair},
		},
		TLSNextProto:      map[string]func(*http.Server, *tls.Conn, http.Handler){}, // no HTTP/2
		ReadHeaderTimeout: 5 * time.Second,
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	fmt.Println("listening on", ln.Addr().String())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(shutdownCtx)
}

// reviewTemplate is one pod CREATE AdmissionReview, encoded once; each request gets
// its own UID, as the API server's would.
type reviewTemplate struct {
	before, after []byte
	seq           atomic.Int64
}

// uidPlaceholder marks where the UID goes in the encoded review.
const uidPlaceholder = "00000000-0000-0000-0000-uidplaceholder"

func newReviewTemplate(t *testing.T, pod *corev1.Pod) *reviewTemplate {
	t.Helper()
	data := cluster.Review(t, uidPlaceholder, pod.Namespace, pod)
	before, after, ok := bytes.Cut(data, []byte(uidPlaceholder))
	require.True(t, ok)
	return &reviewTemplate{before: before, after: after}
}

// next returns a request body with a fresh UID, and the UID.
func (r *reviewTemplate) next() ([]byte, string) {
	uid := fmt.Sprintf("bench-%08d-0000-0000-0000-000000000000", r.seq.Add(1))
	body := make([]byte, 0, len(r.before)+len(uid)+len(r.after))
	body = append(append(append(body, r.before...), uid...), r.after...)
	return body, uid
}

// webhookTarget is one webhook under load, with its own keep-alive client.
type webhookTarget struct {
	name   string
	url    string
	client *http.Client
}

func newWebhookTarget(t *testing.T, name, url string, caPEM []byte, workers int) *webhookTarget {
	t.Helper()
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(caPEM))
	transport := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		MaxIdleConns:        workers,
		MaxIdleConnsPerHost: workers,
		MaxConnsPerHost:     workers,
		IdleConnTimeout:     time.Minute,
	}
	t.Cleanup(transport.CloseIdleConnections)
	return &webhookTarget{name: name, url: url, client: &http.Client{Timeout: 10 * time.Second, Transport: transport}}
}

// loadResult is what one or more rounds of load measured.
type loadResult struct {
	latencies    []time.Duration
	failures     int
	firstFailure string
	elapsed      time.Duration
}

func (r *loadResult) merge(o loadResult) {
	r.latencies = append(r.latencies, o.latencies...)
	if r.firstFailure == "" {
		r.firstFailure = o.firstFailure
	}
	r.failures += o.failures
	r.elapsed += o.elapsed
}

func (r *loadResult) summary() admissionLoad {
	return admissionLoad{
		Latency:      summarize(r.latencies),
		PerSecond:    float64(len(r.latencies)) / r.elapsed.Seconds(),
		Failures:     r.failures,
		FirstFailure: r.firstFailure,
	}
}

// load sends reviews from workers goroutines, each waiting for its answer before the
// next, for about d. Only allowed answers to the right UID count as latencies.
func (tg *webhookTarget) load(review *reviewTemplate, workers int, d time.Duration) loadResult {
	var (
		mu  sync.Mutex
		all loadResult
		wg  sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(d)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine loadResult
			for time.Now().Before(deadline) {
				body, uid := review.next()
				sent := time.Now()
				err := tg.review(body, uid)
				took := time.Since(sent)
				if err != nil {
					mine.failures++
					if mine.firstFailure == "" {
						mine.firstFailure = err.Error()
					}
					continue
				}
				mine.latencies = append(mine.latencies, took)
			}
			mu.Lock()
			defer mu.Unlock()
			all.merge(mine)
		}()
	}
	wg.Wait()
	all.elapsed = time.Since(start)
	return all
}

// review posts one AdmissionReview and checks that the pod was admitted.
func (tg *webhookTarget) review(body []byte, uid string) error {
	resp, err := tg.client.Post(tg.url, "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered HTTP %d: %.200s", tg.name, resp.StatusCode, data)
	}
	var answer struct {
		Response struct {
			UID     string `json:"uid"`
			Allowed bool   `json:"allowed"`
			Status  struct {
				Message string `json:"message"`
			} `json:"status"`
		} `json:"response"`
	}
	if err := json.Unmarshal(data, &answer); err != nil {
		return fmt.Errorf("%s answered something that is not an AdmissionReview: %w", tg.name, err)
	}
	switch {
	case answer.Response.UID != uid:
		return fmt.Errorf("%s answered UID %q to review %q", tg.name, answer.Response.UID, uid)
	case !answer.Response.Allowed:
		return fmt.Errorf("%s denied the pod: %s", tg.name, answer.Response.Status.Message)
	}
	return nil
}

// untilAdmitted sends review to tg until it is admitted, for at most limit, and
// returns how long that took.
func (tg *webhookTarget) untilAdmitted(t *testing.T, review *reviewTemplate, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		body, uid := review.next()
		err := tg.review(body, uid)
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			t.Fatalf("%s did not admit a warm review within %s: %v", tg.name, limit, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
