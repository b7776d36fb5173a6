// Package e2enode_test runs secret-relay as users do: its image on a real node
// (test/node), installed by Helm or kubectl, called by the API server through its
// Service, relaying to containers that read what it wrote. The upstream is an envtest
// control plane on the host's loopback, exposed inside the node's namespace.
package e2enode_test

import (
	"context"
	"fmt"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/secret-relay/secret-relay/test/cluster"
	"github.com/secret-relay/secret-relay/test/image"
	"github.com/secret-relay/secret-relay/test/node"
)

// relayImage is the image the suite builds and imports: pods name it with
// imagePullPolicy Never, since no registry is reachable.
const (
	relayRepository = "ghcr.io/secret-relay/secret-relay"
	relayTag        = "e2e"
)

// world is the real node, the upstream and secret-relay's image on the node.
type world struct {
	node *node.Node
	up   *cluster.ControlPlane
	// upstreamURL is where pods reach the upstream API server.
	upstreamURL string
	reader      cluster.Reader
	root        string // the checkout
}

// importRelay builds secret-relay's image as `make image` does, named ref, and
// imports it into the node.
func (w *world) importRelay(t *testing.T, ref string) {
	t.Helper()
	tar, err := image.BuildSecretRelay(ref, "e2e", t.TempDir())
	require.NoError(t, err)
	w.node.Import(t, tar)
}

// newWorld starts the node and the upstream, and seeds
// the upstream as ../shared/seed has it: user-credentials, and the eso-reader
// account that may read it.
func newWorld(t *testing.T, opts node.Options) *world {
	t.Helper()
	up := cluster.Start(t, "upstream", cluster.Options{ServingHosts: []string{node.ExposeIP(opts)}})
	n := node.StartWith(t, opts)
	upURL, err := url.Parse(up.URL())
	require.NoError(t, err)
	w := &world{
		node:        n,
		up:          up,
		upstreamURL: "https://" + n.Expose(t, upURL.Host),
		root:        filepath.Join(cluster.CRDDir(), "..", ".."),
	}
	w.reader = up.SeedReader(t, "default")
	up.CreateSecret(t, "default", "user-credentials", map[string]string{"username": "peter", "password": "asdf1234"})
	return w
}

// kubectl runs kubectl against the node and returns its output.
func (w *world) kubectl(t *testing.T, args ...string) string {
	t.Helper()
	return run(t, filepath.Join(cluster.BinaryDir(), "kubectl"), append([]string{"--kubeconfig", w.node.Kubeconfig}, args...)...)
}

// helm runs helm against the node and returns its output.
func (w *world) helm(t *testing.T, args ...string) string {
	t.Helper()
	return run(t, cluster.HelmBinary(t), append([]string{"--kubeconfig", w.node.Kubeconfig}, args...)...)
}

func run(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	require.NoError(t, err, "%s %s:\n%s", filepath.Base(bin), strings.Join(args, " "), out)
	return string(out)
}

// apply pipes YAML to kubectl apply.
func (w *world) apply(t *testing.T, manifest string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(cluster.BinaryDir(), "kubectl"), "--kubeconfig", w.node.Kubeconfig, "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(manifest)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "kubectl apply:\n%s\n%s", manifest, out)
}

// seedStore creates, in namespace ns, the seed's token Secret, the upstream's CA
// and the SecretStore remote-k8s-store, and waits for the relay to find it Ready:
// the relay, in its pod, reached the upstream with the token.
func (w *world) seedStore(t *testing.T, ns string) {
	t.Helper()
	ctx := context.Background()
	c := w.node.Client
	if ns != "default" {
		_, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	_, err := c.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "remote-sa-token"},
		StringData: map[string]string{"token": w.reader.Token},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = c.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-root-remote-ca.crt"},
		Data:       map[string]string{"ca.crt": string(w.up.CA())},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	w.apply(t, fmt.Sprintf(`apiVersion: secret-relay.io/v1alpha1
kind: SecretStore
metadata:
  name: remote-k8s-store
  namespace: %s
spec:
  provider:
    kubernetes:
      server:
        url: %s
        caProvider:
          type: ConfigMap
          name: kube-root-remote-ca.crt
          key: ca.crt
      remoteNamespace: default
      auth:
        token:
          bearerToken:
            name: remote-sa-token
            key: token
`, ns, w.upstreamURL))
	out, err := exec.Command(filepath.Join(cluster.BinaryDir(), "kubectl"), "--kubeconfig", w.node.Kubeconfig,
		"wait", "--for=condition=Ready", "--timeout=60s", "-n", ns, "secretstore/remote-k8s-store").CombinedOutput()
	if err != nil {
		t.Fatalf("the store did not turn Ready: %v %s\n%s\nsecret-relay's logs:\n%s", err, out,
			w.kubectl(t, "-n", ns, "get", "secretstore/remote-k8s-store", "-o", "yaml"), w.relayLogs(t))
	}
}

// relayLogs is the end of every secret-relay pod's log, for a failure message.
func (w *world) relayLogs(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for name, logs := range w.relayPodLogs(t) {
		if len(logs) > 4000 {
			logs = logs[len(logs)-4000:]
		}
		fmt.Fprintf(&b, "--- %s ---\n%s\n", name, logs)
	}
	return b.String()
}

// relayPodLogs is the whole log of every secret-relay container, the current one
// and, where it restarted, the one before, by pod name.
func (w *world) relayPodLogs(t *testing.T) map[string]string {
	t.Helper()
	logs := map[string]string{}
	pods := w.node.Client.CoreV1().Pods(relayNamespace)
	for _, p := range w.podsOf(t, relayNamespace, relaySelector) {
		var b strings.Builder
		previous := len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].RestartCount > 0
		for _, prev := range []bool{true, false} {
			if prev && !previous {
				continue
			}
			body, err := pods.GetLogs(p.Name, &corev1.PodLogOptions{Previous: prev}).DoRaw(context.Background())
			if err != nil {
				fmt.Fprintf(&b, "(no log: %v)\n", err)
			}
			b.Write(body)
		}
		logs[p.Name] = b.String()
	}
	return logs
}

// relayAnnotations are the README's: pulled-secrets holds username, for envFrom.
var relayAnnotations = map[string]string{
	"secret-relay.io/store": "remote-k8s-store",
	"secret-relay.io/secrets": `- name: pulled-secrets
  env: true
  data:
  - secretKey: username
    remoteRef: {key: user-credentials, property: username}
`,
}

// appDeployment is the README's Deployment, with the reader as its container: it
// gets username from envFrom (the relay adds it) and from pulled-secrets mounted at
// /etc/secret.
func appDeployment(ns string) *appsv1.Deployment {
	spec := node.ReaderPodSpec("pulled-secrets", "username")
	// The env comes from the relay's envFrom, not from a secretKeyRef.
	spec.Containers[0].Env = nil
	spec.Containers[0].Args = []string{"-env", "username", "-file", "/etc/secret/username"}
	return deployment(ns, "app", relayAnnotations, spec)
}

// deployment is a one-replica Deployment of spec, labelled app=name, whose pod
// template carries annotations.
func deployment(ns, name string, annotations map[string]string, spec corev1.PodSpec) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: annotations},
				Spec:       spec,
			},
		},
	}
}

// podsOf lists the pods of a label selector.
func (w *world) podsOf(t *testing.T, ns, selector string) []corev1.Pod {
	t.Helper()
	pods, err := w.node.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: selector})
	require.NoError(t, err)
	return pods.Items
}

// waitFor polls cond every 100ms for up to within, and fails with what says why.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
