// Package bench_test measures secret-relay on the two-cluster test bed, each figure
// against a baseline taken in the same run, so that a noisy, shared 2-core machine
// still gives comparable numbers:
//
//  1. admission latency and throughput, against a no-op kubewebhook webhook;
//  2. pod creation through the API server, against pods the webhook never sees;
//  3. freshness of a local copy after an upstream update, against an upstream watch;
//  4. a cold burst of pods on one never-seen Secret, against the same burst warm;
//     then the orphan sweep's memory and CPU at 5,000 relayed pods, against a fresh
//     process with one pod per copy and one that sweeps once a minute;
//  5. scale: memory and restart with many relayed Secrets, against a fresh process;
//  6. the fleet: copies by the thousand in many namespaces through many stores of
//     one identity, grown in stages: memory, fan-out, restart, warm admission and a
//     burst of distinct Secrets.
//
// It is black-box: it drives the secret-relay binary through its webhook, the API
// servers and /proc, never through the code, so it keeps working while the upstream
// side is rewritten. Run it with `make bench`; it is skipped unless
// SECRET_RELAY_BENCH=1, so `go test ./...` passes over it.
//
// It prints a summary table and writes the full results as JSON to
// bin/bench-results.json, or to BENCH_OUT (relative to the repository root). The
// BENCH_* variables in loadSettings tune the sizes; BENCH_ONLY=admission,burst runs a
// subset. A missed target is reported, not failed: the test fails only when a
// measurement could not be taken.
package bench_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/secret-relay/secret-relay/test/cluster"
)

// The contract's names, spelled out here rather than imported, so that the benchmark
// depends on the user-facing contract only.
const (
	annotationStore   = "secret-relay.io/store"
	annotationSecrets = "secret-relay.io/secrets"
	managedBySelector = "app.kubernetes.io/managed-by=secret-relay"
)

// seedStore is the store every namespace but the scale one uses: the seed's
// remote-k8s-store, reading the upstream default namespace.
const seedStore = "remote-k8s-store"

// seedAnnotation is the seed's pod annotation: pulled-secrets with username from
// user-credentials.
const seedAnnotation = `- name: pulled-secrets
  data:
  - secretKey: username
    remoteRef: {key: user-credentials, property: username}
`

// relayArgs run secret-relay as it ships (info logging), where the test bed's default
// is debug logging.
// --profiling lets the fleet measurement save heap profiles.
var relayArgs = []string{"--log-level=info", "--profiling"}

// secretStoreGVR is the contract's namespaced SecretStore.
var secretStoreGVR = schema.GroupVersionResource{Group: "secret-relay.io", Version: "v1alpha1", Resource: "secretstores"}

// measurement is one of the numbered measurements.
type measurement struct {
	name string
	run  func(b *bench, t *testing.T)
}

// measurements are the numbered measurements in the order they run, by their
// BENCH_ONLY names. Scale runs last: it replaces secret-relay with processes that end
// with it.
var measurements = []measurement{
	{"admission", (*bench).measureAdmission},
	{"pods", (*bench).measurePodCreation},
	{"freshness", (*bench).measureFreshness},
	{"burst", (*bench).measureColdBurst},
	{"sweep", (*bench).measureSweep},
	{"scale", (*bench).measureScale},
	{"fleet", (*bench).measureFleet},
}

// settings are the tunable sizes of one run, read from BENCH_* variables.
type settings struct {
	out  string
	only []string

	admissionWorkers int
	admissionRounds  int
	admissionRound   time.Duration

	pods int

	freshnessUpdates int
	freshnessTimeout time.Duration

	burstPods int

	sweepPods int

	scaleSecrets     int
	scaleRelayed     int
	scaleItemsPerPod int
	scaleSecretBytes int

	// fleetStages are the numbers of copies the fleet grows through.
	fleetStages     []int
	fleetStores     int
	fleetUpstream   int
	fleetBurst      int
	fleetPodWorkers int
	fleetTimeout    time.Duration

	// values are the effective settings by variable name, for the JSON report.
	values map[string]string
}

