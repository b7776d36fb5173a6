package e2e_test

import (
	"fmt"
	"maps"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/secret-relay/secret-relay/api/v1alpha1"
	"github.com/secret-relay/secret-relay/test/cluster"
)

// The seed's provider block, as a SecretStore has it.
const seedKubernetes = `
server:
  url: https://172.31.86.147:6443
  caProvider: {type: ConfigMap, name: kube-root-remote-ca.crt, key: ca.crt}
remoteNamespace: default
auth:
  token:
    bearerToken: {name: remote-sa-token, key: token}
`

// The same provider as a ClusterSecretStore must write it: every reference names
// its namespace.
const clusterKubernetes = `
server:
  url: https://172.31.86.147:6443
  caProvider: {type: ConfigMap, name: kube-root-remote-ca.crt, key: ca.crt, namespace: secret-relay}
auth:
  token:
    bearerToken: {name: remote-sa-token, key: token, namespace: secret-relay}
`

// storeObject builds a store of kind with spec.provider.kubernetes from YAML and
// optional extra spec fields.
func storeObject(t *testing.T, kind, name, kubernetesYAML string, extraSpec map[string]any) *unstructured.Unstructured {
	t.Helper()
	var k8s map[string]any
	require.NoError(t, yaml.Unmarshal([]byte(kubernetesYAML), &k8s))
	spec := map[string]any{"provider": map[string]any{"kubernetes": k8s}}
	for key, v := range extraSpec {
		spec[key] = v
	}
	u := &unstructured.Unstructured{Object: map[string]any{"spec": spec}}
	u.SetAPIVersion(v1alpha1.GroupVersion.String())
	u.SetKind(kind)
	u.SetName(name)
	if kind == v1alpha1.SecretStoreKind {
		u.SetNamespace("default")
	}
	return u
}

// stores returns the dynamic client for a store's kind and namespace.
func stores(dyn dynamic.Interface, u *unstructured.Unstructured) dynamic.ResourceInterface {
	if u.GetKind() == v1alpha1.ClusterSecretStoreKind {
		return dyn.Resource(v1alpha1.ClusterSecretStoreGVR)
	}
	return dyn.Resource(v1alpha1.SecretStoreGVR).Namespace(u.GetNamespace())
}

