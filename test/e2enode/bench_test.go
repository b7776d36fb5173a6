package e2enode_test

import (
	"context"
	"encoding/json"
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
	"k8s.io/utils/ptr"

	"github.com/secret-relay/secret-relay/test/node"
)

// TestBenchNode is make bench's measurement on the real node: pod create → its
// container running and having read its Secret, from the create call to the
// container's own first log line of the mounted file, for three ways the Secret
// comes to be:
//   - relayed: the pod's annotation names a Secret that does not exist yet, which
//     secret-relay writes at admission;
//   - exists (the baseline): the same pod whose Secret was created before it;
//   - later: the Secret is created 1 s after the pod, as when a pod starts before
//     External Secrets Operator's sync has written it (ESO#2088): kubelet holds the
//     container in CreateContainerConfigError until a retry finds it.
//
// The three are created in turn, in the same run. It runs with SECRET_RELAY_BENCH=1
// and writes BENCH_NODE_OUT (default bin/bench-node.json).
func TestBenchNode(t *testing.T) {
	if os.Getenv("SECRET_RELAY_BENCH") != "1" {
		t.Skip("runs with make bench (SECRET_RELAY_BENCH=1)")
	}
	pods := 50
	if v := os.Getenv("BENCH_NODE_PODS"); v != "" {
		var err error
		pods, err = strconv.Atoi(v)
		require.NoError(t, err)
	}
	w := newWorld(t, node.Options{})
	w.importRelay(t, relayRepository+":"+relayTag)
	w.helm(t, "install", "secret-relay", filepath.Join(w.root, "manifests", "charts", "secret-relay"),
		"--namespace", relayNamespace, "--create-namespace", "--set", "certificates.certManager.enabled=false",
		"--set", "image.repository="+relayRepository, "--set", "image.tag="+relayTag, "--set", "image.pullPolicy=Never",
		"--wait", "--timeout", "3m")
	const ns = "bench"
	w.seedStore(t, ns)

	// One of each first, so that none pays for a cold start.
	for _, src := range []secretSource{relayed, exists} {
		w.podReadsSecret(t, ns, "warm-"+string(src), src)
	}
	took := map[secretSource][]time.Duration{}
	for i := range pods {
		for _, src := range []secretSource{exists, relayed, later} {
			took[src] = append(took[src], w.podReadsSecret(t, ns, fmt.Sprintf("%s-%02d", src, i), src))
		}
	}
	r := nodeBench{
		Pods: pods, Relayed: summarizeDurations(took[relayed]), Baseline: summarizeDurations(took[exists]),
		SecretLater: summarizeDurations(took[later]),
	}
	t.Logf("pod create → container running with its Secret, %d pods each:\n"+
		"  | figure | secret-relay | baseline (Secret exists) | added | Secret 1 s after the pod (ESO) |\n"+
		"  | p50 | %.0f ms | %.0f ms | %+.0f ms | %.0f ms |\n  | p99 | %.0f ms | %.0f ms | %+.0f ms | %.0f ms |",
		pods, r.Relayed.P50Ms, r.Baseline.P50Ms, r.Relayed.P50Ms-r.Baseline.P50Ms, r.SecretLater.P50Ms,
		r.Relayed.P99Ms, r.Baseline.P99Ms, r.Relayed.P99Ms-r.Baseline.P99Ms, r.SecretLater.P99Ms)
	out := os.Getenv("BENCH_NODE_OUT")
	if out == "" {
		out = filepath.Join(w.root, "bin", "bench-node.json")
	}
	data, err := json.MarshalIndent(r, "", "  ")
	require.NoError(t, err)
	require.NoError(t, os.MkdirAll(filepath.Dir(out), 0o755))
	require.NoError(t, os.WriteFile(out, data, 0o644))
	t.Logf("wrote %s", out)
}

type nodeBench struct {
	Pods        int          `json:"pods"`
	Relayed     durationsSum `json:"secretRelay"`
	Baseline    durationsSum `json:"baselineSecretExists"`
	SecretLater durationsSum `json:"secretOneSecondAfterPod"`
}

type durationsSum struct {
	P50Ms float64 `json:"p50Ms"`
	P99Ms float64 `json:"p99Ms"`
	MaxMs float64 `json:"maxMs"`
}

func summarizeDurations(ds []time.Duration) durationsSum {
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(q float64) float64 {
		return float64(s[min(len(s)-1, int(q*float64(len(s))))]) / float64(time.Millisecond)
	}
	return durationsSum{P50Ms: at(0.50), P99Ms: at(0.99), MaxMs: at(1)}
}

// secretSource is how a measured pod's Secret comes to be.
type secretSource string

const (
	relayed secretSource = "relayed"
	exists  secretSource = "exists"
	later   secretSource = "later"
)

// podReadsSecret creates a reader pod whose Secret comes from src, returns how
// long it took from the create call to the container's first read of the mounted
// file, by the container's own clock, and deletes the pod.
func (w *world) podReadsSecret(t *testing.T, ns, name string, src secretSource) time.Duration {
	t.Helper()
	ctx := context.Background()
	spec := node.ReaderPodSpec(name, "username")
	c := &spec.Containers[0]
	c.Env = nil
	c.Args = []string{"-env", "username", "-file", "/etc/secret/username"}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, StringData: map[string]string{"username": "peter"}}
	createSecret := func() {
		_, err := w.node.Client.CoreV1().Secrets(ns).Create(ctx, secret, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	if src == relayed {
		pod.Annotations = map[string]string{
			"secret-relay.io/store": "remote-k8s-store",
			"secret-relay.io/secrets": fmt.Sprintf(`- name: %s
  env: true
  data:
  - secretKey: username
    remoteRef: {key: user-credentials, property: username}
`, name),
		}
	} else {
		c.EnvFrom = []corev1.EnvFromSource{{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: name}}}}
	}
	if src == exists {
		createSecret()
	}
	pods := w.node.Client.CoreV1().Pods(ns)
	start := time.Now()
	_, err := pods.Create(ctx, pod, metav1.CreateOptions{})
	require.NoError(t, err)
	if src == later {
		time.Sleep(time.Second)
		createSecret()
	}
	line := w.node.WaitLog(t, ns, name, "from file /etc/secret/username", 3*time.Minute)
	nanos, err := strconv.ParseInt(strings.Fields(line)[0], 10, 64)
	require.NoError(t, err)
	require.NoError(t, pods.Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}))
	return time.Unix(0, nanos).Sub(start)
}