// loadSettings reads the BENCH_* variables, with the sizes as defaults.
func loadSettings(t *testing.T) settings {
	t.Helper()
	s := settings{values: map[string]string{}}
	s.out = s.str("BENCH_OUT", filepath.Join("bin", "bench-results.json"))
	if only := s.str("BENCH_ONLY", ""); only != "" {
		s.only = strings.Split(only, ",")
	}
	for _, name := range s.only {
		if !slices.ContainsFunc(measurements, func(m measurement) bool { return m.name == name }) {
			t.Fatalf("BENCH_ONLY names an unknown measurement %q", name)
		}
	}
	s.admissionWorkers = s.int(t, "BENCH_ADMISSION_WORKERS", 8)
	s.admissionRounds = s.int(t, "BENCH_ADMISSION_ROUNDS", 6)
	s.admissionRound = s.duration(t, "BENCH_ADMISSION_ROUND", 2*time.Second)
	s.pods = s.int(t, "BENCH_PODS", 200)
	s.freshnessUpdates = s.int(t, "BENCH_FRESHNESS_UPDATES", 50)
	s.freshnessTimeout = s.duration(t, "BENCH_FRESHNESS_TIMEOUT", 5*time.Second)
	s.burstPods = s.int(t, "BENCH_BURST_PODS", 100)
	s.sweepPods = s.int(t, "BENCH_SWEEP_PODS", 5000)
	s.scaleSecrets = s.int(t, "BENCH_SCALE_SECRETS", 5000)
	s.scaleRelayed = s.int(t, "BENCH_SCALE_RELAYED", 1000)
	s.scaleItemsPerPod = s.int(t, "BENCH_SCALE_ITEMS_PER_POD", 64)
	s.scaleSecretBytes = s.int(t, "BENCH_SCALE_SECRET_BYTES", 1024)
	for _, v := range strings.Split(s.str("BENCH_FLEET_STAGES", "1000,5000,10000"), ",") {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n <= 0 || n%fleetCopiesPerNamespace != 0 || len(s.fleetStages) > 0 && n <= s.fleetStages[len(s.fleetStages)-1] {
			t.Fatalf("BENCH_FLEET_STAGES must be growing multiples of %d, got %q", fleetCopiesPerNamespace, os.Getenv("BENCH_FLEET_STAGES"))
		}
		s.fleetStages = append(s.fleetStages, n)
	}
	s.fleetStores = s.int(t, "BENCH_FLEET_STORES", 100)
	s.fleetUpstream = s.int(t, "BENCH_FLEET_UPSTREAM", 50000)
	s.fleetBurst = s.int(t, "BENCH_FLEET_BURST", 600)
	s.fleetPodWorkers = s.int(t, "BENCH_FLEET_POD_WORKERS", 8)
	s.fleetTimeout = s.duration(t, "BENCH_FLEET_TIMEOUT", 2*time.Minute)
	if s.scaleRelayed > s.scaleSecrets {
		t.Fatalf("BENCH_SCALE_RELAYED (%d) must not exceed BENCH_SCALE_SECRETS (%d)", s.scaleRelayed, s.scaleSecrets)
	}
	return s
}

func (s *settings) str(name, def string) string {
	v := os.Getenv(name)
	if v == "" {
		v = def
	}
	s.values[name] = v
	return v
}

func (s *settings) int(t *testing.T, name string, def int) int {
	t.Helper()
	v, err := strconv.Atoi(s.str(name, strconv.Itoa(def)))
	if err != nil || v <= 0 {
		t.Fatalf("%s must be a positive integer, got %q", name, os.Getenv(name))
	}
	return v
}

func (s *settings) duration(t *testing.T, name string, def time.Duration) time.Duration {
	t.Helper()
	v, err := time.ParseDuration(s.str(name, def.String()))
	if err != nil || v <= 0 {
		t.Fatalf("%s must be a positive duration such as 2s, got %q", name, os.Getenv(name))
	}
	return v
}

// enabled says whether BENCH_ONLY selects the measurement.
func (s settings) enabled(name string) bool {
	return len(s.only) == 0 || slices.Contains(s.only, name)
}

// bench is one run: the clusters, the relay binary and the report being filled.
type bench struct {
	cfg    settings
	binary string
	logDir string
	w      *cluster.World
	// up and down are admin clients without client-side throttling, so that the
	// load the benchmark makes is not queued inside it.
	up, down kubernetes.Interface
	report   *report
}

