package remote_test

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/secret-relay/secret-relay/api/v1alpha1"
	"github.com/secret-relay/secret-relay/certs/certstest"
	"github.com/secret-relay/secret-relay/relay"
	"github.com/secret-relay/secret-relay/remote"
)

const (
	upstreamURL = "https://172.31.86.147:6443"
	// tokenValue is what no error message may ever contain.
	tokenValue = "s3cr3t-token-value"
)

// testPKI is one CA and a client certificate it issued, shared by the tests.
type testPKI struct {
	caPEM            []byte
	client, stranger certstest.KeyPair
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	ca, err := certstest.NewCA("upstream-ca")
	require.NoError(t, err)
	client, err := ca.ClientCert("secret-relay")
	require.NoError(t, err)
	stranger, err := ca.ClientCert("someone-else")
	require.NoError(t, err)
	return testPKI{caPEM: ca.CertPEM(), client: client, stranger: stranger}
}

func secret(ns, name string, data map[string][]byte) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Data: data}
}

func configMap(ns, name string, data map[string]string, binary map[string][]byte) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Data: data, BinaryData: binary}
}

// seedSpec is the seed's remote-k8s-store: CA from a ConfigMap, token auth.
func seedSpec() remote.StoreSpec {
	return remote.StoreSpec{Provider: v1alpha1.Provider{Kubernetes: &v1alpha1.KubernetesProvider{
		Server: &v1alpha1.KubernetesServer{
			URL:        upstreamURL,
			CAProvider: &v1alpha1.CAProvider{Type: v1alpha1.CAProviderTypeConfigMap, Name: "kube-root-remote-ca.crt", Key: "ca.crt"},
		},
		RemoteNamespace: "default",
		Auth: &v1alpha1.KubernetesAuth{Token: &v1alpha1.TokenAuth{
			BearerToken: v1alpha1.SecretKeySelector{Name: "remote-sa-token", Key: "token"},
		}},
	}}}
}

func secretStore(mutate func(k *v1alpha1.KubernetesProvider)) *remote.Store {
	spec := seedSpec()
	if mutate != nil {
		mutate(spec.Provider.Kubernetes)
	}
	return &remote.Store{Kind: v1alpha1.SecretStoreKind, Namespace: "default", Name: "remote-k8s-store", Spec: spec}
}

// clusterStore is the seed store as a ClusterSecretStore whose references live in
// the secret-relay namespace.
func clusterStore(mutate func(k *v1alpha1.KubernetesProvider)) *remote.Store {
	spec := seedSpec()
	spec.Provider.Kubernetes.Server.CAProvider.Namespace = "secret-relay"
	spec.Provider.Kubernetes.Auth.Token.BearerToken.Namespace = "secret-relay"
	if mutate != nil {
		mutate(spec.Provider.Kubernetes)
	}
	return &remote.Store{Kind: v1alpha1.ClusterSecretStoreKind, Name: "shared", Spec: spec}
}

func accountAuth(ns string, audiences ...string) *v1alpha1.KubernetesAuth {
	return &v1alpha1.KubernetesAuth{ServiceAccount: &v1alpha1.ServiceAccountAuth{Name: "relay-reader", Namespace: ns, Audiences: audiences}}
}

func certAuth(ns string) *v1alpha1.KubernetesAuth {
	return &v1alpha1.KubernetesAuth{Cert: &v1alpha1.CertAuth{
		ClientCert: v1alpha1.SecretKeySelector{Name: "client-tls", Key: "tls.crt", Namespace: ns},
		ClientKey:  v1alpha1.SecretKeySelector{Name: "client-tls", Key: "tls.key", Namespace: ns},
	}}
}

// resolveCase is one store for ResolveEndpoint, the objects downstream, and what it
// should resolve to.
type resolveCase struct {
	store   *remote.Store
	objects []runtime.Object
	// failReads makes every read fail with this error instead.
	failReads   error
	expEndpoint remote.Endpoint
	// expErr is a part of the message; expConfigErr says it is a ConfigError.
	expErr       string
	expConfigErr bool
}

