package e2e_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/secret-relay/secret-relay/api/v1alpha1"
	"github.com/secret-relay/secret-relay/test/cluster"
)

// relay is one running `secret-relay serve` process.
type relay struct {
	webhookURL string
	probeURL   string
	cert       *cluster.ServingCert
	logFile    string
	cmd        *exec.Cmd
	exited     chan struct{}
}

// startRelay runs secret-relay against the downstream cluster, waits until /readyz
// says ready, and stops it with SIGTERM when the test ends.
func startRelay(t testing.TB, down *cluster.ControlPlane, extraArgs ...string) *relay {
	t.Helper()
	down.EnsureNamespace(t, "secret-relay")
	r := &relay{cert: cluster.NewServingCert(t), exited: make(chan struct{})}
	webhookAddr := fmt.Sprintf("127.0.0.1:%d", cluster.FreePort(t))
	probeAddr := fmt.Sprintf("127.0.0.1:%d", cluster.FreePort(t))
	r.webhookURL = "https://" + webhookAddr + "/mutate-pods"
	r.probeURL = "http://" + probeAddr
	f, err := os.CreateTemp(suiteDir, "relay-*.log")
	require.NoError(t, err)
	r.logFile = f.Name()
	registerLog(r.logFile)

	args := append([]string{"serve",
		"--kubeconfig", down.Kubeconfig,
		"--webhook-address", webhookAddr,
		"--probe-address", probeAddr,
		"--tls-cert-file", r.cert.CertFile,
		"--tls-key-file", r.cert.KeyFile,
		"--namespace", "secret-relay",
		"--log-level", "debug",
		"--cert-reload-interval", "500ms",
	}, extraArgs...)
	r.cmd = exec.Command(relayBinary, args...)
	r.cmd.Stdout, r.cmd.Stderr = f, f
	require.NoError(t, r.cmd.Start())
	go func() {
		_ = r.cmd.Wait()
		f.Close()
		close(r.exited)
	}()
	t.Cleanup(func() { r.stop(t) })

	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(r.probeURL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return r
			}
		}
		select {
		case <-r.exited:
			t.Fatalf("secret-relay exited before it was ready:\n%s", r.logTail())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("secret-relay not ready within 60s:\n%s", r.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (r *relay) stop(t testing.TB) {
	select {
	case <-r.exited:
		return
	default:
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.exited:
	case <-time.After(30 * time.Second):
		t.Errorf("secret-relay did not stop within 30s of SIGTERM")
		_ = r.cmd.Process.Kill()
		<-r.exited
	}
}

func (r *relay) logTail() string {
	data, _ := os.ReadFile(r.logFile)
	if len(data) > 8000 {
		data = data[len(data)-8000:]
	}
	return string(data)
}

// register installs the webhook configuration downstream and waits until the API
// server calls it.
func (r *relay) register(t testing.TB, down *cluster.ControlPlane) {
	t.Helper()
	down.RegisterPodWebhook(t, "secret-relay-"+strconv.Itoa(cluster.FreePort(t)), r.webhookURL, r.cert.CA.CertPEM())
	down.WaitForWebhook(t, "default", func() bool { return r.metric(t, "secret_relay_admissions_total") > 0 })
}

var metricLine = regexp.MustCompile(`^([a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$`)

// metric sums a metric's samples whose labels contain every given label pair.
func (r *relay) metric(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	resp, err := http.Get(r.probeURL + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		m := metricLine.FindStringSubmatch(sc.Text())
		if m == nil || m[1] != name {
			continue
		}
		match := true
		for _, l := range labels {
			match = match && strings.Contains(m[2], l)
		}
		if match {
			v, err := strconv.ParseFloat(m[3], 64)
			require.NoError(t, err)
			sum += v
		}
	}
	return sum
}

// httpsClient trusts the relay's serving CA.
func (r *relay) httpsClient(t testing.TB) *http.Client {
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(r.cert.CA.CertPEM()))
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
}

// world is the seed's two clusters: upstream Secrets behind the eso-reader, a
// downstream namespace with the token, the CA and a SecretStore.
type world struct {
	up, down *cluster.ControlPlane
	relay    *relay
	dyn      dynamic.Interface
	reader   cluster.Reader
}

func newWorld(t testing.TB, relayArgs ...string) *world {
	t.Helper()
	up, down := cluster.StartPair(t, cluster.Options{CRDDirs: []string{"../../manifests/crds"}})
	w := &world{up: up, down: down}
	var err error
	w.dyn, err = dynamic.NewForConfig(down.Config)
	require.NoError(t, err)
	up.CreateSecret(t, "default", "user-credentials", map[string]string{"username": "peter", "password": "asdf1234"})
	w.reader = up.SeedReader(t, "default")
	w.relay = startRelay(t, down, relayArgs...)
	w.relay.register(t, down)
	return w
}

// seedStore creates, in downstream namespace ns, the seed's remote-sa-token Secret,
// kube-root-remote-ca.crt ConfigMap and a SecretStore named name.
func (w *world) seedStore(t testing.TB, ns, name string) {
	t.Helper()
	ctx := cluster.Context(t)
	w.down.EnsureNamespace(t, ns)
	_, err := w.down.Client.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "remote-sa-token"},
		StringData: map[string]string{"token": w.reader.Token},
	}, metav1.CreateOptions{})
	require.NoError(t, ignoreExists(err))
	_, err = w.down.Client.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-root-remote-ca.crt"},
		Data:       map[string]string{"ca.crt": string(w.up.CA())},
	}, metav1.CreateOptions{})
	require.NoError(t, ignoreExists(err))
	w.apply(t, fmt.Sprintf(`
apiVersion: secret-relay.io/v1alpha1
kind: SecretStore
metadata: {name: %s, namespace: %s}
spec:
  provider:
    kubernetes:
      server:
        url: %s
        caProvider: {type: ConfigMap, name: kube-root-remote-ca.crt, key: ca.crt}
      remoteNamespace: default
      auth:
        token:
          bearerToken: {name: remote-sa-token, key: token}
`, name, ns, w.up.URL()))
}

