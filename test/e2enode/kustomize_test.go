package e2enode_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/secret-relay/secret-relay/certs/certstest"
	"github.com/secret-relay/secret-relay/test/cluster"
	"github.com/secret-relay/secret-relay/test/node"
)

// TestKustomize installs secret-relay with `kubectl apply -k manifests/` on the real
// node and walks the seed through it.
//
// cert-manager cannot run here: its commands' modules are not served, so there is
// no image to build. The test stands in for it (certManagerStandIn): it installs
// cert-manager's CRDs, reads the serving Certificate the manifests declare, issues
// that certificate for its dnsNames into its secretName as cert-manager's CA Issuer
// would, and copies the CA into the MutatingWebhookConfiguration as cainjector does
// for cert-manager.io/inject-ca-from. So this proves the manifests' Deployment,
// Service, RBAC, probes and webhook registration on a running node, with a
// certificate of the shape the Certificate asks for. It does not prove cert-manager's
// own part: the self-signed → CA Issuer chain, renewal and rotation by cert-manager,
// or cainjector.
func TestKustomize(t *testing.T) {
	w := newWorld(t, node.Options{})
	// The manifests name the image ghcr.io/secret-relay/secret-relay:latest,
	// IfNotPresent: present, it is not pulled.
	w.importRelay(t, relayRepository+":latest")
	w.kubectl(t, "apply", "--server-side", "-f", cluster.CertManagerCRDDir(t))
	w.kubectl(t, "wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
	manifests := filepath.Join(w.root, "manifests")

	t.Run("kubectl apply -k manifests/ with the cert-manager stand-in should bring up both replicas Ready", func(t *testing.T) {
		start := time.Now()
		w.kubectl(t, "apply", "-k", manifests)
		w.certManagerStandIn(t, relayNamespace, "secret-relay-serving", "secret-relay")
		w.waitRelayReplicas(t, 2)
		t.Logf("kubectl apply -k → both replicas Ready in %s", time.Since(start).Round(100*time.Millisecond))
		w.checkWebhookThroughService(t)
	})

	t.Run("the seed walkthrough: an annotated Deployment's container should read peter from its env and its mounted file", func(t *testing.T) {
		w.walkthrough(t, "default")
	})
}

var certificateGVR = schema.GroupVersionResource{Group: "cert-manager.io", Version: "v1", Resource: "certificates"}

// certManagerStandIn does what cert-manager and its cainjector would do for one
// Certificate: issue it into its secretName (tls.crt, tls.key, ca.crt, type
// kubernetes.io/tls) for its dnsNames, and put the CA into the caBundle of the
// webhook configuration that names it in cert-manager.io/inject-ca-from.
func (w *world) certManagerStandIn(t *testing.T, ns, certificate, webhookConfig string) {
	t.Helper()
	ctx := context.Background()
	dyn, err := dynamic.NewForConfig(w.node.Config)
	require.NoError(t, err)
	var cert *unstructured.Unstructured
	waitFor(t, 30*time.Second, "the Certificate "+certificate, func() bool {
		cert, err = dyn.Resource(certificateGVR).Namespace(ns).Get(ctx, certificate, metav1.GetOptions{})
		return err == nil
	})
	secretName, _, _ := unstructured.NestedString(cert.Object, "spec", "secretName")
	dnsNames, _, _ := unstructured.NestedStringSlice(cert.Object, "spec", "dnsNames")
	require.NotEmpty(t, secretName)
	require.NotEmpty(t, dnsNames)

	ca, err := certstest.NewCA("secret-relay-ca")
	require.NoError(t, err)
	kp, err := ca.ServingCert(dnsNames...)
	require.NoError(t, err)
	_, err = w.node.Client.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: secretName, Annotations: map[string]string{
			"cert-manager.io/certificate-name": certificate,
		}},
		Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{"tls.crt": kp.CertPEM, "tls.key": kp.KeyPEM, "ca.crt": ca.CertPEM()},
	}, metav1.CreateOptions{})
	require.NoError(t, err)

	hooks := w.node.Client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	cfg, err := hooks.Get(ctx, webhookConfig, metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, fmt.Sprintf("%s/%s", ns, certificate), cfg.Annotations["cert-manager.io/inject-ca-from"],
		"the webhook configuration should ask cainjector for this Certificate's CA")
	for i := range cfg.Webhooks {
		cfg.Webhooks[i].ClientConfig.CABundle = ca.CertPEM()
	}
	_, err = hooks.Update(ctx, cfg, metav1.UpdateOptions{})
	require.NoError(t, err)
}
