package remote_test

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/yaml"

	"github.com/secret-relay/secret-relay/api/v1alpha1"
	"github.com/secret-relay/secret-relay/remote"
)

// FuzzStoreSpec feeds arbitrary store objects through what admission does with a
// store: convert it, check a namespace against its conditions, and resolve its
// endpoint. A store is user input; none of it may crash the relay.
func FuzzStoreSpec(f *testing.F) {
	f.Add(`{apiVersion: secret-relay.io/v1alpha1, kind: SecretStore, metadata: {name: s, namespace: ns}, spec: {provider: {kubernetes: {server: {url: "https://h", caProvider: {type: ConfigMap, name: ca, key: ca.crt}}, auth: {token: {bearerToken: {name: tok, key: token}}}}}}}`)
	f.Add(`{apiVersion: secret-relay.io/v1alpha1, kind: ClusterSecretStore, metadata: {name: c}, spec: {conditions: [{namespaces: [ns]}, {namespaceSelector: {matchLabels: {a: b}}}, {namespaceRegexes: ["^n.*$", "("]}], provider: {kubernetes: {server: {url: "https://h", caBundle: Zm9v}, auth: {cert: {clientCert: {name: tok, key: token, namespace: ns}, clientKey: {name: tok, key: token, namespace: ns}}}}}}}`)
	f.Add(`{apiVersion: secret-relay.io/v1alpha1, kind: ClusterSecretStore, metadata: {name: c}, spec: {conditions: [{namespaceSelector: {matchExpressions: [{key: a, operator: Bogus}]}}]}}`)
	f.Add(`{kind: SecretStore, spec: {provider: {kubernetes: null}}}`)
	f.Add(`{kind: SecretStore, spec: 7}`)
	refs := remote.ClientsetRefReader(fake.NewClientset(
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "tok", Namespace: "ns"}, Data: map[string][]byte{"token": []byte("t")}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "ca", Namespace: "ns"}, Data: map[string]string{"ca.crt": "not a pem"}},
	))
	f.Fuzz(func(t *testing.T, manifest string) {
		store := decodeStore([]byte(manifest))
		if store == nil {
			return
		}
		_, _ = store.AllowsNamespace("ns", map[string]string{"a": "b"})
		_ = store.RemoteNamespace()
		_ = store.String()
		if ep, err := remote.ResolveEndpoint(context.Background(), refs, store); err == nil {
			_, _ = ep.RESTConfig()
		}
	})
}

// decodeStore decodes a store manifest of either kind into a Store, as the typed
// informers would, or returns nil when it is not one.
func decodeStore(manifest []byte) *remote.Store {
	var meta metav1.TypeMeta
	if yaml.Unmarshal(manifest, &meta) != nil {
		return nil
	}
	switch meta.Kind {
	case v1alpha1.SecretStoreKind:
		var s v1alpha1.SecretStore
		if yaml.Unmarshal(manifest, &s) != nil {
			return nil
		}
		return remote.StoreFromSecretStore(&s)
	case v1alpha1.ClusterSecretStoreKind:
		var s v1alpha1.ClusterSecretStore
		if yaml.Unmarshal(manifest, &s) != nil {
			return nil
		}
		return remote.StoreFromClusterSecretStore(&s)
	}
	return nil
}