// TestCRD installs the CRDs on a real API server and checks what they accept,
// what they refuse and how kubectl prints them.
func TestCRD(t *testing.T) {
	cp := cluster.Start(t, "downstream", cluster.Options{CRDDirs: []string{"../../manifests/crds"}})
	dyn, err := dynamic.NewForConfig(cp.Config)
	require.NoError(t, err)

	t.Run("Validation", func(t *testing.T) {
		ss, css := v1alpha1.SecretStoreKind, v1alpha1.ClusterSecretStoreKind
		tests := map[string]struct {
			kind       string
			kubernetes string
			extraSpec  map[string]any
			// expErrs are parts of the API server's message; none means accepted.
			expErrs []string
		}{
			"The seed's SecretStore, CA from a ConfigMap and token auth, should be accepted.": {
				kind: ss, kubernetes: seedKubernetes,
			},
			"A SecretStore with an inline caBundle and cert auth should be accepted.": {
				kind: ss, kubernetes: `
server: {url: "https://upstream.example:6443/", caBundle: UEVN}
auth:
  cert:
    clientCert: {name: client-tls, key: tls.crt}
    clientKey: {name: client-tls, key: tls.key}
`,
			},
			"A ClusterSecretStore whose references name their namespace should be accepted.": {
				kind: css, kubernetes: clusterKubernetes,
				extraSpec: map[string]any{"conditions": []any{
					map[string]any{"namespaces": []any{"team-a"}},
					map[string]any{"namespaceSelector": map[string]any{"matchLabels": map[string]any{"team": "payments"}}},
					map[string]any{"namespaceRegexes": []any{"payments-.*"}},
				}},
			},
			"An http URL should be refused.": {
				kind: ss, kubernetes: strings.Replace(seedKubernetes, "https://", "http://", 1),
				expErrs: []string{"spec.provider.kubernetes.server.url", "should match '^https://"},
			},
			"Both token and cert auth should be refused with the CEL message.": {
				kind: ss, kubernetes: seedKubernetes + `
  cert:
    clientCert: {name: client-tls, key: tls.crt}
    clientKey: {name: client-tls, key: tls.key}
`,
				expErrs: []string{"spec.provider.kubernetes.auth", "auth needs exactly one of token, cert or serviceAccount"},
			},
			"An empty auth should be refused with the CEL message.": {
				kind: ss, kubernetes: strings.Split(seedKubernetes, "auth:")[0] + "auth: {}\n",
				expErrs: []string{"auth needs exactly one of token, cert or serviceAccount"},
			},
			"A store without auth should be refused.": {
				kind: ss, kubernetes: strings.Split(seedKubernetes, "auth:")[0],
				expErrs: []string{"kubernetes needs exactly one of auth or authRef"},
			},
			"A SecretStore with only authRef should be accepted: its kubeconfig gives server and credentials.": {
				kind: ss, kubernetes: "remoteNamespace: default\nauthRef: {name: upstream-kubeconfig, key: config}\n",
			},
			"authRef beside auth should be refused.": {
				kind: ss, kubernetes: seedKubernetes + "authRef: {name: upstream-kubeconfig, key: config}\n",
				expErrs: []string{"kubernetes needs exactly one of auth or authRef"},
			},
			"authRef beside a server CA should be refused: the kubeconfig gives the CA.": {
				kind: ss, kubernetes: "server: {url: \"https://upstream.example:6443\", caBundle: UEVN}\nauthRef: {name: upstream-kubeconfig, key: config}\n",
				expErrs: []string{"or neither with authRef, whose kubeconfig gives the CA"},
			},
			"A SecretStore's authRef naming a namespace should be refused.": {
				kind: ss, kubernetes: "authRef: {name: upstream-kubeconfig, key: config, namespace: kube-system}\n",
				expErrs: []string{"spec.provider.kubernetes.authRef.namespace: Forbidden"},
			},
			"A ClusterSecretStore's authRef without a namespace should be refused.": {
				kind: css, kubernetes: "authRef: {name: upstream-kubeconfig, key: config}\n",
				expErrs: []string{"spec.provider.kubernetes.authRef.namespace: Required value"},
			},
			"A store with neither server nor authRef should be refused.": {
				kind: ss, kubernetes: "auth: {token: {bearerToken: {name: remote-sa-token, key: token}}}\n",
				expErrs: []string{"server is required unless authRef's kubeconfig gives it"},
			},
			"A caProvider of type Foo should be refused.": {
				kind: ss, kubernetes: strings.Replace(seedKubernetes, "type: ConfigMap", "type: Foo", 1),
				expErrs: []string{"spec.provider.kubernetes.server.caProvider.type", `Unsupported value: "Foo"`},
			},
			"Both caBundle and caProvider should be refused.": {
				kind: ss, kubernetes: strings.Replace(seedKubernetes, "server:\n", "server:\n  caBundle: UEVN\n", 1),
				expErrs: []string{"server needs exactly one of caBundle or caProvider"},
			},
			"A caBundle that is not base64 should be refused.": {
				kind: ss, kubernetes: `
server: {url: "https://upstream.example:6443", caBundle: "not base64!"}
auth: {token: {bearerToken: {name: remote-sa-token, key: token}}}
`,
				expErrs: []string{"spec.provider.kubernetes.server.caBundle"},
			},
			"Cert auth without a client key should be refused.": {
				kind: ss, kubernetes: strings.Split(seedKubernetes, "auth:")[0] + `
auth:
  cert:
    clientCert: {name: client-tls, key: tls.crt}
`,
				expErrs: []string{"spec.provider.kubernetes.auth.cert.clientKey: Required value"},
			},
			"A bearer token reference without a key should be refused.": {
				kind: ss, kubernetes: strings.Replace(seedKubernetes, "{name: remote-sa-token, key: token}", "{name: remote-sa-token}", 1),
				expErrs: []string{"spec.provider.kubernetes.auth.token.bearerToken.key: Required value"},
			},
			"A remoteNamespace that is not a DNS label should be refused.": {
				kind: ss, kubernetes: strings.Replace(seedKubernetes, "remoteNamespace: default", "remoteNamespace: Not_A_Namespace", 1),
				expErrs: []string{"spec.provider.kubernetes.remoteNamespace"},
			},
			"A ClusterSecretStore reference without a namespace should be refused.": {
				kind: css, kubernetes: strings.Replace(clusterKubernetes, "key: token, namespace: secret-relay", "key: token", 1),
				expErrs: []string{"spec.provider.kubernetes.auth.token.bearerToken.namespace: Required value"},
			},
			"A SecretStore with serviceAccount auth of its own namespace should be accepted.": {
				kind: ss, kubernetes: strings.Split(seedKubernetes, "auth:")[0] + "auth: {serviceAccount: {name: relay-reader, audiences: [upstream]}}\n",
			},
			"A SecretStore's serviceAccount naming a namespace should be refused.": {
				kind: ss, kubernetes: strings.Split(seedKubernetes, "auth:")[0] + "auth: {serviceAccount: {name: relay-reader, namespace: kube-system, audiences: [upstream]}}\n",
				expErrs: []string{"spec.provider.kubernetes.auth.serviceAccount.namespace: Forbidden", "a SecretStore uses a ServiceAccount of its own namespace"},
			},
			"A ClusterSecretStore's serviceAccount without a namespace should be refused.": {
				kind: css, kubernetes: strings.Split(clusterKubernetes, "auth:")[0] + "auth: {serviceAccount: {name: relay-reader, audiences: [upstream]}}\n",
				expErrs: []string{"spec.provider.kubernetes.auth.serviceAccount.namespace: Required value"},
			},
			"Token and serviceAccount auth together should be refused with the CEL message.": {
				kind: ss, kubernetes: seedKubernetes + "  serviceAccount: {name: relay-reader, audiences: [upstream]}\n",
				expErrs: []string{"auth needs exactly one of token, cert or serviceAccount"},
			},
			"A ClusterSecretStore caProvider without a namespace should be refused.": {
				kind: css, kubernetes: strings.Replace(clusterKubernetes, "key: ca.crt, namespace: secret-relay", "key: ca.crt", 1),
				expErrs: []string{"spec.provider.kubernetes.server.caProvider.namespace: Required value"},
			},
			"A SecretStore reference with a namespace should be refused: it reads from its own.": {
				kind: ss, kubernetes: strings.Replace(seedKubernetes, "key: token}", "key: token, namespace: kube-system}", 1),
				expErrs: []string{
					"spec.provider.kubernetes.auth.token.bearerToken.namespace: Forbidden",
					"a SecretStore reads references from its own namespace",
				},
			},
			"A SecretStore caProvider with a namespace should be refused: it reads from its own.": {
				kind: ss, kubernetes: strings.Replace(seedKubernetes, "key: ca.crt}", "key: ca.crt, namespace: kube-system}", 1),
				expErrs: []string{"spec.provider.kubernetes.server.caProvider.namespace: Forbidden"},
			},
			"A SecretStore should not take conditions, which only a ClusterSecretStore has.": {
				kind: ss, kubernetes: seedKubernetes,
				extraSpec: map[string]any{"conditions": []any{map[string]any{"namespaces": []any{"team-a"}}}},
				expErrs:   []string{`unknown field "spec.conditions"`},
			},
		}
		// Sorted, so that each case's object gets the same name on every run.
		for i, name := range slices.Sorted(maps.Keys(tests)) {
			test := tests[name]
			obj := storeObject(t, test.kind, fmt.Sprintf("validation-%02d", i), test.kubernetes, test.extraSpec)
			t.Run(name, func(t *testing.T) {
				assert := assert.New(t)

				// Strict field validation, as kubectl apply does by default, so that
				// a field the schema does not know is an error rather than pruned.
				_, err := stores(dyn, obj).Create(cluster.Context(t), obj, metav1.CreateOptions{FieldValidation: "Strict"})

				if len(test.expErrs) == 0 {
					require.NoError(t, err)
					return
				}
				require.Error(t, err)
				t.Logf("refused: %v", err)
				assert.True(apierrors.IsInvalid(err) || apierrors.IsBadRequest(err), "expected a validation error, got %v", err)
				for _, exp := range test.expErrs {
					assert.Contains(err.Error(), exp)
				}
			})
		}
	})

	t.Run("An omitted remoteNamespace should be defaulted to default.", func(t *testing.T) {
		obj := storeObject(t, v1alpha1.SecretStoreKind, "defaulted", strings.Replace(seedKubernetes, "remoteNamespace: default\n", "", 1), nil)
		created, err := stores(dyn, obj).Create(cluster.Context(t), obj, metav1.CreateOptions{})
		require.NoError(t, err)
		s := secretStoreOf(t, created)
		assert.Equal(t, "default", s.Spec.Provider.Kubernetes.RemoteNamespace)
	})

	// The status subresource: the controller owns status, users own spec.
	obj := storeObject(t, v1alpha1.SecretStoreKind, "remote-k8s-store", seedKubernetes, nil)
	obj.Object["status"] = map[string]any{"capabilities": "ReadWrite"}
	created, err := stores(dyn, obj).Create(cluster.Context(t), obj, metav1.CreateOptions{})
	require.NoError(t, err)

	t.Run("A status given at creation should be dropped.", func(t *testing.T) {
		_, found, err := unstructured.NestedMap(created.Object, "status")
		require.NoError(t, err)
		assert.False(t, found, "status: %v", created.Object["status"])
	})

	t.Run("The status should be written through the status subresource.", func(t *testing.T) {
		assert := assert.New(t)
		created.Object["status"] = map[string]any{
			"capabilities": string(v1alpha1.CapabilitiesReadOnly),
			"conditions": []any{map[string]any{
				"type": v1alpha1.ConditionReady, "status": "True", "reason": v1alpha1.ReasonValid,
				"message": "store validated", "lastTransitionTime": time.Now().UTC().Format(time.RFC3339),
				"observedGeneration": created.GetGeneration(),
			}},
		}
		updated, err := stores(dyn, created).UpdateStatus(cluster.Context(t), created, metav1.UpdateOptions{})
		require.NoError(t, err)
		s := secretStoreOf(t, updated)
		assert.Equal(v1alpha1.CapabilitiesReadOnly, s.Status.Capabilities)
		require.Len(t, s.Status.Conditions, 1)
		assert.Equal(v1alpha1.ReasonValid, s.Status.Conditions[0].Reason)
		assert.Equal(created.GetGeneration(), updated.GetGeneration(), "a status write should not bump the generation")
	})

	t.Run("A status changed in a normal update should be ignored while the spec change is kept.", func(t *testing.T) {
		assert := assert.New(t)
		current, err := stores(dyn, obj).Get(cluster.Context(t), obj.GetName(), metav1.GetOptions{})
		require.NoError(t, err)
		require.NoError(t, unstructured.SetNestedField(current.Object, "team-a", "spec", "provider", "kubernetes", "remoteNamespace"))
		require.NoError(t, unstructured.SetNestedField(current.Object, "ReadWrite", "status", "capabilities"))

		updated, err := stores(dyn, current).Update(cluster.Context(t), current, metav1.UpdateOptions{})

		require.NoError(t, err)
		s := secretStoreOf(t, updated)
		assert.Equal("team-a", s.Spec.Provider.Kubernetes.RemoteNamespace)
		assert.Equal(v1alpha1.CapabilitiesReadOnly, s.Status.Capabilities, "status should only change through the subresource")
		assert.Equal(current.GetGeneration()+1, updated.GetGeneration(), "a spec change should bump the generation")
	})

	t.Run("An invalid status should be refused by the status subresource too.", func(t *testing.T) {
		current, err := stores(dyn, obj).Get(cluster.Context(t), obj.GetName(), metav1.GetOptions{})
		require.NoError(t, err)
		require.NoError(t, unstructured.SetNestedField(current.Object, "Everything", "status", "capabilities"))
		_, err = stores(dyn, current).UpdateStatus(cluster.Context(t), current, metav1.UpdateOptions{})
		assert.True(t, apierrors.IsInvalid(err), "expected Invalid, got %v", err)
	})

	kubectl := func(t *testing.T, args ...string) []string {
		t.Helper()
		cmd := exec.CommandContext(cluster.Context(t), cluster.BinaryDir()+"/kubectl", append([]string{"--kubeconfig", cp.Kubeconfig}, args...)...)
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, string(out))
		return strings.Split(strings.TrimSpace(string(out)), "\n")
	}

	t.Run("kubectl get secretstore -A should print the columns of the seed.", func(t *testing.T) {
		assert := assert.New(t)
		lines := kubectl(t, "get", "secretstore", "-A")
		t.Logf("\n%s", strings.Join(lines, "\n"))
		assert.Equal([]string{"NAMESPACE", "NAME", "AGE", "STATUS", "CAPABILITIES", "READY"}, strings.Fields(lines[0]))
		row := findRow(lines, "remote-k8s-store")
		require.NotNil(t, row, "no row for remote-k8s-store")
		assert.Equal("default", row[0])
		assert.Equal([]string{"Valid", "ReadOnly", "True"}, row[3:])
	})

	t.Run("kubectl get clustersecretstore should print the same columns without a namespace.", func(t *testing.T) {
		lines := kubectl(t, "get", "clustersecretstore")
		assert.Equal(t, []string{"NAME", "AGE", "STATUS", "CAPABILITIES", "READY"}, strings.Fields(lines[0]))
	})

	t.Run("The short names and the secret-relay category should work.", func(t *testing.T) {
		assert := assert.New(t)
		assert.NotNil(findRow(kubectl(t, "get", "ss", "-n", "default"), "remote-k8s-store"))
		assert.NotEmpty(kubectl(t, "get", "css", "-o", "name"))
		all := strings.Join(kubectl(t, "get", "secret-relay", "-A", "-o", "name"), "\n")
		assert.Contains(all, "secretstore.secret-relay.io/remote-k8s-store")
		assert.Contains(all, "clustersecretstore.secret-relay.io/")
	})
}

// secretStoreOf converts a SecretStore read with the dynamic client.
func secretStoreOf(t *testing.T, u *unstructured.Unstructured) *v1alpha1.SecretStore {
	t.Helper()
	var s v1alpha1.SecretStore
	require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &s))
	return &s
}

// findRow returns the fields of the first line whose NAME column is name.
func findRow(lines []string, name string) []string {
	for _, l := range lines[1:] {
		fields := strings.Fields(l)
		for _, f := range fields[:min(2, len(fields))] {
			if f == name {
				return fields
			}
		}
	}
	return nil
}