// apply creates a store from YAML through the dynamic client.
func (w *world) apply(t testing.TB, manifest string) {
	t.Helper()
	u := &unstructured.Unstructured{}
	require.NoError(t, yaml.Unmarshal([]byte(manifest), &u.Object))
	gvr := v1alpha1.SecretStoreGVR
	if u.GetKind() == v1alpha1.ClusterSecretStoreKind {
		gvr = v1alpha1.ClusterSecretStoreGVR
	}
	var err error
	if ns := u.GetNamespace(); ns != "" {
		_, err = w.dyn.Resource(gvr).Namespace(ns).Create(cluster.Context(t), u, metav1.CreateOptions{})
	} else {
		_, err = w.dyn.Resource(gvr).Create(cluster.Context(t), u, metav1.CreateOptions{})
	}
	require.NoError(t, err)
}

// pod is a minimal pod with the given annotations.
func pod(name string, annotations map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "init", Image: "busybox"}},
			Containers:     []corev1.Container{{Name: "app", Image: "busybox"}, {Name: "sidecar", Image: "busybox"}},
		},
	}
}

func ignoreExists(err error) error {
	if err != nil && strings.Contains(err.Error(), "already exists") {
		return nil
	}
	return err
}

// timed runs fn and returns how long it took.
func timed(fn func()) time.Duration {
	start := time.Now()
	fn()
	return time.Since(start)
}

// warningCollector keeps the warnings the API server returns.
type warningCollector struct {
	mu       sync.Mutex
	warnings []string
}

func (c *warningCollector) HandleWarningHeader(_ int, _ string, text string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.warnings = append(c.warnings, text)
}

func (c *warningCollector) all() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.warnings...)
}