func TestResolveEndpoint(t *testing.T) {
	pki := newTestPKI(t)
	// The downstream objects of the seed, in default, and the same in secret-relay
	// for the cluster store.
	seedObjects := func(ns string) []runtime.Object {
		return []runtime.Object{
			configMap(ns, "kube-root-remote-ca.crt", map[string]string{"ca.crt": string(pki.caPEM)}, nil),
			secret(ns, "remote-sa-token", map[string][]byte{"token": []byte(tokenValue + "\n")}),
			secret(ns, "client-tls", map[string][]byte{"tls.crt": pki.client.CertPEM, "tls.key": pki.client.KeyPEM}),
		}
	}

	// kubeconfig is a Secret upstream-kubeconfig in ns whose key config holds a
	// kubeconfig for upstreamURL, its CA and a token, changed by edit.
	kubeconfig := func(ns string, edit func(c *clientcmdapi.Config)) runtime.Object {
		c := clientcmdapi.NewConfig()
		c.Clusters["upstream"] = &clientcmdapi.Cluster{Server: upstreamURL, CertificateAuthorityData: pki.caPEM}
		c.AuthInfos["reader"] = &clientcmdapi.AuthInfo{Token: tokenValue}
		c.Contexts["upstream"] = &clientcmdapi.Context{Cluster: "upstream", AuthInfo: "reader"}
		c.CurrentContext = "upstream"
		if edit != nil {
			edit(c)
		}
		raw, err := clientcmd.Write(*c)
		require.NoError(t, err)
		return secret(ns, "upstream-kubeconfig", map[string][]byte{"config": raw})
	}
	authRef := func(ns string) func(k *v1alpha1.KubernetesProvider) {
		return func(k *v1alpha1.KubernetesProvider) {
			k.Server, k.Auth = nil, nil
			k.AuthRef = &v1alpha1.SecretKeySelector{Name: "upstream-kubeconfig", Key: "config", Namespace: ns}
		}
	}
	refusedKubeconfig := func(edit func(c *clientcmdapi.Config), expErr string) resolveCase {
		return resolveCase{store: secretStore(authRef("")), objects: []runtime.Object{kubeconfig("default", edit)}, expErr: expErr, expConfigErr: true}
	}

	tests := map[string]resolveCase{
		"The seed's SecretStore should resolve to its URL, the ConfigMap's CA and the trimmed token.": {
			store:       secretStore(nil),
			objects:     seedObjects("default"),
			expEndpoint: remote.Endpoint{URL: upstreamURL, CA: pki.caPEM, Token: tokenValue},
		},
		"A CA in a ConfigMap's binaryData should be read as well as one in data.": {
			store: secretStore(nil),
			objects: append(seedObjects("default")[1:],
				configMap("default", "kube-root-remote-ca.crt", nil, map[string][]byte{"ca.crt": pki.caPEM})),
			expEndpoint: remote.Endpoint{URL: upstreamURL, CA: pki.caPEM, Token: tokenValue},
		},
		"A CA from a Secret should be read from the Secret's data.": {
			store: secretStore(func(k *v1alpha1.KubernetesProvider) {
				k.Server.CAProvider = &v1alpha1.CAProvider{Type: v1alpha1.CAProviderTypeSecret, Name: "remote-ca", Key: "ca.crt"}
			}),
			objects:     append(seedObjects("default"), secret("default", "remote-ca", map[string][]byte{"ca.crt": pki.caPEM})),
			expEndpoint: remote.Endpoint{URL: upstreamURL, CA: pki.caPEM, Token: tokenValue},
		},
		"An inline caBundle should be used as it is, without reading anything.": {
			store: secretStore(func(k *v1alpha1.KubernetesProvider) {
				k.Server.CAProvider = nil
				k.Server.CABundle = pki.caPEM
			}),
			objects:     []runtime.Object{secret("default", "remote-sa-token", map[string][]byte{"token": []byte(tokenValue)})},
			expEndpoint: remote.Endpoint{URL: upstreamURL, CA: pki.caPEM, Token: tokenValue},
		},
		"Certificate auth should resolve to the client certificate and key.": {
			store:       secretStore(func(k *v1alpha1.KubernetesProvider) { k.Auth = certAuth("") }),
			objects:     seedObjects("default"),
			expEndpoint: remote.Endpoint{URL: upstreamURL, CA: pki.caPEM, ClientCert: pki.client.CertPEM, ClientKey: pki.client.KeyPEM},
		},
		"ServiceAccount auth should name a ServiceAccount of the SecretStore's namespace, and its audiences.": {
			store:   secretStore(func(k *v1alpha1.KubernetesProvider) { k.Auth = accountAuth("", "upstream") }),
			objects: seedObjects("default"),
			expEndpoint: remote.Endpoint{URL: upstreamURL, CA: pki.caPEM,
				ServiceAccount: &remote.ServiceAccountRef{Namespace: "default", Name: "relay-reader", Audiences: []string{"upstream"}}},
		},
		"A SecretStore's ServiceAccount of another namespace should be a configuration error.": {
			store:        secretStore(func(k *v1alpha1.KubernetesProvider) { k.Auth = accountAuth("kube-system", "upstream") }),
			objects:      seedObjects("default"),
			expErr:       `auth.serviceAccount.namespace: a SecretStore reads references from its own namespace, not "kube-system"`,
			expConfigErr: true,
		},
		"A ClusterSecretStore's ServiceAccount should name its namespace.": {
			store:        clusterStore(func(k *v1alpha1.KubernetesProvider) { k.Auth = accountAuth("", "upstream") }),
			objects:      seedObjects("secret-relay"),
			expErr:       "auth.serviceAccount.namespace is required in a ClusterSecretStore",
			expConfigErr: true,
		},
		"A ServiceAccount without audiences should be a configuration error: its token would be valid downstream.": {
			store:        clusterStore(func(k *v1alpha1.KubernetesProvider) { k.Auth = accountAuth("secret-relay") }),
			objects:      seedObjects("secret-relay"),
			expErr:       "audiences must name the audiences the upstream accepts",
			expConfigErr: true,
		},
		"ServiceAccount auth beside a token should be a configuration error.": {
			store: secretStore(func(k *v1alpha1.KubernetesProvider) {
				k.Auth.ServiceAccount = accountAuth("", "upstream").ServiceAccount
			}),
			objects:      seedObjects("default"),
			expErr:       "exactly one of token, cert or serviceAccount, not several",
			expConfigErr: true,
		},
		"authRef should resolve to its kubeconfig's server, CA and token.": {
			store:       secretStore(authRef("")),
			objects:     []runtime.Object{kubeconfig("default", nil)},
			expEndpoint: remote.Endpoint{URL: upstreamURL, CA: pki.caPEM, Token: tokenValue},
		},
		"authRef should resolve to its kubeconfig's client certificate, and server.url may repeat its server.": {
			store: secretStore(func(k *v1alpha1.KubernetesProvider) {
				authRef("")(k)
				k.Server = &v1alpha1.KubernetesServer{URL: upstreamURL}
			}),
			objects: []runtime.Object{kubeconfig("default", func(c *clientcmdapi.Config) {
				c.AuthInfos["reader"] = &clientcmdapi.AuthInfo{ClientCertificateData: pki.client.CertPEM, ClientKeyData: pki.client.KeyPEM}
			})},
			expEndpoint: remote.Endpoint{URL: upstreamURL, CA: pki.caPEM, ClientCert: pki.client.CertPEM, ClientKey: pki.client.KeyPEM},
		},
		"A ClusterSecretStore's authRef should read the namespace it names.": {
			store:       clusterStore(authRef("secret-relay")),
			objects:     []runtime.Object{kubeconfig("secret-relay", nil)},
			expEndpoint: remote.Endpoint{URL: upstreamURL, CA: pki.caPEM, Token: tokenValue},
		},
		"A SecretStore's authRef of another namespace should be a configuration error.": {
			store:        secretStore(authRef("kube-system")),
			objects:      []runtime.Object{kubeconfig("kube-system", nil)},
			expErr:       `authRef.namespace: a SecretStore reads references from its own namespace, not "kube-system"`,
			expConfigErr: true,
		},
		"A kubeconfig that runs an exec plugin should be refused: secret-relay runs nothing.": refusedKubeconfig(func(c *clientcmdapi.Config) {
			c.AuthInfos["reader"] = &clientcmdapi.AuthInfo{Exec: &clientcmdapi.ExecConfig{Command: "/bin/sh", APIVersion: "client.authentication.k8s.io/v1"}}
		}, `user "reader" runs an exec plugin or auth provider, which secret-relay never runs`),
		"A kubeconfig naming a token file should be refused: secret-relay reads no file.": refusedKubeconfig(func(c *clientcmdapi.Config) {
			c.AuthInfos["reader"] = &clientcmdapi.AuthInfo{TokenFile: "/var/run/secrets/kubernetes.io/serviceaccount/token"}
		}, `user "reader" names a file, which secret-relay does not read`),
		"A kubeconfig naming a CA file should be refused.": refusedKubeconfig(func(c *clientcmdapi.Config) {
			c.Clusters["upstream"] = &clientcmdapi.Cluster{Server: upstreamURL, CertificateAuthority: "/etc/kubernetes/pki/ca.crt"}
		}, `cluster "upstream" names a certificate-authority file`),
		"A kubeconfig that skips TLS verification should be refused.": refusedKubeconfig(func(c *clientcmdapi.Config) {
			c.Clusters["upstream"] = &clientcmdapi.Cluster{Server: upstreamURL, InsecureSkipTLSVerify: true}
		}, `cluster "upstream" skips TLS verification`),
		"A kubeconfig whose server is http should be refused.": refusedKubeconfig(func(c *clientcmdapi.Config) {
			c.Clusters["upstream"].Server = "http://172.31.86.147:6443"
		}, `cluster "upstream": server must be an https URL with a host`),
		"A kubeconfig without a current context should be refused.": refusedKubeconfig(func(c *clientcmdapi.Config) {
			c.CurrentContext = ""
		}, `has no current-context`),
		"A kubeconfig whose context names a missing user should be refused.": refusedKubeconfig(func(c *clientcmdapi.Config) {
			c.Contexts["upstream"].AuthInfo = "nobody"
		}, `context "upstream" names user "nobody", which it does not define`),
		"A kubeconfig that does not parse should be refused without quoting it.": {
			store:        secretStore(authRef("")),
			objects:      []runtime.Object{secret("default", "upstream-kubeconfig", map[string][]byte{"config": []byte("token: " + tokenValue + "\n\t- [")})},
			expErr:       `the kubeconfig in Secret default/upstream-kubeconfig key "config" does not parse`,
			expConfigErr: true,
		},
		"A server.url other than the kubeconfig's should be refused.": {
			store: secretStore(func(k *v1alpha1.KubernetesProvider) {
				authRef("")(k)
				k.Server = &v1alpha1.KubernetesServer{URL: "https://elsewhere.example:6443"}
			}),
			objects:      []runtime.Object{kubeconfig("default", nil)},
			expErr:       "server.url differs from the server of the kubeconfig",
			expConfigErr: true,
		},
		"authRef beside auth should be a configuration error.": {
			store: secretStore(func(k *v1alpha1.KubernetesProvider) {
				k.AuthRef = &v1alpha1.SecretKeySelector{Name: "upstream-kubeconfig", Key: "config"}
			}),
			objects:      append(seedObjects("default"), kubeconfig("default", nil)),
			expErr:       "needs exactly one of auth or authRef, not both",
			expConfigErr: true,
		},
		"A ClusterSecretStore should read each reference from the namespace it names.": {
			store:       clusterStore(nil),
			objects:     seedObjects("secret-relay"),
			expEndpoint: remote.Endpoint{URL: upstreamURL, CA: pki.caPEM, Token: tokenValue},
		},
		"A ClusterSecretStore reference without a namespace should be a configuration error.": {
			store: clusterStore(func(k *v1alpha1.KubernetesProvider) {
				k.Auth.Token.BearerToken.Namespace = ""
			}),
			objects:      seedObjects("secret-relay"),
			expErr:       "auth.token.bearerToken.namespace is required in a ClusterSecretStore",
			expConfigErr: true,
		},
		"A ClusterSecretStore caProvider without a namespace should be a configuration error.": {
			store: clusterStore(func(k *v1alpha1.KubernetesProvider) {
				k.Server.CAProvider.Namespace = ""
			}),
			objects:      seedObjects("secret-relay"),
			expErr:       "server.caProvider.namespace is required in a ClusterSecretStore",
			expConfigErr: true,
		},
		"A SecretStore reference to another namespace should be refused, not read.": {
			store: secretStore(func(k *v1alpha1.KubernetesProvider) {
				k.Auth.Token.BearerToken.Namespace = "kube-system"
			}),
			objects:      append(seedObjects("default"), seedObjects("kube-system")...),
			expErr:       `a SecretStore reads references from its own namespace, not "kube-system"`,
			expConfigErr: true,
		},
		"A SecretStore reference that names its own namespace should be tolerated.": {
			store: secretStore(func(k *v1alpha1.KubernetesProvider) {
				k.Auth.Token.BearerToken.Namespace = "default"
			}),
			objects:     seedObjects("default"),
			expEndpoint: remote.Endpoint{URL: upstreamURL, CA: pki.caPEM, Token: tokenValue},
		},
		"A missing token Secret should be a configuration error naming it.": {
			store:        secretStore(nil),
			objects:      seedObjects("default")[:1],
			expErr:       `store="SecretStore/remote-k8s-store": Secret default/remote-sa-token not found`,
			expConfigErr: true,
		},
		"A token Secret without the key should be a configuration error naming the key.": {
			store: secretStore(nil),
			objects: []runtime.Object{
				seedObjects("default")[0],
				secret("default", "remote-sa-token", map[string][]byte{"other": []byte(tokenValue)}),
			},
			expErr:       `Secret default/remote-sa-token has no key "token"`,
			expConfigErr: true,
		},
		"A token of only whitespace should be a configuration error.": {
			store: secretStore(nil),
			objects: []runtime.Object{
				seedObjects("default")[0],
				secret("default", "remote-sa-token", map[string][]byte{"token": []byte(" \n")}),
			},
			expErr:       `the bearer token in Secret default/remote-sa-token key "token" is empty`,
			expConfigErr: true,
		},
		"A missing CA ConfigMap should be a configuration error naming it.": {
			store:        secretStore(nil),
			objects:      seedObjects("default")[1:],
			expErr:       "ConfigMap default/kube-root-remote-ca.crt not found",
			expConfigErr: true,
		},
		"A CA ConfigMap without the key should be a configuration error naming the key.": {
			store: secretStore(nil),
			objects: append(seedObjects("default")[1:],
				configMap("default", "kube-root-remote-ca.crt", map[string]string{"ca.pem": string(pki.caPEM)}, nil)),
			expErr:       `ConfigMap default/kube-root-remote-ca.crt has no key "ca.crt"`,
			expConfigErr: true,
		},
		"A CA that is not PEM should be a configuration error naming where it came from.": {
			store: secretStore(nil),
			objects: append(seedObjects("default")[1:],
				configMap("default", "kube-root-remote-ca.crt", map[string]string{"ca.crt": "not a certificate"}, nil)),
			expErr:       `ConfigMap default/kube-root-remote-ca.crt key "ca.crt" holds no PEM certificate`,
			expConfigErr: true,
		},
		"An unknown caProvider type should be a configuration error.": {
			store: secretStore(func(k *v1alpha1.KubernetesProvider) {
				k.Server.CAProvider.Type = "Foo"
			}),
			objects:      seedObjects("default"),
			expErr:       `caProvider.type "Foo" is not ConfigMap or Secret`,
			expConfigErr: true,
		},
		"Both caBundle and caProvider should be a configuration error.": {
			store:        secretStore(func(k *v1alpha1.KubernetesProvider) { k.Server.CABundle = pki.caPEM }),
			objects:      seedObjects("default"),
			expErr:       "exactly one of caBundle or caProvider",
			expConfigErr: true,
		},
		"No CA at all should be a configuration error.": {
			store:        secretStore(func(k *v1alpha1.KubernetesProvider) { k.Server.CAProvider = nil }),
			objects:      seedObjects("default"),
			expErr:       "needs caBundle or caProvider",
			expConfigErr: true,
		},
		"Both token and cert auth should be a configuration error.": {
			store: secretStore(func(k *v1alpha1.KubernetesProvider) {
				k.Auth.Cert = certAuth("").Cert
			}),
			objects:      seedObjects("default"),
			expErr:       "exactly one of token, cert or serviceAccount, not several",
			expConfigErr: true,
		},
		"No auth should be a configuration error.": {
			store:        secretStore(func(k *v1alpha1.KubernetesProvider) { k.Auth = &v1alpha1.KubernetesAuth{} }),
			objects:      seedObjects("default"),
			expErr:       "auth needs exactly one of token, cert or serviceAccount",
			expConfigErr: true,
		},
		"A client certificate with another certificate's key should be a configuration error.": {
			store: secretStore(func(k *v1alpha1.KubernetesProvider) { k.Auth = certAuth("") }),
			objects: append(seedObjects("default")[:1],
				secret("default", "client-tls", map[string][]byte{"tls.crt": pki.client.CertPEM, "tls.key": pki.stranger.KeyPEM})),
			expErr:       "are not a valid pair",
			expConfigErr: true,
		},
		"A cert Secret without the key should be a configuration error naming the key.": {
			store: secretStore(func(k *v1alpha1.KubernetesProvider) { k.Auth = certAuth("") }),
			objects: append(seedObjects("default")[:1],
				secret("default", "client-tls", map[string][]byte{"tls.crt": pki.client.CertPEM})),
			expErr:       `Secret default/client-tls has no key "tls.key"`,
			expConfigErr: true,
		},
		"An http URL should be a configuration error.": {
			store:        secretStore(func(k *v1alpha1.KubernetesProvider) { k.Server.URL = "http://172.31.86.147:6443" }),
			objects:      seedObjects("default"),
			expErr:       "server.url: must be an https URL with a host",
			expConfigErr: true,
		},
		"A URL with credentials in it should be a configuration error.": {
			store:        secretStore(func(k *v1alpha1.KubernetesProvider) { k.Server.URL = "https://admin:hunter2@172.31.86.147:6443" }),
			objects:      seedObjects("default"),
			expErr:       "server.url: must not carry credentials",
			expConfigErr: true,
		},
		"A store without a kubernetes provider should be a configuration error.": {
			store:        &remote.Store{Kind: v1alpha1.SecretStoreKind, Namespace: "default", Name: "empty"},
			expErr:       "spec.provider.kubernetes is required",
			expConfigErr: true,
		},
		"A failure to read a reference other than not-found should not be a configuration error.": {
			store:     secretStore(nil),
			objects:   seedObjects("default"),
			failReads: apierrors.NewInternalError(errors.New("etcd is down")),
			expErr:    "could not read ConfigMap default/kube-root-remote-ca.crt for SecretStore default/remote-k8s-store",
		},
	}
	for name, test := range tests {
		t.Run(name, func(t *testing.T) {
			assert := assert.New(t)
			client := fake.NewClientset(test.objects...)
			if test.failReads != nil {
				client.PrependReactor("get", "*", func(clienttesting.Action) (bool, runtime.Object, error) {
					return true, nil, test.failReads
				})
			}

			ep, err := remote.ResolveEndpoint(t.Context(), remote.ClientsetRefReader(client), test.store)

			if test.expErr == "" {
				require.NoError(t, err)
				assert.Equal(test.expEndpoint, ep)
				if ep.ServiceAccount == nil { // whose tokens come from Clients
					_, err := ep.RESTConfig()
					assert.NoError(err, "a resolved endpoint should make a client configuration")
				}
				return
			}
			require.Error(t, err)
			assert.Contains(err.Error(), test.expErr)
			assert.Equal(test.expConfigErr, remote.IsConfigError(err))
			assert.Equal(test.expConfigErr, errors.Is(err, relay.ErrStoreMisconfigured))
			assert.Equal(remote.Endpoint{}, ep)
			for _, value := range []string{tokenValue, "hunter2", string(pki.client.KeyPEM), string(pki.stranger.KeyPEM)} {
				assert.NotContains(err.Error(), value, "an error must never hold a secret value")
			}
		})
	}
}

