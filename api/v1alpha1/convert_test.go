package v1alpha1_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/secret-relay/secret-relay/api/v1alpha1"
)

// seedStore is the seed's store with its apiVersion changed, plus a status as the
// controller writes it and an inline caBundle ("PEM" in base64).
const seedStore = `
apiVersion: secret-relay.io/v1alpha1
kind: SecretStore
metadata: {name: remote-k8s-store, namespace: default}
spec:
  provider:
    kubernetes:
      server:
        url: https://172.31.86.147:6443
        caBundle: UEVN
        caProvider: {type: ConfigMap, name: kube-root-remote-ca.crt, key: ca.crt}
      remoteNamespace: default
      auth:
        token:
          bearerToken: {name: remote-sa-token, key: token}
status:
  capabilities: ReadOnly
  conditions:
  - {type: Ready, status: "True", reason: Valid, message: store validated, lastTransitionTime: "2025-04-15T13:04:01Z"}
`

func unstructuredFrom(t *testing.T, manifest string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	require.NoError(t, yaml.Unmarshal([]byte(manifest), &u.Object))
	return u
}

func TestSecretStoreFromUnstructured(t *testing.T) {
	assert := assert.New(t)

	s, err := v1alpha1.SecretStoreFromUnstructured(unstructuredFrom(t, seedStore))

	require.NoError(t, err)
	assert.Equal("remote-k8s-store", s.Name)
	assert.Equal("default", s.Namespace)
	k := s.Spec.Provider.Kubernetes
	require.NotNil(t, k)
	assert.Equal("https://172.31.86.147:6443", k.Server.URL)
	assert.Equal([]byte("PEM"), k.Server.CABundle, "caBundle is base64 in YAML and raw PEM in Go")
	assert.Equal(&v1alpha1.CAProvider{Type: v1alpha1.CAProviderTypeConfigMap, Name: "kube-root-remote-ca.crt", Key: "ca.crt"}, k.Server.CAProvider)
	assert.Equal(v1alpha1.SecretKeySelector{Name: "remote-sa-token", Key: "token"}, k.Auth.Token.BearerToken)
	assert.Nil(k.Auth.Cert)
	assert.Equal(v1alpha1.CapabilitiesReadOnly, s.Status.Capabilities)
	ready := s.Status.Conditions[0]
	assert.Equal(v1alpha1.ConditionReady, ready.Type)
	assert.Equal(metav1.ConditionTrue, ready.Status)
	assert.Equal(v1alpha1.ReasonValid, ready.Reason)
	assert.Equal(2025, ready.LastTransitionTime.Year())
}

func TestFromUnstructuredKinds(t *testing.T) {
	tests := map[string]struct {
		manifest string
		cluster  bool
		expErr   bool
	}{
		"A SecretStore should convert as a SecretStore.": {
			manifest: seedStore,
		},
		"A SecretStore should not convert as a ClusterSecretStore.": {
			manifest: seedStore, cluster: true, expErr: true,
		},
		"A ClusterSecretStore should convert as a ClusterSecretStore.": {
			manifest: "{apiVersion: secret-relay.io/v1alpha1, kind: ClusterSecretStore, metadata: {name: shared}, spec: {conditions: [{namespaces: [a]}]}}",
			cluster:  true,
		},
		"An object without apiVersion and kind should be accepted.": {
			manifest: "{metadata: {name: shared}}",
			cluster:  true,
		},
		"An object of the same kind in another group should be refused.": {
			manifest: "{apiVersion: external-secrets.io/v1beta1, kind: SecretStore, metadata: {name: remote-k8s-store}}",
			expErr:   true,
		},
		"A field of the wrong type should be an error.": {
			manifest: "{apiVersion: secret-relay.io/v1alpha1, kind: SecretStore, metadata: {name: x}, spec: {provider: {kubernetes: {server: {url: 42}}}}}",
			expErr:   true,
		},
	}
	for name, test := range tests {
		t.Run(name, func(t *testing.T) {
			u := unstructuredFrom(t, test.manifest)
			var err error
			if test.cluster {
				_, err = v1alpha1.ClusterSecretStoreFromUnstructured(u)
			} else {
				_, err = v1alpha1.SecretStoreFromUnstructured(u)
			}
			if test.expErr {
				assert.Error(t, err)
			} else {
				assert.NoError(t, err)
			}
		})
	}
}

func TestToUnstructured(t *testing.T) {
	assert := assert.New(t)
	in := &v1alpha1.ClusterSecretStore{
		ObjectMeta: metav1.ObjectMeta{Name: "shared"},
		Spec: v1alpha1.SecretStoreSpec{
			Provider:   v1alpha1.Provider{Kubernetes: &v1alpha1.KubernetesProvider{Server: v1alpha1.KubernetesServer{URL: "https://upstream", CABundle: []byte("PEM")}}},
			Conditions: []v1alpha1.ClusterSecretStoreCondition{{NamespaceRegexes: []string{"team-.*"}}},
		},
	}

	u, err := v1alpha1.ToUnstructured(in)

	require.NoError(t, err)
	assert.Equal(v1alpha1.ClusterSecretStoreGVK, u.GroupVersionKind())
	caBundle, _, err := unstructured.NestedString(u.Object, "spec", "provider", "kubernetes", "server", "caBundle")
	require.NoError(t, err)
	assert.Equal("UEVN", caBundle, "caBundle is base64 on the wire")
	out, err := v1alpha1.ClusterSecretStoreFromUnstructured(u)
	require.NoError(t, err)
	in.TypeMeta = out.TypeMeta
	assert.Equal(in, out)

	_, err = v1alpha1.ToUnstructured(&metav1.ObjectMeta{})
	assert.Error(err)
}
