package bench_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	"github.com/secret-relay/secret-relay/test/cluster"
)

// Names of measurement 6, the fleet: many namespaces downstream, each with one pod
// that relays copiesPerNamespace Secrets through one of many ClusterSecretStores,
// all of them the same identity upstream, reading one namespace of many Secrets.
const (
	fleetUpstreamNamespace = "fleet"
	// fleetConfigNamespace holds, downstream, the token every fleet store reads.
	fleetConfigNamespace = "fleet-config"
	fleetBurstNamespace  = "fleet-burst"
	// fleetFanout1k is read by every copy of the first fanout1kNamespaces
	// namespaces; fleetFanoutAll by every copy.
	fleetFanout1k            = "fanout-1k"
	fleetFanoutAll           = "fanout-all"
	fleetCopiesPerNamespace  = 10
	fleetFanout1kNamespaces  = 100
	fleetFanoutCopiesPerWave = fleetCopiesPerNamespace * fleetFanout1kNamespaces
)

// Targets of the issue for the fleet.
const (
	fleetBytesPerCopyTarget = 4 << 10
	fleetReadyTarget        = 5 * time.Second
	fleetFanout1kTarget     = 5 * time.Second
	fleetFanoutAllTarget    = 30 * time.Second
	fleetAdmissionTarget    = 1.3
)

// fleetResult is measurement 6: each stage of copies, then warm admission and a
// burst of distinct Secrets at the last one.
type fleetResult struct {
	Namespaces      int          `json:"namespaces"`
	Stores          int          `json:"stores"`
	UpstreamSecrets int          `json:"upstreamSecrets"`
	SecretBytes     int          `json:"secretBytes"`
	Stages          []fleetStage `json:"stages"`
	// BaselineHeapProfile is the fresh process's, against which each stage's
	// profile tells what the copies added.
	BaselineHeapProfile string `json:"baselineHeapProfile,omitempty"`
	// Admission compares a warm review of one fleet pod (10 copies) with the
	// no-op webhook, at the last stage.
	Admission *admissionResult `json:"admission,omitempty"`
	// AdmissionPeakRSSBytes is secret-relay's peak RSS while it answered the warm
	// reviews: the collector's target is higher while reviews come fast.
	AdmissionPeakRSSBytes int64       `json:"admissionPeakRSSBytes,omitempty"`
	Burst                 *fleetBurst `json:"burst,omitempty"`
}

// fleetStage is the fleet at one number of copies.
type fleetStage struct {
	Copies int `json:"copies"`
	// Pods are the pods created to reach this stage, and how their creation went.
	Pods         int     `json:"pods"`
	PodCreate    latency `json:"podCreate"`
	PodsRefused  int     `json:"podsRefused"`
	FirstRefusal string  `json:"firstRefusal,omitempty"`
	// RSSBaselineBytes is a fresh process with the stores and no copy.
	RSSBaselineBytes int64 `json:"rssBaselineBytes"`
	// RSSBytes is settled (see settledRSS); RSSPeakBytes is the process's peak,
	// since the restart that ended the stage before.
	RSSBytes     int64   `json:"rssBytes"`
	RSSPeakBytes int64   `json:"rssPeakBytes"`
	DataBytes    int64   `json:"dataBytes"`
	BytesPerCopy float64 `json:"bytesPerCopy"`
	HeapProfile  string  `json:"heapProfile,omitempty"`

	Fanout1k  fanout `json:"fanout1k"`
	FanoutAll fanout `json:"fanoutAll"`

	ReadySeconds         float64 `json:"readySeconds"`
	RSSPeakRestartBytes  int64   `json:"rssPeakRestartBytes"`
	RSSAfterRestartBytes int64   `json:"rssAfterRestartBytes"`
	// Gets during the restart, until ready and the first admission: of Secrets in
	// the fleet's namespaces downstream, and of Secrets upstream.
	DownstreamGets int `json:"downstreamGets"`
	UpstreamGets   int `json:"upstreamGets"`
}

// fanout is one upstream change and the copies it reached.
type fanout struct {
	Copies  int     `json:"copies"`
	Reached int     `json:"reached"`
	Lag     latency `json:"lag"`
	// WritesPerSecond is the copies reached over the time the last one took.
	WritesPerSecond float64 `json:"writesPerSecond"`
	// APIServerCores is the downstream API server's CPU time over that time, and
	// RelayCores secret-relay's.
	APIServerCores float64 `json:"apiServerCores"`
	RelayCores     float64 `json:"relayCores"`
}