func TestResolveEndpointReadsOnlyTheStoreNamespace(t *testing.T) {
	assert := assert.New(t)
	client := fake.NewClientset()
	store := secretStore(func(k *v1alpha1.KubernetesProvider) { k.Auth.Token.BearerToken.Namespace = "kube-system" })
	store.Spec.Provider.Kubernetes.Server.CAProvider.Namespace = "kube-system"

	_, err := remote.ResolveEndpoint(t.Context(), remote.ClientsetRefReader(client), store)

	assert.True(remote.IsConfigError(err))
	assert.Empty(client.Actions(), "a SecretStore must not read anything outside its namespace")
}

func TestConfigError(t *testing.T) {
	assert := assert.New(t)
	_, err := remote.ResolveEndpoint(t.Context(), remote.ClientsetRefReader(fake.NewClientset()), secretStore(nil))

	cfgErr := relay.AsError(err)
	require.NotNil(t, cfgErr, "%v", err)
	assert.Equal(relay.ErrStoreMisconfigured, cfgErr.Reason)
	assert.Equal(relay.StoreRef{Kind: relay.SecretStoreKind, Name: "remote-k8s-store"}, cfgErr.Store)
	assert.Equal("default", cfgErr.Namespace)
	assert.Equal("ConfigMap default/kube-root-remote-ca.crt not found", remote.ConfigMessage(err), "the message is what a status condition shows")
	assert.True(remote.IsConfigError(errors.Join(errors.New("outer"), err)), "a wrapped ConfigError is still one")
	assert.False(remote.IsConfigError(errors.New("connection refused")))
}

