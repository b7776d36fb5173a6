package manifests_test

import (
	"crypto/x509"
	"encoding/pem"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"
)

// injectAnnotation is cert-manager's CA injection annotation.
const injectAnnotation = "cert-manager.io/inject-ca-from"

// mwcWant is what a MutatingWebhookConfiguration must hold beyond the fixed
// contract fields.
type mwcWant struct {
	namespace   string   // the install namespace
	excluded    []string // the namespaces the selector excludes, in order
	certManager bool     // cert-manager injects the CA; else caBundle is set
}

// assertContractMWC checks a MutatingWebhookConfiguration against contract §7, field
// by field. It returns the caBundle.
func assertContractMWC(t *testing.T, mwc *admissionregistrationv1.MutatingWebhookConfiguration, want mwcWant) []byte {
	t.Helper()
	assert.Equal(t, "secret-relay", mwc.Name)
	require.Len(t, mwc.Webhooks, 1, "one webhook")
	wh := mwc.Webhooks[0]
	assert.Equal(t, "pods.secret-relay.io", wh.Name)

	cc := wh.ClientConfig
	assert.Nil(t, cc.URL, "clientConfig.url")
	if assert.NotNil(t, cc.Service, "clientConfig.service") {
		assert.Equal(t, want.namespace, cc.Service.Namespace, "clientConfig.service.namespace")
		assert.Equal(t, "secret-relay", cc.Service.Name, "clientConfig.service.name")
		assertPtr(t, "clientConfig.service.path", "/mutate-pods", cc.Service.Path)
		assertPtr(t, "clientConfig.service.port", 443, cc.Service.Port)
	}

	assert.Equal(t, []string{"v1"}, wh.AdmissionReviewVersions, "admissionReviewVersions")
	assertPtr(t, "sideEffects", admissionregistrationv1.SideEffectClassNoneOnDryRun, wh.SideEffects)
	assertPtr(t, "failurePolicy", admissionregistrationv1.Fail, wh.FailurePolicy)
	assertPtr(t, "timeoutSeconds", 5, wh.TimeoutSeconds)
	assertPtr(t, "reinvocationPolicy", admissionregistrationv1.IfNeededReinvocationPolicy, wh.ReinvocationPolicy)
	if wh.MatchPolicy != nil {
		assert.Equal(t, admissionregistrationv1.Equivalent, *wh.MatchPolicy, "matchPolicy")
	}
	if assert.Len(t, wh.Rules, 1, "rules") && assert.NotNil(t, wh.Rules[0].Scope, "rules[0].scope") {
		assert.Equal(t, admissionregistrationv1.NamespacedScope, *wh.Rules[0].Scope, "rules[0].scope")
	}
	assert.Equal(t, []admissionregistrationv1.RuleWithOperations{{
		Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
		Rule: admissionregistrationv1.Rule{
			APIGroups:   []string{""},
			APIVersions: []string{"v1"},
			Resources:   []string{"pods"},
			Scope:       ptr.To(admissionregistrationv1.NamespacedScope),
		},
	}}, wh.Rules, "rules")
	assert.Equal(t, []admissionregistrationv1.MatchCondition{{
		Name:       "has-secret-relay-secrets",
		Expression: `has(object.metadata.annotations) && "secret-relay.io/secrets" in object.metadata.annotations`,
	}}, wh.MatchConditions, "matchConditions")
	assert.Equal(t, &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
		Key:      "kubernetes.io/metadata.name",
		Operator: metav1.LabelSelectorOpNotIn,
		Values:   want.excluded,
	}}}, wh.NamespaceSelector, "namespaceSelector")
	assert.Nil(t, wh.ObjectSelector, "objectSelector")

	if want.certManager {
		assert.Equal(t, want.namespace+"/secret-relay-serving", mwc.Annotations[injectAnnotation])
		assert.Empty(t, cc.CABundle, "caBundle is cert-manager's to inject")
	} else {
		assert.NotContains(t, mwc.Annotations, injectAnnotation)
		assert.NotEmpty(t, cc.CABundle, "caBundle")
	}
	return cc.CABundle
}