// fleetBurst is many pods created at once, each wanting a Secret never relayed.
type fleetBurst struct {
	Pods        int     `json:"pods"`
	Admitted    int     `json:"admitted"`
	Denied      int     `json:"denied"`
	Errors      int     `json:"errors"`
	FirstDenial string  `json:"firstDenial,omitempty"`
	FirstError  string  `json:"firstError,omitempty"`
	Seconds     float64 `json:"seconds"`
	// APIServerCores is the downstream API server's CPU time over the burst, and
	// RelayCores secret-relay's: which of them was the limit.
	APIServerCores float64 `json:"apiServerCores"`
	RelayCores     float64 `json:"relayCores"`
	// UpstreamGet and DownstreamCreate are how long each API server took to answer
	// secret-relay's reads and writes of the burst's Secrets, from their audit logs.
	UpstreamGet      latency `json:"upstreamGet"`
	DownstreamCreate latency `json:"downstreamCreate"`
}

// measureFleet is measurement 6.
func (b *bench) measureFleet(t *testing.T) {
	cfg := b.cfg
	last := cfg.fleetStages[len(cfg.fleetStages)-1]
	res := &fleetResult{
		Namespaces: last / fleetCopiesPerNamespace, Stores: cfg.fleetStores,
		UpstreamSecrets: cfg.fleetUpstream, SecretBytes: cfg.scaleSecretBytes,
	}
	b.report.Fleet = res
	f := &fleet{bench: b, res: res}
	f.setUp(t)

	seed := newReviewTemplate(t, seedPod("bench-fleet-restart", "default"))
	_, _ = b.restartRelay(t, seed)
	baseline := settledRSS(t, b.w.Relay).RSS
	res.BaselineHeapProfile = f.heapProfile(t, 0)
	created := 0
	for _, copies := range cfg.fleetStages {
		st := fleetStage{Copies: copies, RSSBaselineBytes: baseline}
		f.createPods(t, created/fleetCopiesPerNamespace, copies/fleetCopiesPerNamespace, &st)
		created = copies
		mem := settledRSS(t, b.w.Relay)
		st.RSSBytes, st.RSSPeakBytes = mem.RSS, mem.Peak
		st.DataBytes = f.dataBytes(t, copies)
		st.BytesPerCopy = float64(st.RSSBytes-st.RSSBaselineBytes-st.DataBytes) / float64(copies)
		st.HeapProfile = f.heapProfile(t, copies)

		st.Fanout1k = f.fanout(t, fleetFanout1k, min(fleetFanoutCopiesPerWave, copies))
		st.FanoutAll = f.fanout(t, fleetFanoutAll, copies)
		f.restart(t, seed, &st)
		res.Stages = append(res.Stages, st)
		t.Logf("fleet at %d copies: %.0f B/copy, fan-out 1k p99 %s, all max %s, ready %.2fs",
			copies, st.BytesPerCopy, formatMs(st.Fanout1k.Lag.P99Ms), formatMs(st.FanoutAll.Lag.MaxMs), st.ReadySeconds)
	}

	resetPeakRSS(t, b.w.Relay.PID())
	res.Admission = b.compareAdmission(t, newReviewTemplate(t, f.pod(0)), cfg.admissionRounds)
	mem, err := cluster.ReadProcessMemory(b.w.Relay.PID())
	require.NoError(t, err)
	res.AdmissionPeakRSSBytes = mem.Peak
	res.Burst = f.burst(t, cfg.fleetBurst)
	f.addRows(t)
}

// fleet is the state of measurement 6 while it runs.
type fleet struct {
	*bench
	res *fleetResult
	// payload is the value of every distinct upstream Secret: random, so that
	// nothing compresses it, and one value, so that the run makes 1 KiB once.
	payload []byte
	// fanoutValue is the current value of each fan-out Secret.
	fanoutValue map[string]string
}

func fleetNamespace(i int) string { return fmt.Sprintf("fleet-%04d", i) }
func fleetStore(k int) string     { return fmt.Sprintf("fleet-store-%03d", k) }
func fleetSecret(i int) string    { return fmt.Sprintf("f-%05d", i) }