func TestAllowsNamespace(t *testing.T) {
	css := func(conditions ...v1alpha1.ClusterSecretStoreCondition) *remote.Store {
		s := clusterStore(nil)
		s.Spec.Conditions = conditions
		return s
	}
	team := map[string]string{"team": "payments", "kubernetes.io/metadata.name": "payments-prod"}

	tests := map[string]struct {
		store        *remote.Store
		namespace    string
		labels       map[string]string
		expAllowed   bool
		expConfigErr bool
	}{
		"A SecretStore should serve its own namespace.": {
			store: secretStore(nil), namespace: "default", expAllowed: true,
		},
		"A SecretStore should not serve another namespace.": {
			store: secretStore(nil), namespace: "payments-prod", expAllowed: false,
		},
		"A SecretStore should ignore conditions, which only a ClusterSecretStore has.": {
			store: func() *remote.Store {
				s := secretStore(nil)
				s.Spec.Conditions = []v1alpha1.ClusterSecretStoreCondition{{Namespaces: []string{"payments-prod"}}}
				return s
			}(),
			namespace: "payments-prod", expAllowed: false,
		},
		"A ClusterSecretStore without conditions should serve every namespace.": {
			store: css(), namespace: "anything", expAllowed: true,
		},
		"A namespace in a condition's list should be allowed.": {
			store: css(v1alpha1.ClusterSecretStoreCondition{Namespaces: []string{"a", "payments-prod"}}), namespace: "payments-prod", expAllowed: true,
		},
		"A namespace in no condition's list should be refused.": {
			store: css(v1alpha1.ClusterSecretStoreCondition{Namespaces: []string{"a", "b"}}), namespace: "payments-prod", expAllowed: false,
		},
		"A namespace whose labels match a selector should be allowed.": {
			store:     css(v1alpha1.ClusterSecretStoreCondition{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "payments"}}}),
			namespace: "payments-prod", labels: team, expAllowed: true,
		},
		"A namespace whose labels do not match a selector should be refused.": {
			store: css(v1alpha1.ClusterSecretStoreCondition{NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "team", Operator: metav1.LabelSelectorOpIn, Values: []string{"search"}},
			}}}),
			namespace: "payments-prod", labels: team, expAllowed: false,
		},
		"An empty selector should match every namespace, as everywhere in Kubernetes.": {
			store:     css(v1alpha1.ClusterSecretStoreCondition{NamespaceSelector: &metav1.LabelSelector{}}),
			namespace: "payments-prod", expAllowed: true,
		},
		"A regex that matches the whole name should allow the namespace.": {
			store: css(v1alpha1.ClusterSecretStoreCondition{NamespaceRegexes: []string{"payments-.*"}}), namespace: "payments-prod", expAllowed: true,
		},
		"A regex that matches only part of the name should not allow the namespace.": {
			store: css(v1alpha1.ClusterSecretStoreCondition{NamespaceRegexes: []string{"payments"}}), namespace: "payments-prod", expAllowed: false,
		},
		"An alternation should be anchored as a whole.": {
			store: css(v1alpha1.ClusterSecretStoreCondition{NamespaceRegexes: []string{"a|payments"}}), namespace: "payments-prod", expAllowed: false,
		},
		"Any matching entry should allow the namespace.": {
			store: css(
				v1alpha1.ClusterSecretStoreCondition{Namespaces: []string{"a"}},
				v1alpha1.ClusterSecretStoreCondition{NamespaceRegexes: []string{"payments-(dev|prod)"}},
			),
			namespace: "payments-prod", expAllowed: true,
		},
		"An empty condition should match no namespace.": {
			store: css(v1alpha1.ClusterSecretStoreCondition{}), namespace: "payments-prod", expAllowed: false,
		},
		"An invalid regex should be a configuration error, even when another entry matches.": {
			store: css(
				v1alpha1.ClusterSecretStoreCondition{Namespaces: []string{"payments-prod"}},
				v1alpha1.ClusterSecretStoreCondition{NamespaceRegexes: []string{"payments-("}},
			),
			namespace: "payments-prod", expConfigErr: true,
		},
		"An invalid selector should be a configuration error.": {
			store: css(v1alpha1.ClusterSecretStoreCondition{NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "team", Operator: "Resembles", Values: []string{"payments"}},
			}}}),
			namespace: "payments-prod", labels: team, expConfigErr: true,
		},
	}
	for name, test := range tests {
		t.Run(name, func(t *testing.T) {
			assert := assert.New(t)

			allowed, err := test.store.AllowsNamespace(test.namespace, test.labels)

			if test.expConfigErr {
				assert.True(remote.IsConfigError(err), "expected a configuration error, got %v", err)
				assert.False(allowed)
				return
			}
			require.NoError(t, err)
			assert.Equal(test.expAllowed, allowed)
		})
	}
}