// assertPtr checks that a pointer field is set to want.
func assertPtr[T comparable](t *testing.T, field string, want T, got *T) {
	t.Helper()
	if assert.NotNil(t, got, "%s is unset", field) {
		assert.Equal(t, want, *got, field)
	}
}

func TestPlainWebhookMatchesContract(t *testing.T) {
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	readObjects(t, "manifests/install/webhook.yaml").one(t, "MutatingWebhookConfiguration", "secret-relay", &mwc)
	assertContractMWC(t, &mwc, mwcWant{namespace: "secret-relay", excluded: []string{"kube-system", "secret-relay"}, certManager: true})
}

func TestChartWebhookMatchesContract(t *testing.T) {
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	helmTemplate(t, "secret-relay").one(t, "MutatingWebhookConfiguration", "secret-relay", &mwc)
	assertContractMWC(t, &mwc, mwcWant{namespace: "secret-relay", excluded: []string{"kube-system", "secret-relay"}, certManager: true})
}

// TestChartAndPlainWebhooksAgree diffs the webhook of the chart with default values
// against the plain manifest's.
func TestChartAndPlainWebhooksAgree(t *testing.T) {
	var plain, chart admissionregistrationv1.MutatingWebhookConfiguration
	readObjects(t, "manifests/install/webhook.yaml").one(t, "MutatingWebhookConfiguration", "secret-relay", &plain)
	helmTemplate(t, "secret-relay").one(t, "MutatingWebhookConfiguration", "secret-relay", &chart)
	assert.Equal(t, plain.Webhooks, chart.Webhooks)
	assert.Equal(t, plain.Annotations, chart.Annotations)
}

func TestChartWebhookFollowsReleaseNamespaceAndValues(t *testing.T) {
	objs := helmTemplate(t, "relay-system",
		"webhook.extraExcludedNamespaces={team-a,team-b}",
		"webhook.failurePolicy=Ignore",
		"webhook.timeoutSeconds=10",
	)
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	objs.one(t, "MutatingWebhookConfiguration", "secret-relay", &mwc)
	require.Len(t, mwc.Webhooks, 1)
	wh := mwc.Webhooks[0]
	assertPtr(t, "failurePolicy", admissionregistrationv1.Ignore, wh.FailurePolicy)
	assertPtr(t, "timeoutSeconds", 10, wh.TimeoutSeconds)
	assert.Equal(t, "relay-system", wh.ClientConfig.Service.Namespace)
	assert.Equal(t, []string{"kube-system", "relay-system", "team-a", "team-b"}, wh.NamespaceSelector.MatchExpressions[0].Values)
	assert.Equal(t, "relay-system/secret-relay-serving", mwc.Annotations[injectAnnotation])

	for _, o := range objs {
		switch o.Kind {
		case "MutatingWebhookConfiguration", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition":
			assert.Empty(t, o.Namespace, "%s %s is cluster-scoped", o.Kind, o.Name)
		default:
			assert.Equal(t, "relay-system", o.Namespace, "%s %s", o.Kind, o.Name)
		}
	}
}