// setUp creates the upstream Secrets and their reader, the downstream namespaces,
// the token and the stores.
func (f *fleet) setUp(t *testing.T) {
	t.Helper()
	cfg := f.cfg
	f.payload = make([]byte, cfg.scaleSecretBytes)
	_, _ = rand.Read(f.payload)
	start := time.Now()
	f.w.Up.EnsureNamespace(t, fleetUpstreamNamespace)
	f.fanoutValue = map[string]string{fleetFanout1k: "v0", fleetFanoutAll: "v0"}
	parallel(t, cfg.fleetUpstream+2, func(ctx context.Context, i int) error {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: fleetSecret(i)}, Data: map[string][]byte{"payload": f.payload}}
		if i >= cfg.fleetUpstream {
			name := []string{fleetFanout1k, fleetFanoutAll}[i-cfg.fleetUpstream]
			s = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string][]byte{"value": []byte("v0")}}
		}
		_, err := f.up.CoreV1().Secrets(fleetUpstreamNamespace).Create(ctx, s, metav1.CreateOptions{})
		return ignoreExists(err)
	})
	t.Logf("created %d upstream Secrets in %s", cfg.fleetUpstream+2, time.Since(start).Round(time.Millisecond))

	reader := f.w.Up.SeedReader(t, fleetUpstreamNamespace)
	f.w.Down.EnsureNamespace(t, fleetConfigNamespace)
	f.w.Down.CreateSecret(t, fleetConfigNamespace, "token", map[string]string{"token": reader.Token})
	namespaces := f.res.Namespaces
	parallel(t, namespaces+1, func(ctx context.Context, i int) error {
		name := fleetBurstNamespace
		if i < namespaces {
			name = fleetNamespace(i)
		}
		_, err := f.down.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
		return ignoreExists(err)
	})
	// Store k serves the namespaces i with i % stores == k, so that every stage
	// uses every store; the first also serves the burst's namespace.
	ca := base64.StdEncoding.EncodeToString(f.w.Up.CA())
	for k := range f.res.Stores {
		var served []string
		for i := k; i < namespaces; i += f.res.Stores {
			served = append(served, fleetNamespace(i))
		}
		if k == 0 {
			served = append(served, fleetBurstNamespace)
		}
		f.w.Apply(t, fmt.Sprintf(`
apiVersion: secret-relay.io/v1alpha1
kind: ClusterSecretStore
metadata: {name: %s}
spec:
  conditions: [{namespaces: [%s]}]
  provider:
    kubernetes:
      server: {url: %q, caBundle: %s}
      remoteNamespace: %s
      auth: {token: {bearerToken: {name: token, key: token, namespace: %s}}}
`, fleetStore(k), strings.Join(served, ", "), f.w.Up.URL(), ca, fleetUpstreamNamespace, fleetConfigNamespace))
	}
	t.Logf("fleet: %d namespaces, %d ClusterSecretStores of one identity", namespaces, f.res.Stores)
}

// pod is namespace i's pod: copies copy-0 to copy-9, each with its own upstream
// Secret's payload and the fan-out values it reads.
func (f *fleet) pod(i int) *corev1.Pod {
	var b strings.Builder
	for j := range fleetCopiesPerNamespace {
		fmt.Fprintf(&b, "- name: copy-%d\n  data:\n", j)
		fmt.Fprintf(&b, "  - {secretKey: payload, remoteRef: {key: %s, property: payload}}\n", fleetSecret(i*fleetCopiesPerNamespace+j))
		fmt.Fprintf(&b, "  - {secretKey: %s, remoteRef: {key: %s, property: value}}\n", fleetFanoutAll, fleetFanoutAll)
		if i < fleetFanout1kNamespaces {
			fmt.Fprintf(&b, "  - {secretKey: %s, remoteRef: {key: %s, property: value}}\n", fleetFanout1k, fleetFanout1k)
		}
	}
	p := cluster.Pod("fleet", map[string]string{
		annotationStore:   "ClusterSecretStore/" + fleetStore(i%f.res.Stores),
		annotationSecrets: b.String(),
	})
	p.Namespace = fleetNamespace(i)
	return p
}