func TestRemoteNamespace(t *testing.T) {
	tests := map[string]struct {
		store *remote.Store
		exp   string
	}{
		"A store that names a remote namespace should read from it.": {
			store: secretStore(func(k *v1alpha1.KubernetesProvider) { k.RemoteNamespace = "team-a" }), exp: "team-a",
		},
		"A store without a remote namespace should read from default.": {
			store: secretStore(func(k *v1alpha1.KubernetesProvider) { k.RemoteNamespace = "" }), exp: "default",
		},
		"A store without a provider should still say default.": {
			store: &remote.Store{Kind: v1alpha1.SecretStoreKind, Name: "empty"}, exp: "default",
		},
	}
	for name, test := range tests {
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, test.exp, test.store.RemoteNamespace())
		})
	}
}

func TestStoreFromTypedStores(t *testing.T) {
	t.Run("A SecretStore should keep its namespace, spec, generation and resource version.", func(t *testing.T) {
		spec := seedSpec()
		got := remote.StoreFromSecretStore(&v1alpha1.SecretStore{
			ObjectMeta: metav1.ObjectMeta{Name: "remote-k8s-store", Namespace: "default", Generation: 3, ResourceVersion: "42"},
			Spec:       v1alpha1.SecretStoreSpec{Provider: spec.Provider},
		})
		assert.Equal(t, &remote.Store{
			Kind: v1alpha1.SecretStoreKind, Namespace: "default", Name: "remote-k8s-store",
			Spec: spec, Generation: 3, ResourceVersion: "42",
		}, got)
	})
	t.Run("A ClusterSecretStore should have no namespace and keep its conditions.", func(t *testing.T) {
		provider := v1alpha1.Provider{Kubernetes: &v1alpha1.KubernetesProvider{Server: &v1alpha1.KubernetesServer{URL: upstreamURL}}}
		conditions := []v1alpha1.ClusterSecretStoreCondition{{Namespaces: []string{"a"}}}
		got := remote.StoreFromClusterSecretStore(&v1alpha1.ClusterSecretStore{
			ObjectMeta: metav1.ObjectMeta{Name: "shared"},
			Spec:       v1alpha1.ClusterSecretStoreSpec{Provider: provider, Conditions: conditions},
		})
		assert.Equal(t, &remote.Store{
			Kind: v1alpha1.ClusterSecretStoreKind, Name: "shared",
			Spec: remote.StoreSpec{Provider: provider, Conditions: conditions},
		}, got)
	})
}
