package cluster

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
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
	"github.com/secret-relay/secret-relay/relay"
)

// CRDDir is manifests/crds of this checkout.
func CRDDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "manifests", "crds")
}

// CertManagerCRDDir is deploy/crds of the cert-manager module this repository
// requires: the CRDs a cluster has once cert-manager is installed.
func CertManagerCRDDir(t testing.TB) string {
	t.Helper()
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/cert-manager/cert-manager")
	cmd.Dir = filepath.Join(CRDDir(), "..", "..")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("could not find the cert-manager module: %v", err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "deploy", "crds")
	if _, err := os.Stat(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// HelmBinary is the helm that `make tools` builds, as hack/tools.sh names it.
func HelmBinary(t testing.TB) string {
	t.Helper()
	out, err := exec.Command(filepath.Join(CRDDir(), "..", "..", "hack", "tools.sh"), "--print", "helm").Output()
	if err != nil {
		t.Fatalf("could not find helm: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// BuildRelay builds secret-relay into dir and returns the binary's path.
func BuildRelay(dir string) (string, error) {
	bin := dir + "/secret-relay"
	out, err := exec.Command("go", "build", "-o", bin, "github.com/secret-relay/secret-relay/cmd/secret-relay").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("could not build secret-relay: %w\n%s", err, out)
	}
	return bin, nil
}

// Relay is one running `secret-relay serve` process.
type Relay struct {
	WebhookURL string
	ProbeURL   string
	Cert       *ServingCert
	LogFile    string
	cmd        *exec.Cmd
	exited     chan struct{}
}

// StartRelay runs secret-relay against the downstream cluster, waits until /readyz
// says ready, and stops it with SIGTERM when the test ends.
func StartRelay(t testing.TB, binary, logDir string, down *ControlPlane, extraArgs ...string) *Relay {
	t.Helper()
	r := LaunchRelay(t, binary, logDir, down, extraArgs...)
	r.WaitReady(t, 60*time.Second)
	return r
}

// LaunchRelay is StartRelay without the wait for /readyz, for tests that time it.
func LaunchRelay(t testing.TB, binary, logDir string, down *ControlPlane, extraArgs ...string) *Relay {
	t.Helper()
	down.EnsureNamespace(t, "secret-relay")
	r := &Relay{Cert: NewServingCert(t), exited: make(chan struct{})}
	webhookAddr := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	probeAddr := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	r.WebhookURL = "https://" + webhookAddr + "/mutate-pods"
	r.ProbeURL = "http://" + probeAddr
	f, err := os.CreateTemp(logDir, "relay-*.log")
	require.NoError(t, err)
	r.LogFile = f.Name()

	args := append([]string{"serve",
		"--kubeconfig", down.Kubeconfig,
		"--webhook-address", webhookAddr,
		"--probe-address", probeAddr,
		"--tls-cert-file", r.Cert.CertFile,
		"--tls-key-file", r.Cert.KeyFile,
		"--namespace", "secret-relay",
		"--log-level", "debug",
		"--cert-reload-interval", "500ms",
		"--shutdown-delay", "0s", // tests that drain say so
	}, extraArgs...)
	r.cmd = exec.Command(binary, args...)
	r.cmd.Stdout, r.cmd.Stderr = f, f
	require.NoError(t, r.cmd.Start())
	go func() {
		_ = r.cmd.Wait()
		f.Close()
		close(r.exited)
	}()
	t.Cleanup(func() { r.Stop(t) })
	return r
}

// Ready reports whether /readyz answers 200 now.
func (r *Relay) Ready() bool {
	resp, err := http.Get(r.ProbeURL + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// WaitReady waits until /readyz answers 200 and returns how long that took; it fails
// the test when the process exits first or within passes.
func (r *Relay) WaitReady(t testing.TB, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for !r.Ready() {
		select {
		case <-r.exited:
			t.Fatalf("secret-relay exited before it was ready:\n%s", r.LogTail())
		default:
		}
		if time.Since(start) > within {
			t.Fatalf("secret-relay not ready within %s:\n%s", within, r.LogTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

// PID is the process's ID.
func (r *Relay) PID() int { return r.cmd.Process.Pid }

// Stop sends SIGTERM and waits for the process to exit.
func (r *Relay) Stop(t testing.TB) {
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

// BecameLeader reports whether the process's log says it took the leader lease.
func (r *Relay) BecameLeader() bool { return r.LeaderTerms() > 0 }

// LeaderTerms counts the times the process's log says it took the leader lease.
func (r *Relay) LeaderTerms() int { return r.LogCount(`"msg":"became leader"`) }

// LogCount counts the lines of the process's log that contain s.
func (r *Relay) LogCount(s string) int {
	data, _ := os.ReadFile(r.LogFile)
	return strings.Count(string(data), s)
}

// LogTail is the end of the process's log, for failure messages.
func (r *Relay) LogTail() string {
	data, _ := os.ReadFile(r.LogFile)
	if len(data) > 8000 {
		data = data[len(data)-8000:]
	}
	return string(data)
}

// Register installs the webhook configuration downstream and waits until the API
// server calls it.
func (r *Relay) Register(t testing.TB, down *ControlPlane) {
	t.Helper()
	down.RegisterPodWebhook(t, "secret-relay-"+strconv.Itoa(FreePort(t)), r.WebhookURL, r.Cert.CA.CertPEM())
	down.WaitForWebhook(t, "default", func() bool { return r.Metric(t, "secret_relay_admissions_total") > 0 })
}

var metricLine = regexp.MustCompile(`^([a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$`)

// Metric sums a metric's samples whose labels contain every given label pair.
func (r *Relay) Metric(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	resp, err := http.Get(r.ProbeURL + "/metrics")
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

// HTTPSClient trusts the relay's serving CA.
func (r *Relay) HTTPSClient(t testing.TB) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: r.RootCAs(t), MinVersion: tls.VersionTLS12}}}
}

// RootCAs is a pool holding the relay's serving CA.
func (r *Relay) RootCAs(t testing.TB) *x509.CertPool {
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(r.Cert.CA.CertPEM()))
	return pool
}

// DialWebhook opens a TLS connection to the webhook listener with cfg, trusting the
// relay's CA unless cfg says otherwise.
func (r *Relay) DialWebhook(t testing.TB, cfg *tls.Config) (*tls.Conn, error) {
	t.Helper()
	if cfg.RootCAs == nil {
		cfg.RootCAs = r.RootCAs(t)
	}
	return tls.Dial("tcp", r.webhookAddr(), cfg)
}

// webhookAddr is the host:port the webhook listens on.
func (r *Relay) webhookAddr() string {
	return strings.TrimSuffix(strings.TrimPrefix(r.WebhookURL, "https://"), "/mutate-pods")
}

// World is the seed's two clusters with secret-relay serving the downstream one:
// upstream Secrets behind the eso-reader, and SeedStore for downstream namespaces.
type World struct {
	Up, Down *ControlPlane
	Relay    *Relay
	// Dynamic is an admin dynamic client on the downstream cluster, for stores.
	Dynamic dynamic.Interface
	// Reader is the seed's eso-reader in the upstream default namespace.
	Reader Reader
}

// NewWorld starts both clusters with the CRDs downstream, puts the seed's
// user-credentials and eso-reader upstream, and starts and registers secret-relay
// (binary, logging into logDir, with extra relayArgs).
func NewWorld(t testing.TB, binary, logDir string, relayArgs ...string) *World {
	t.Helper()
	w := NewUnregisteredWorld(t, binary, logDir, relayArgs...)
	w.Relay.Register(t, w.Down)
	return w
}

// NewUnregisteredWorld is NewWorld without the webhook configuration, for tests that
// put something between the API server and the relay.
func NewUnregisteredWorld(t testing.TB, binary, logDir string, relayArgs ...string) *World {
	t.Helper()
	return NewCustomWorld(t, binary, logDir, WorldOptions{RelayArgs: relayArgs})
}

// WorldOptions shape a World made by NewCustomWorld.
type WorldOptions struct {
	// DownstreamArgs are extra flags for the downstream kube-apiserver.
	DownstreamArgs map[string]string
	// RelayArgs are extra flags for secret-relay serve.
	RelayArgs []string
	// TrustDownstream starts the clusters with StartTrustingPair: the upstream
	// accepts the downstream's ServiceAccount tokens.
	TrustDownstream bool
}

// NewCustomWorld is NewUnregisteredWorld shaped by opts.
func NewCustomWorld(t testing.TB, binary, logDir string, opts WorldOptions) *World {
	t.Helper()
	// The downstream audit log holds the denials the API server returned, for tests
	// that scan them.
	downstream := Options{CRDDirs: []string{CRDDir()}, AuditLog: true, APIServerArgs: opts.DownstreamArgs}
	start := StartPair
	if opts.TrustDownstream {
		start = StartTrustingPair
	}
	up, down := start(t, downstream)
	w := &World{Up: up, Down: down}
	var err error
	w.Dynamic, err = dynamic.NewForConfig(down.Config)
	require.NoError(t, err)
	up.CreateSecret(t, "default", "user-credentials", map[string]string{"username": "peter", "password": "asdf1234"})
	w.Reader = up.SeedReader(t, "default")
	w.Relay = StartRelay(t, binary, logDir, down, opts.RelayArgs...)
	return w
}

// SeedStore creates, in downstream namespace ns, the seed's remote-sa-token Secret,
// kube-root-remote-ca.crt ConfigMap and a SecretStore named name reading the
// upstream default namespace with the world's eso-reader.
func (w *World) SeedStore(t testing.TB, ns, name string) {
	t.Helper()
	w.SeedStoreReading(t, ns, name, w.Reader)
}

// SeedStoreReading is SeedStore with another reader: the store reads the reader's
// namespace upstream with the reader's token.
func (w *World) SeedStoreReading(t testing.TB, ns, name string, reader Reader) {
	t.Helper()
	w.seedStore(t, ns, name, reader, w.Up.URL())
}

// SeedStoreAt is SeedStore with the upstream reached at url, a Proxy's for example.
func (w *World) SeedStoreAt(t testing.TB, ns, name, url string) {
	t.Helper()
	w.seedStore(t, ns, name, w.Reader, url)
}

func (w *World) seedStore(t testing.TB, ns, name string, reader Reader, url string) {
	t.Helper()
	w.seedStoreRefs(t, ns, reader)
	w.ApplySecretStore(t, ns, name, fmt.Sprintf(`
server:
  url: %s
  caProvider: {type: ConfigMap, name: kube-root-remote-ca.crt, key: ca.crt}
remoteNamespace: %s
auth:
  token:
    bearerToken: {name: remote-sa-token, key: token}
`, url, reader.Namespace))
}

// SeedStoreRefs creates, in downstream namespace ns, the seed's remote-sa-token
// Secret and kube-root-remote-ca.crt ConfigMap, unless they exist: what a store
// references, for ClusterSecretStores that name ns.
func (w *World) SeedStoreRefs(t testing.TB, ns string) {
	t.Helper()
	w.seedStoreRefs(t, ns, w.Reader)
}

func (w *World) seedStoreRefs(t testing.TB, ns string, reader Reader) {
	t.Helper()
	ctx := Context(t)
	w.Down.EnsureNamespace(t, ns)
	_, err := w.Down.Client.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "remote-sa-token"},
		StringData: map[string]string{"token": reader.Token},
	}, metav1.CreateOptions{})
	require.NoError(t, ignoreExists[any](nil, err))
	_, err = w.Down.Client.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-root-remote-ca.crt"},
		Data:       map[string]string{"ca.crt": string(w.Up.CA())},
	}, metav1.CreateOptions{})
	require.NoError(t, ignoreExists[any](nil, err))
}

// SeedTokenStore creates, in namespace ns, a Secret named token holding token and a
// SecretStore named name that reads remoteNamespace at url with it, trusting the
// upstream's CA.
func (w *World) SeedTokenStore(t testing.TB, ns, name, url, remoteNamespace, token string) {
	t.Helper()
	w.Down.EnsureNamespace(t, ns)
	w.Down.CreateSecret(t, ns, "token", map[string]string{"token": token})
	w.ApplySecretStore(t, ns, name, fmt.Sprintf(`
server: {url: %q, caBundle: %s}
remoteNamespace: %s
auth: {token: {bearerToken: {name: token, key: token}}}
`, url, base64.StdEncoding.EncodeToString(w.Up.CA()), remoteNamespace))
}

// ApplySecretStore creates SecretStore ns/name whose spec.provider.kubernetes is
// the YAML provider.
func (w *World) ApplySecretStore(t testing.TB, ns, name, provider string) {
	t.Helper()
	require.NoError(t, w.ApplyErr(t, SecretStoreYAML(ns, name, provider)))
}

// SecretStoreYAML is the manifest ApplySecretStore creates, for a test that
// expects the API server to refuse it (ApplyErr).
func SecretStoreYAML(ns, name, provider string) string {
	indented := "      " + strings.ReplaceAll(strings.TrimSpace(provider), "\n", "\n      ")
	return fmt.Sprintf(`apiVersion: secret-relay.io/v1alpha1
kind: SecretStore
metadata: {name: %s, namespace: %s}
spec:
  provider:
    kubernetes:
%s
`, name, ns, indented)
}

// Apply creates a store from YAML through the dynamic client.
func (w *World) Apply(t testing.TB, manifest string) {
	t.Helper()
	require.NoError(t, w.ApplyErr(t, manifest))
}

// ApplyErr is Apply that returns what the API server said, for a store it refuses.
func (w *World) ApplyErr(t testing.TB, manifest string) error {
	t.Helper()
	u := &unstructured.Unstructured{}
	require.NoError(t, yaml.Unmarshal([]byte(manifest), &u.Object))
	gvr := v1alpha1.SecretStoreGVR
	if u.GetKind() == v1alpha1.ClusterSecretStoreKind {
		gvr = v1alpha1.ClusterSecretStoreGVR
	}
	var err error
	if ns := u.GetNamespace(); ns != "" {
		_, err = w.Dynamic.Resource(gvr).Namespace(ns).Create(Context(t), u, metav1.CreateOptions{})
	} else {
		_, err = w.Dynamic.Resource(gvr).Create(Context(t), u, metav1.CreateOptions{})
	}
	return err
}

// Tokens is the relay installation's token key, read from its Secret in the
// secret-relay namespace, so that a test can check the tokens it finds.
func (w *World) Tokens(t testing.TB) relay.TokenKey {
	t.Helper()
	s, err := w.Down.Client.CoreV1().Secrets("secret-relay").Get(Context(t), relay.TokenKeySecret, metav1.GetOptions{})
	require.NoError(t, err)
	key, err := relay.NewTokenKey(s.Data["key"])
	require.NoError(t, err)
	return key
}

// Pod is a minimal pod with the given annotations.
func Pod(name string, annotations map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "init", Image: "busybox"}},
			Containers:     []corev1.Container{{Name: "app", Image: "busybox"}, {Name: "sidecar", Image: "busybox"}},
		},
	}
}

// Timed runs fn and returns how long it took.
func Timed(fn func()) time.Duration {
	start := time.Now()
	fn()
	return time.Since(start)
}

// WarningCollector keeps the warnings the API server returns.
type WarningCollector struct {
	mu       sync.Mutex
	warnings []string
}

// HandleWarningHeader records a warning.
func (c *WarningCollector) HandleWarningHeader(_ int, _ string, text string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.warnings = append(c.warnings, text)
}

// All returns the warnings so far.
func (c *WarningCollector) All() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.warnings...)
}