// createPods creates the pods of namespaces from to to-1, fleetPodWorkers at a
// time, as a few controllers would.
func (f *fleet) createPods(t *testing.T, from, to int, st *fleetStage) {
	t.Helper()
	var (
		mu      sync.Mutex
		creates []time.Duration
	)
	work := make(chan int)
	var wg sync.WaitGroup
	for range f.cfg.fleetPodWorkers {
		wg.Go(func() {
			for i := range work {
				ctx, cancel := callContext(t)
				begin := time.Now()
				_, err := f.down.CoreV1().Pods(fleetNamespace(i)).Create(ctx, f.pod(i), metav1.CreateOptions{})
				took := time.Since(begin)
				cancel()
				mu.Lock()
				st.Pods++
				if err != nil {
					st.PodsRefused++
					if st.FirstRefusal == "" {
						st.FirstRefusal = err.Error()
					}
				} else {
					creates = append(creates, took)
				}
				mu.Unlock()
			}
		})
	}
	start := time.Now()
	for i := from; i < to; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	st.PodCreate = summarize(creates)
	t.Logf("created %d fleet pods in %s, %d refused (first: %s)", st.Pods, time.Since(start).Round(time.Millisecond), st.PodsRefused, st.FirstRefusal)
}

// dataBytes is what the copies of a stage hold: the sum of their values.
func (f *fleet) dataBytes(t *testing.T, copies int) int64 {
	t.Helper()
	var n int64
	for i := range copies / fleetCopiesPerNamespace {
		size := len(f.payload) + len(f.fanoutValue[fleetFanoutAll])
		if i < fleetFanout1kNamespaces {
			size += len(f.fanoutValue[fleetFanout1k])
		}
		n += int64(size * fleetCopiesPerNamespace)
	}
	return n
}

// heapProfile saves secret-relay's heap profile (after a collection) beside the
// results, and returns its path.
func (f *fleet) heapProfile(t *testing.T, copies int) string {
	t.Helper()
	resp, err := http.Get(f.w.Relay.ProbeURL + "/debug/pprof/heap?gc=1")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "secret-relay serves profiles with --profiling")
	path := filepath.Join(filepath.Dir(f.outPath()), fmt.Sprintf("fleet-heap-%d.pb.gz", copies))
	// The results are written at the end: in a fresh clone, their directory does not
	// exist yet.
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
	out, err := os.Create(path)
	require.NoError(t, err)
	defer out.Close()
	_, err = io.Copy(out, resp.Body)
	require.NoError(t, err)
	return path
}

// fanout updates upstream Secret name and waits until the copies that read it hold
// the new value, watching every managed copy downstream.
func (f *fleet) fanout(t *testing.T, name string, copies int) fanout {
	t.Helper()
	ctx, cancel := callContext(t)
	list, err := f.down.CoreV1().Secrets("").List(ctx, metav1.ListOptions{LabelSelector: managedBySelector, Limit: 1})
	cancel()
	require.NoError(t, err)
	value := fmt.Sprintf("v%d", time.Now().UnixNano())
	rw, err := watchtools.NewRetryWatcherWithContext(t.Context(), list.ResourceVersion, &cache.ListWatch{
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			opts.LabelSelector = managedBySelector
			return f.down.CoreV1().Secrets("").Watch(ctx, opts)
		},
	})
	require.NoError(t, err)
	defer rw.Stop()

	cpu := startCPU(t, f.w.Down.APIServerPID(t), f.w.Relay.PID())
	ctx, cancel = callContext(t)
	_, err = f.up.CoreV1().Secrets(fleetUpstreamNamespace).Update(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string][]byte{"value": []byte(value)},
	}, metav1.UpdateOptions{})
	cancel()
	require.NoError(t, err)
	updated := time.Now()
	f.fanoutValue[name] = value

	reached := map[string]time.Duration{}
	deadline := time.NewTimer(f.cfg.fleetTimeout)
	defer deadline.Stop()
wait:
	for len(reached) < copies {
		select {
		case ev, ok := <-rw.ResultChan():
			if !ok {
				break wait
			}
			s, isSecret := ev.Object.(*corev1.Secret)
			if !isSecret || ev.Type != watch.Modified && ev.Type != watch.Added || string(s.Data[name]) != value {
				continue
			}
			if key := s.Namespace + "/" + s.Name; reached[key] == 0 {
				reached[key] = time.Since(updated)
			}
		case <-deadline.C:
			break wait
		}
	}
	lags := make([]time.Duration, 0, len(reached))
	for _, d := range reached {
		lags = append(lags, d)
	}
	slices.Sort(lags)
	out := fanout{Copies: copies, Reached: len(reached), Lag: summarize(lags)}
	if n := len(lags); n > 0 {
		out.WritesPerSecond = float64(n) / lags[n-1].Seconds()
		out.APIServerCores, out.RelayCores = cpu.coresOver(t, lags[n-1])
	}
	if out.Reached < copies {
		t.Logf("fan-out of %s reached %d of %d copies within %s", name, out.Reached, copies, f.cfg.fleetTimeout)
	}
	return out
}