// TestChartWithoutCertManager renders the chart-generated certificate: the
// caBundle verifies the serving certificate in the Secret the pods mount, and no
// cert-manager object is rendered.
func TestChartWithoutCertManager(t *testing.T) {
	objs := helmTemplate(t, "secret-relay", "certificates.certManager.enabled=false")
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	objs.one(t, "MutatingWebhookConfiguration", "secret-relay", &mwc)
	caBundle := assertContractMWC(t, &mwc, mwcWant{namespace: "secret-relay", excluded: []string{"kube-system", "secret-relay"}})

	assert.Empty(t, objs.all("Certificate"), "no cert-manager Certificate")
	assert.Empty(t, objs.all("Issuer"), "no cert-manager Issuer")

	var secret corev1.Secret
	objs.one(t, "Secret", "secret-relay-tls", &secret)
	assert.Equal(t, corev1.SecretTypeTLS, secret.Type)
	assert.Equal(t, string(caBundle), string(secret.Data["ca.crt"]), "the Secret's ca.crt is the caBundle")
	require.NotEmpty(t, secret.Data[corev1.TLSPrivateKeyKey])

	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM(caBundle), "caBundle holds a PEM certificate")
	block, _ := pem.Decode(secret.Data[corev1.TLSCertKey])
	require.NotNil(t, block, "tls.crt is PEM")
	cert, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	for _, name := range []string{"secret-relay.secret-relay.svc", "secret-relay.secret-relay.svc.cluster.local"} {
		_, err := cert.Verify(x509.VerifyOptions{DNSName: name, Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		assert.NoError(t, err, "serving cert for %s", name)
	}

	assertDeploymentMountsTLS(t, objs, "secret-relay-tls")
}

// certificate is the part of a cert-manager Certificate the tests read.
type certificate struct {
	Spec struct {
		IsCA       bool     `json:"isCA"`
		SecretName string   `json:"secretName"`
		DNSNames   []string `json:"dnsNames"`
		IssuerRef  struct {
			Name string `json:"name"`
			Kind string `json:"kind"`
		} `json:"issuerRef"`
	} `json:"spec"`
}

// issuer is the part of a cert-manager Issuer the tests read.
type issuer struct {
	Spec struct {
		SelfSigned *struct{} `json:"selfSigned"`
		CA         *struct {
			SecretName string `json:"secretName"`
		} `json:"ca"`
	} `json:"spec"`
}

// assertCertManagerChain checks the self-signed Issuer, CA Certificate, CA Issuer
// and serving Certificate for the Service in namespace ns.
func assertCertManagerChain(t *testing.T, objs objects, ns string) {
	t.Helper()
	var selfSigned, caIssuer issuer
	var ca, serving certificate
	// cert-manager's types are not in the module graph: decode into local structs.
	decode := func(kind, name string, into any) {
		t.Helper()
		var found []object
		for _, o := range objs.all(kind) {
			if o.Name == name {
				found = append(found, o)
			}
		}
		require.Len(t, found, 1, "want exactly one %s %s", kind, name)
		assert.Equal(t, ns, found[0].Namespace, "%s %s", kind, name)
		assert.Equal(t, "cert-manager.io/v1", found[0].APIVersion, "%s %s", kind, name)
		require.NoError(t, yaml.Unmarshal(found[0].raw, into))
	}
	decode("Issuer", "secret-relay-selfsigned", &selfSigned)
	decode("Certificate", "secret-relay-ca", &ca)
	decode("Issuer", "secret-relay-ca", &caIssuer)
	decode("Certificate", "secret-relay-serving", &serving)

	assert.NotNil(t, selfSigned.Spec.SelfSigned, "secret-relay-selfsigned is selfSigned")
	assert.True(t, ca.Spec.IsCA)
	assert.Equal(t, "secret-relay-ca", ca.Spec.SecretName)
	assert.Equal(t, "secret-relay-selfsigned", ca.Spec.IssuerRef.Name)
	if assert.NotNil(t, caIssuer.Spec.CA, "secret-relay-ca is a CA Issuer") {
		assert.Equal(t, "secret-relay-ca", caIssuer.Spec.CA.SecretName)
	}
	assert.False(t, serving.Spec.IsCA)
	assert.Equal(t, "secret-relay-tls", serving.Spec.SecretName)
	assert.Equal(t, "secret-relay-ca", serving.Spec.IssuerRef.Name)
	assert.Equal(t, "Issuer", serving.Spec.IssuerRef.Kind)
	assert.Equal(t, []string{"secret-relay." + ns + ".svc", "secret-relay." + ns + ".svc.cluster.local"}, serving.Spec.DNSNames)

	assertDeploymentMountsTLS(t, objs, serving.Spec.SecretName)
}

func TestPlainCertManagerChain(t *testing.T) {
	var objs objects
	for _, f := range []string{"certificates.yaml", "deployment.yaml"} {
		objs = append(objs, readObjects(t, "manifests/install/"+f)...)
	}
	assertCertManagerChain(t, objs, "secret-relay")
}

func TestChartCertManagerChain(t *testing.T) {
	assertCertManagerChain(t, helmTemplate(t, "secret-relay"), "secret-relay")
	assertCertManagerChain(t, helmTemplate(t, "relay-system"), "relay-system")
}