// TestBench runs every measurement on one pair of clusters and one secret-relay, then
// prints the summary and writes the JSON report.
func TestBench(t *testing.T) {
	if os.Getenv("SECRET_RELAY_BENCH") != "1" {
		t.Skip("benchmarks run with SECRET_RELAY_BENCH=1: use make bench")
	}
	cfg := loadSettings(t)
	started := time.Now()
	dir := t.TempDir()
	binary, err := cluster.BuildRelay(dir)
	require.NoError(t, err)

	w := cluster.NewWorld(t, binary, dir, relayArgs...)
	b := &bench{
		cfg: cfg, binary: binary, logDir: dir, w: w,
		up: unthrottled(t, w.Up.Config), down: unthrottled(t, w.Down.Config),
		report: newReport(started, cfg.values),
	}
	b.relaySeedSecret(t)
	t.Logf("test bed ready in %s", time.Since(started).Round(time.Millisecond))

	for _, m := range measurements {
		if !cfg.enabled(m.name) {
			continue
		}
		start := time.Now()
		if !t.Run(m.name, func(t *testing.T) { m.run(b, t) }) {
			b.report.fail(m.name, "not measured: see the test log")
			t.Logf("the end of secret-relay's log:\n%s", b.w.Relay.LogTail())
		}
		t.Logf("%s took %s", m.name, time.Since(start).Round(time.Millisecond))
	}

	b.report.finish(time.Since(started))
	b.report.printTable(os.Stdout)
	out := b.outPath()
	require.NoError(t, b.report.writeJSON(out))
	abs, err := filepath.Abs(out)
	require.NoError(t, err)
	t.Logf("results written to %s", abs)
}

// outPath is where the JSON report goes: go test runs in the package directory, and
// BENCH_OUT is relative to the root.
func (b *bench) outPath() string {
	if filepath.IsAbs(b.cfg.out) {
		return b.cfg.out
	}
	return filepath.Join("..", "..", b.cfg.out)
}

// relaySeedSecret creates the seed store in default and one real seed pod, so that
// pulled-secrets is relayed and every later seed review is warm.
func (b *bench) relaySeedSecret(t *testing.T) {
	t.Helper()
	b.w.SeedStore(t, "default", seedStore)
	b.waitForStoreReady(t, "default", seedStore)
	_, err := b.down.CoreV1().Pods("default").Create(cluster.Context(t), seedPod("seed", "default"), metav1.CreateOptions{})
	require.NoError(t, err, "the seed pod should be admitted")
	_, err = b.down.CoreV1().Secrets("default").Get(cluster.Context(t), "pulled-secrets", metav1.GetOptions{})
	require.NoError(t, err, "the seed pod's Secret should be relayed")
}

// seedPod is a pod in ns that asks for the seed's pulled-secrets.
func seedPod(name, ns string) *corev1.Pod {
	p := cluster.Pod(name, map[string]string{annotationStore: seedStore, annotationSecrets: seedAnnotation})
	p.Namespace = ns
	return p
}

// shorthandPod is a pod in ns that copies the whole upstream Secrets remotes through
// store.
func shorthandPod(t *testing.T, name, ns, store string, remotes ...string) *corev1.Pod {
	t.Helper()
	list, err := jsonString(remotes)
	require.NoError(t, err)
	p := cluster.Pod(name, map[string]string{annotationStore: store, annotationSecrets: list})
	p.Namespace = ns
	return p
}

// unthrottled is an admin clientset on cfg without client-go's default 5 QPS limit.
func unthrottled(t *testing.T, cfg *rest.Config) kubernetes.Interface {
	t.Helper()
	c := rest.CopyConfig(cfg)
	c.QPS, c.Burst = 2000, 4000
	client, err := kubernetes.NewForConfig(c)
	require.NoError(t, err)
	return client
}

// callContext bounds one API call. Measurements outlast cluster.Context's two
// minutes, so long loops take a context per call instead.
func callContext(t *testing.T) (context.Context, context.CancelFunc) {
	return context.WithTimeout(t.Context(), time.Minute)
}

// waitForStoreReady waits until secret-relay has validated a SecretStore: before that,
// an admission through it measures the validation, not the relay.
func (b *bench) waitForStoreReady(t *testing.T, ns, name string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		ctx, cancel := callContext(t)
		u, err := b.w.Dynamic.Resource(secretStoreGVR).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
		cancel()
		if err == nil {
			conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
			for _, c := range conds {
				if m, ok := c.(map[string]any); ok && m["type"] == "Ready" {
					if m["status"] == "True" {
						return
					}
					last = fmt.Sprintf("%v: %v", m["reason"], m["message"])
				}
			}
		} else {
			last = err.Error()
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("SecretStore %s/%s not Ready within 30s (last: %s)", ns, name, last)
}