// restart restarts secret-relay and records its ready time, its memory, and the
// Secret reads it made until ready and one fleet pod admitted.
func (f *fleet) restart(t *testing.T, seed *reviewTemplate, st *fleetStage) {
	t.Helper()
	downMark, upMark := f.w.Down.AuditOffset(t), f.w.Up.AuditOffset(t)
	ready, _ := f.restartRelay(t, seed)
	st.ReadySeconds = ready.Seconds()
	relay := newWebhookTarget(t, "secret-relay", f.w.Relay.WebhookURL, f.w.Relay.Cert.CA.CertPEM(), 1)
	relay.untilAdmitted(t, newReviewTemplate(t, f.pod(0)), 30*time.Second)
	for _, ev := range f.w.Down.AuditLogSince(t, downMark) {
		if ev.Verb == "get" && ev.Stage == "ResponseComplete" && ev.ObjectRef.Resource == "secrets" &&
			strings.HasPrefix(ev.ObjectRef.Namespace, "fleet-") && ev.ObjectRef.Namespace != fleetConfigNamespace && // the stores' token, not a copy
			strings.HasPrefix(ev.UserAgent, "secret-relay") {
			st.DownstreamGets++
		}
	}
	for _, ev := range f.w.Up.AuditLogSince(t, upMark) {
		if ev.Verb == "get" && ev.Stage == "ResponseComplete" && ev.ObjectRef.Resource == "secrets" && ev.ObjectRef.Namespace == fleetUpstreamNamespace {
			st.UpstreamGets++
		}
	}
	// The peak is of the whole life of the new process: its start and first lists.
	time.Sleep(5 * time.Second)
	mem, err := cluster.ReadProcessMemory(f.w.Relay.PID())
	require.NoError(t, err)
	st.RSSPeakRestartBytes, st.RSSAfterRestartBytes = mem.Peak, mem.RSS
}

