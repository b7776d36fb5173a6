package e2e_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/secret-relay/secret-relay/relay"
	"github.com/secret-relay/secret-relay/test/cluster"
)

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	require.NoError(t, err, "%s %s:\n%s", filepath.Base(name), strings.Join(args, " "), out)
	return string(out)
}

// TestInstall installs secret-relay the two ways users do, into a downstream
// control plane that has cert-manager's CRDs (no cert-manager and no kubelet run:
// objects are created, not brought to life).
func TestInstall(t *testing.T) {
	crds := cluster.CertManagerCRDDir(t)
	kubectl := cluster.BinaryDir() + "/kubectl"
	manifests := filepath.Join(cluster.CRDDir(), "..")
	expected := []string{
		"customresourcedefinition.apiextensions.k8s.io/secretstores.secret-relay.io",
		"customresourcedefinition.apiextensions.k8s.io/clustersecretstores.secret-relay.io",
		"namespace/secret-relay",
		"serviceaccount/secret-relay",
		"clusterrole.rbac.authorization.k8s.io/secret-relay",
		"clusterrolebinding.rbac.authorization.k8s.io/secret-relay",
		"service/secret-relay",
		"deployment.apps/secret-relay",
		"poddisruptionbudget.policy/secret-relay",
		"issuer.cert-manager.io/secret-relay-selfsigned",
		"certificate.cert-manager.io/secret-relay-ca",
		"issuer.cert-manager.io/secret-relay-ca",
		"certificate.cert-manager.io/secret-relay-serving",
		"mutatingwebhookconfiguration.admissionregistration.k8s.io/secret-relay",
	}

	t.Run("kubectl apply -k manifests/ should create every object, and a server-side dry run should pass.", func(t *testing.T) {
		t.Parallel()
		down := cluster.Start(t, "downstream", cluster.Options{CRDDirs: []string{crds}})
		out := run(t, kubectl, "--kubeconfig", down.Kubeconfig, "apply", "-k", manifests)
		for _, obj := range expected {
			assert.Contains(t, out, obj+" created")
		}
		// A server-side dry run needs the namespace to exist: it creates nothing.
		out = run(t, kubectl, "--kubeconfig", down.Kubeconfig, "apply", "-k", manifests, "--dry-run=server")
		assert.Contains(t, out, "(server dry run)")
	})

	t.Run("helm install should create every object.", func(t *testing.T) {
		t.Parallel()
		down := cluster.Start(t, "downstream", cluster.Options{CRDDirs: []string{crds}})
		run(t, cluster.HelmBinary(t), "install", "secret-relay", filepath.Join(manifests, "charts", "secret-relay"),
			"--kubeconfig", down.Kubeconfig, "--namespace", "secret-relay", "--create-namespace")
		for _, obj := range expected {
			if strings.HasPrefix(obj, "namespace/") {
				continue // --create-namespace made it
			}
			args := []string{"--kubeconfig", down.Kubeconfig, "get", obj}
			if !strings.Contains(obj, "cluster") && !strings.Contains(obj, "mutatingwebhook") && !strings.Contains(obj, "customresource") {
				args = append(args, "-n", "secret-relay")
			}
			run(t, kubectl, args...)
		}
	})
}

// TestShippedWebhookConfiguration registers the MutatingWebhookConfiguration of
// manifests/ with only its clientConfig pointed at a local secret-relay: the API
// server sends it annotated pods and keeps unannotated ones away.
func TestShippedWebhookConfiguration(t *testing.T) {
	up, down := cluster.StartPair(t, cluster.Options{CRDDirs: []string{cluster.CRDDir()}})
	w := &cluster.World{Up: up, Down: down, Dynamic: dynamicClient(t, down)}
	up.CreateSecret(t, "default", "user-credentials", map[string]string{"username": "peter", "password": "asdf1234"})
	w.Reader = up.SeedReader(t, "default")
	w.Relay = cluster.StartRelay(t, relayBinary, suiteDir, down)
	registerLog(w.Relay.LogFile)

	raw, err := os.ReadFile(filepath.Join(cluster.CRDDir(), "..", "install", "webhook.yaml"))
	require.NoError(t, err)
	var cfg admissionregistrationv1.MutatingWebhookConfiguration
	require.NoError(t, yaml.UnmarshalStrict(raw, &cfg))
	require.Len(t, cfg.Webhooks, 1)
	url := w.Relay.WebhookURL
	cfg.Webhooks[0].ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: w.Relay.Cert.CA.CertPEM()}
	_, err = down.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(cluster.Context(t), &cfg, metav1.CreateOptions{})
	require.NoError(t, err)
	down.WaitForWebhook(t, "default", func() bool { return w.Relay.Metric(t, "secret_relay_admissions_total") > 0 })
	w.SeedStore(t, "default", "remote-k8s-store")

	before := w.Relay.Metric(t, "secret_relay_admissions_total")
	_, err = down.Client.CoreV1().Pods("default").Create(cluster.Context(t), cluster.Pod("plain", nil), metav1.CreateOptions{})
	require.NoError(t, err)
	assert.Equal(t, before, w.Relay.Metric(t, "secret_relay_admissions_total"), "matchConditions keep unannotated pods away")

	created, err := down.Client.CoreV1().Pods("default").Create(cluster.Context(t), cluster.Pod("app", map[string]string{
		relay.AnnotationStore: "remote-k8s-store", relay.AnnotationSecrets: seedAnnotation,
	}), metav1.CreateOptions{})
	require.NoError(t, err)
	assert.Contains(t, created.Annotations[relay.AnnotationStatus], "pulled-secrets")
	s, err := down.Client.CoreV1().Secrets("default").Get(cluster.Context(t), "pulled-secrets", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, []byte("peter"), s.Data["username"])
}