// burst creates n pods at once in the burst namespace, each wanting its own upstream
// Secret, none of them relayed before.
func (f *fleet) burst(t *testing.T, n int) *fleetBurst {
	t.Helper()
	out := &fleetBurst{Pods: n}
	first := f.res.Namespaces * fleetCopiesPerNamespace
	require.LessOrEqual(t, first+n, f.cfg.fleetUpstream, "BENCH_FLEET_UPSTREAM must leave Secrets for the burst")
	var (
		mu       sync.Mutex
		wg       sync.WaitGroup
		admitted atomic.Int32
	)
	release := make(chan struct{})
	for i := range n {
		pod := shorthandPod(t, fmt.Sprintf("burst-%04d", i), fleetBurstNamespace, "ClusterSecretStore/"+fleetStore(0), fleetSecret(first+i))
		wg.Go(func() {
			<-release
			ctx, cancel := callContext(t)
			defer cancel()
			_, err := f.down.CoreV1().Pods(fleetBurstNamespace).Create(ctx, pod, metav1.CreateOptions{})
			if err == nil {
				admitted.Add(1)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			switch {
			case strings.Contains(err.Error(), "denied the request: secret-relay: "):
				out.Denied++
				if out.FirstDenial == "" {
					out.FirstDenial = err.Error()
				}
			default:
				out.Errors++
				if out.FirstError == "" {
					out.FirstError = err.Error()
				}
			}
		})
	}
	downMark, upMark := f.w.Down.AuditOffset(t), f.w.Up.AuditOffset(t)
	cpu := startCPU(t, f.w.Down.APIServerPID(t), f.w.Relay.PID())
	start := time.Now()
	close(release)
	wg.Wait()
	out.Seconds = time.Since(start).Seconds()
	out.APIServerCores, out.RelayCores = cpu.cores(t)
	took := func(events []cluster.AuditEvent, verb, ns string) latency {
		var d []time.Duration
		for _, ev := range events {
			if ev.Verb == verb && ev.Stage == "ResponseComplete" && ev.ObjectRef.Resource == "secrets" && ev.ObjectRef.Namespace == ns &&
				strings.HasPrefix(ev.UserAgent, "secret-relay") {
				d = append(d, ev.Took())
			}
		}
		return summarize(d)
	}
	out.UpstreamGet = took(f.w.Up.AuditLogSince(t, upMark), "get", fleetUpstreamNamespace)
	out.DownstreamCreate = took(f.w.Down.AuditLogSince(t, downMark), "create", fleetBurstNamespace)
	out.Admitted = int(admitted.Load())
	return out
}

// addRows adds the fleet's rows: the last stage against its targets, the others for
// the curve.
func (f *fleet) addRows(t *testing.T) {
	t.Helper()
	res := f.res
	what := func(st fleetStage) string {
		return fmt.Sprintf("%d copies, %d ns, %d stores, %d upstream", st.Copies, min(res.Namespaces, st.Copies/fleetCopiesPerNamespace), res.Stores, res.UpstreamSecrets)
	}
	for i, st := range res.Stages {
		final := i == len(res.Stages)-1
		met := func(ok bool) string {
			if !final {
				return metNone
			}
			return metIf(ok)
		}
		refused := ""
		if st.PodsRefused > 0 {
			refused = fmt.Sprintf(" (%d of %d pods refused)", st.PodsRefused, st.Pods)
		}
		f.report.add(
			row{
				Measurement: "fleet memory per copy beyond its data, " + what(st),
				Relay: fmt.Sprintf("%s (%s → %s settled, peak %s)%s", formatBytes(int64(st.BytesPerCopy)),
					formatBytes(st.RSSBaselineBytes), formatBytes(st.RSSBytes), formatBytes(st.RSSPeakBytes), refused),
				Baseline: formatBytes(st.DataBytes) + " data; fresh process",
				Target:   "≤ " + formatBytes(fleetBytesPerCopyTarget),
				Met:      met(st.PodsRefused == 0 && st.BytesPerCopy <= fleetBytesPerCopyTarget),
			},
			row{
				Measurement: "fleet ready after restart, " + what(st),
				Relay:       fmt.Sprintf("%s (peak RSS %s; GETs: %d down, %d up)", formatDuration(seconds(st.ReadySeconds)), formatBytes(st.RSSPeakRestartBytes), st.DownstreamGets, st.UpstreamGets),
				Baseline:    fmt.Sprintf("%d copies", st.Copies),
				Target:      fmt.Sprintf("< %s, no GET per copy", formatDuration(fleetReadyTarget)),
				Met:         met(seconds(st.ReadySeconds) < fleetReadyTarget && st.DownstreamGets+st.UpstreamGets < st.Copies/100),
			},
			row{
				Measurement: fmt.Sprintf("fleet fan-out to %d copies, p99", st.Fanout1k.Copies),
				Relay:       fmt.Sprintf("%s (%d/%d, %.0f writes/s)", formatMs(st.Fanout1k.Lag.P99Ms), st.Fanout1k.Reached, st.Fanout1k.Copies, st.Fanout1k.WritesPerSecond),
				Baseline:    "upstream Update returned",
				Target:      "≤ " + formatDuration(fleetFanout1kTarget),
				Met:         met(st.Fanout1k.Reached == st.Fanout1k.Copies && fromMs(st.Fanout1k.Lag.P99Ms) <= fleetFanout1kTarget),
			},
			row{
				Measurement: fmt.Sprintf("fleet fan-out to all %d copies, last", st.FanoutAll.Copies),
				Relay: fmt.Sprintf("%s (%d/%d, %.0f writes/s; cores: API server %.2f, secret-relay %.2f)", formatMs(st.FanoutAll.Lag.MaxMs), st.FanoutAll.Reached, st.FanoutAll.Copies,
					st.FanoutAll.WritesPerSecond, st.FanoutAll.APIServerCores, st.FanoutAll.RelayCores),
				Baseline: "upstream Update returned",
				Target:   "≤ " + formatDuration(fleetFanoutAllTarget),
				Met:      met(st.FanoutAll.Reached == st.FanoutAll.Copies && fromMs(st.FanoutAll.Lag.MaxMs) <= fleetFanoutAllTarget),
			},
		)
	}
	if a := res.Admission; a != nil {
		f.report.add(row{
			Measurement: fmt.Sprintf("fleet warm admission p99 (%d workers, 10 copies, %d copies in all)", a.Workers, res.Stages[len(res.Stages)-1].Copies),
			Relay:       formatMs(a.Relay.Latency.P99Ms) + failures(a.Relay.Failures) + fmt.Sprintf(" (peak RSS %s)", formatBytes(res.AdmissionPeakRSSBytes)),
			Baseline:    formatMs(a.Baseline.Latency.P99Ms) + " no-op",
			Target:      fmt.Sprintf("%s (≤ %.1f×)", formatRatio(a.P99Ratio), fleetAdmissionTarget),
			Met:         metIf(a.Relay.Failures == 0 && a.P99Ratio <= fleetAdmissionTarget),
		})
	}
	if bu := res.Burst; bu != nil {
		f.report.add(row{
			Measurement: fmt.Sprintf("fleet burst: %d pods at once, each a new Secret", bu.Pods),
			Relay: fmt.Sprintf("%d failed (%d denied, %d errors) in %s; cores: API server %.2f, secret-relay %.2f; upstream GET p99 %s, downstream create p99 %s",
				bu.Denied+bu.Errors, bu.Denied, bu.Errors, formatDuration(seconds(bu.Seconds)), bu.APIServerCores, bu.RelayCores,
				formatMs(bu.UpstreamGet.P99Ms), formatMs(bu.DownstreamCreate.P99Ms)),
			Baseline: fmt.Sprintf("%d pods", bu.Pods),
			Target:   "0 failed",
			Met:      metIf(bu.Admitted == bu.Pods),
		})
		t.Logf("burst: upstream GETs %d, p50 %s, max %s; downstream creates %d, p50 %s, max %s",
			bu.UpstreamGet.N, formatMs(bu.UpstreamGet.P50Ms), formatMs(bu.UpstreamGet.MaxMs),
			bu.DownstreamCreate.N, formatMs(bu.DownstreamCreate.P50Ms), formatMs(bu.DownstreamCreate.MaxMs))
		if bu.FirstDenial != "" {
			t.Logf("first burst denial: %s", bu.FirstDenial)
		}
		if bu.FirstError != "" {
			t.Logf("first burst error: %s", bu.FirstError)
		}
	}
}

// cpuMark is the CPU time of two processes, the downstream API server and
// secret-relay, at a moment.
type cpuMark struct {
	pids      [2]int
	used      [2]time.Duration
	startedAt time.Time
}

func startCPU(t *testing.T, apiServer, relay int) cpuMark {
	t.Helper()
	m := cpuMark{pids: [2]int{apiServer, relay}, startedAt: time.Now()}
	for i, pid := range m.pids {
		var err error
		m.used[i], err = cluster.ReadProcessCPU(pid)
		require.NoError(t, err)
	}
	return m
}

// cores is the CPU each process used since the mark, in cores: API server, relay.
func (m cpuMark) cores(t *testing.T) (apiServer, relay float64) {
	t.Helper()
	return m.coresOver(t, time.Since(m.startedAt))
}

// coresOver is cores over a given span rather than the time since the mark.
func (m cpuMark) coresOver(t *testing.T, span time.Duration) (apiServer, relay float64) {
	t.Helper()
	var out [2]float64
	for i, pid := range m.pids {
		used, err := cluster.ReadProcessCPU(pid)
		require.NoError(t, err)
		out[i] = (used - m.used[i]).Seconds() / span.Seconds()
	}
	return out[0], out[1]
}

// ignoreExists treats an object that already exists as created.
func ignoreExists(err error) error {
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

func failures(n int) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf(" (%d failed)", n)
}

// parallel runs fn for 0..n-1 on scaleCreateWorkers goroutines, each call with a
// context of its own, and fails the test on the first error.
func parallel(t *testing.T, n int, fn func(ctx context.Context, i int) error) {
	t.Helper()
	work := make(chan int)
	errs := make(chan error, scaleCreateWorkers)
	var wg sync.WaitGroup
	for range scaleCreateWorkers {
		wg.Go(func() {
			for i := range work {
				ctx, cancel := callContext(t)
				err := fn(ctx, i)
				cancel()
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	go func() {
		defer close(work)
		for i := range n {
			select {
			case work <- i:
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
}

// resetPeakRSS resets the process's peak RSS (VmHWM) to its RSS now, so that the
// next reading is the peak of what follows.
func resetPeakRSS(t *testing.T, pid int) {
	t.Helper()
	require.NoError(t, os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0o600))
}
