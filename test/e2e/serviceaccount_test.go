package e2e_test

import (
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/secret-relay/secret-relay/relay"
	"github.com/secret-relay/secret-relay/test/cluster"
)

// TestServiceAccountAuth checks contract §3's auth.serviceAccount on two clusters
// where the upstream trusts the downstream's service-account issuer
// (cluster.StartTrustingPair): no token Secret exists anywhere, the relay requests
// a token for the store's ServiceAccount and the upstream sees that
// ServiceAccount, prefixed, read its Secrets.
func TestServiceAccountAuth(t *testing.T) {
	// Tokens are renewed every 2 s, as every 48 minutes in production.
	w := cluster.NewCustomWorld(t, relayBinary, suiteDir, cluster.WorldOptions{TrustDownstream: true,
		RelayArgs: []string{"--service-account-token-renewal=2s"}})
	registerLog(w.Relay.LogFile)
	w.Relay.Register(t, w.Down)
	ctx := cluster.Context(t)
	const ns = "team-sa"
	user := trustServiceAccount(t, w, ns, "relay-reader")
	store := func(name, account, audiences string) { applyAccountStore(t, w, ns, name, account, audiences) }

	t.Run("A SecretStore with serviceAccount auth should relay user-credentials, as the prefixed ServiceAccount upstream.", func(t *testing.T) {
		store("remote-k8s-store", "relay-reader", ", audiences: ["+cluster.UpstreamAudience+"]")
		waitForStoreStatus(t, w, ns, "remote-k8s-store", "True", "Valid", 30*time.Second)
		_, err := w.Down.Client.CoreV1().Pods(ns).Create(ctx, cluster.Pod("app", map[string]string{
			relay.AnnotationStore: "remote-k8s-store", relay.AnnotationSecrets: seedAnnotation,
		}), metav1.CreateOptions{})
		require.NoError(t, err)
		copied, err := w.Down.Client.CoreV1().Secrets(ns).Get(ctx, "pulled-secrets", metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, "peter", string(copied.Data["username"]))

		secrets, users := 0, map[string]bool{}
		for _, ev := range w.Up.AuditEvents(t) {
			if ev.ObjectRef.Resource == "secrets" && strings.HasPrefix(ev.UserAgent, "secret-relay") {
				secrets++
				users[ev.User.Username] = true
			}
		}
		assert.Positive(t, secrets)
		assert.Equal(t, map[string]bool{user: true}, users, "every upstream Secret read as the ServiceAccount")
		list, err := w.Down.Client.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
		require.NoError(t, err)
		for _, s := range list.Items {
			assert.NotEqual(t, corev1.SecretTypeServiceAccountToken, s.Type, "no token Secret downstream: %s", s.Name)
			assert.Equal(t, relay.ManagedByValue, s.Labels[relay.LabelManagedBy], "only the copy: %s", s.Name)
		}
	})

	t.Run("After several renewals, new remote Secrets and an upstream change should still be relayed.", func(t *testing.T) {
		tokenRequests := func() int {
			n := 0
			for _, ev := range w.Down.AuditEvents(t) {
				if ev.Verb == "create" && ev.ObjectRef.Resource == "serviceaccounts" && strings.HasSuffix(strings.Split(ev.RequestURI, "?")[0], "/relay-reader/token") {
					n++
				}
			}
			return n
		}
		before := tokenRequests()
		for i := range 3 {
			time.Sleep(2500 * time.Millisecond) // the last token is due for renewal
			name := fmt.Sprintf("late-%d", i)
			w.Up.CreateSecret(t, "default", name, map[string]string{"api-key": "s3cr3t-api-key"})
			_, err := w.Down.Client.CoreV1().Pods(ns).Create(ctx, cluster.Pod(name, map[string]string{
				relay.AnnotationStore: "remote-k8s-store", relay.AnnotationSecrets: "- " + name + "\n",
			}), metav1.CreateOptions{})
			require.NoError(t, err, "a cold read upstream with a renewed token")
		}
		up, err := w.Up.Client.CoreV1().Secrets("default").Get(ctx, "user-credentials", metav1.GetOptions{})
		require.NoError(t, err)
		up.Data["username"] = []byte("s3cr3t-rotated-username")
		_, err = w.Up.Client.CoreV1().Secrets("default").Update(ctx, up, metav1.UpdateOptions{})
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			s, err := w.Down.Client.CoreV1().Secrets(ns).Get(ctx, "pulled-secrets", metav1.GetOptions{})
			return err == nil && string(s.Data["username"]) == "s3cr3t-rotated-username"
		}, 10*time.Second, 50*time.Millisecond, "the copy follows upstream, through the watch")
		renewals := tokenRequests() - before
		t.Logf("token requests for relay-reader over three cold reads 2.5 s apart, renewing every 2 s: %d", renewals)
		assert.GreaterOrEqual(t, renewals, 3, "a new token for each read after a renewal was due")
		waitForStoreStatus(t, w, ns, "remote-k8s-store", "True", "Valid", 10*time.Second)
	})

	t.Run("secret-relay check should show the minted token's issuer and audiences, and the user upstream, never the token.", func(t *testing.T) {
		out, ok := check(t, w, "-n", ns, "remote-k8s-store")
		require.True(t, ok)
		issuer := strings.TrimSuffix(w.Down.URL(), "/")
		assert.Contains(t, out, fmt.Sprintf(`  ok    token minted: for ServiceAccount team-sa/relay-reader: issuer %s, audiences ["%s"], expires `, issuer, cluster.UpstreamAudience))
		assert.Contains(t, out, "the upstream accepted its credentials, as user "+user)
		assert.NotContains(t, out, "eyJ", "no JWT")

		store("check-untrusted", "relay-reader", ", audiences: [not-the-upstream]")
		out, ok = check(t, w, "-n", ns, "check-untrusted")
		require.False(t, ok)
		assert.Contains(t, out, "  FAIL  credentials accepted: the upstream answered 401 Unauthorized")
		assert.Contains(t, out, `  fix:  the upstream's AuthenticationConfiguration must trust this cluster's issuer for audiences ["not-the-upstream"]`)
	})

	t.Run("A store naming a ServiceAccount that does not exist should say so in its status.", func(t *testing.T) {
		store("ghost-store", "ghost", ", audiences: ["+cluster.UpstreamAudience+"]")
		waitForStoreStatus(t, w, ns, "ghost-store", "False", "InvalidStoreConfiguration", 30*time.Second)
		assert.Contains(t, storeStatusOf(t, w, ns, "ghost-store").message, "ServiceAccount team-sa/ghost not found downstream")
		out, ok := check(t, w, "-n", ns, "ghost-store")
		require.False(t, ok)
		assert.Contains(t, out, "  FAIL  token minted: ServiceAccount team-sa/ghost not found downstream")
	})

	t.Run("A store whose audience the upstream does not trust should say so: 401, and the likely cause.", func(t *testing.T) {
		store("untrusted-audience", "relay-reader", ", audiences: [not-the-upstream]")
		waitForStoreStatus(t, w, ns, "untrusted-audience", "False", "ValidationFailed", 30*time.Second)
		assert.Contains(t, storeStatusOf(t, w, ns, "untrusted-audience").message,
			`refused the store's credentials (401 Unauthorized); the upstream does not accept tokens of ServiceAccount team-sa/relay-reader for audiences ["not-the-upstream"]: does it trust this cluster's issuer, for those audiences?`)
	})

	t.Run("A store without audiences should be refused: its token would be valid downstream.", func(t *testing.T) {
		store("no-audience", "relay-reader", "")
		waitForStoreStatus(t, w, ns, "no-audience", "False", "InvalidStoreConfiguration", 30*time.Second)
		assert.Contains(t, storeStatusOf(t, w, ns, "no-audience").message, "audiences must name the audiences the upstream accepts")
	})

	t.Run("A store whose audience this cluster accepts should be refused: a hostile server.url would get a token valid here.", func(t *testing.T) {
		var got atomic.Int32
		hostile := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "" {
				got.Add(1)
			}
			w.WriteHeader(http.StatusForbidden)
		}))
		defer hostile.Close()
		ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: hostile.Certificate().Raw})
		// The downstream's API audience is its issuer, https://127.0.0.1:<port>.
		w.ApplySecretStore(t, ns, "own-audience", fmt.Sprintf(`
server: {url: %s, caBundle: %s}
auth: {serviceAccount: {name: relay-reader, audiences: [%s]}}
`, hostile.URL, base64.StdEncoding.EncodeToString(ca), strings.TrimSuffix(w.Down.URL(), "/")))
		waitForStoreStatus(t, w, ns, "own-audience", "False", "InvalidStoreConfiguration", 30*time.Second)
		assert.Contains(t, storeStatusOf(t, w, ns, "own-audience").message, "are accepted by this cluster's own API server")
		assert.Zero(t, got.Load(), "the hostile server got no token")
	})

	t.Run("A SecretStore naming another namespace's ServiceAccount should be refused by the API server.", func(t *testing.T) {
		err := w.ApplyErr(t, cluster.SecretStoreYAML(ns, "elsewhere", fmt.Sprintf(`
server: {url: %s, caProvider: {type: ConfigMap, name: kube-root-remote-ca.crt, key: ca.crt}}
auth: {serviceAccount: {name: default, namespace: kube-system, audiences: [%s]}}
`, w.Up.URL(), cluster.UpstreamAudience)))
		require.Error(t, err)
		assert.Contains(t, err.Error(), "a SecretStore uses a ServiceAccount of its own namespace")
	})

	t.Run("A ServiceAccount deleted downstream should be noticed within 30 s, though the upstream would accept its token; the copy keeps its data.", func(t *testing.T) {
		require.NoError(t, w.Down.Client.CoreV1().ServiceAccounts(ns).Delete(ctx, "relay-reader", metav1.DeleteOptions{}))
		deleted := time.Now()
		waitForStoreStatus(t, w, ns, "remote-k8s-store", "False", "ValidationFailed", 30*time.Second)
		t.Logf("ServiceAccount deleted → store ValidationFailed in %s", time.Since(deleted).Round(time.Millisecond))
		assert.Contains(t, storeStatusOf(t, w, ns, "remote-k8s-store").message, "team-sa/relay-reader")
		_, err := w.Down.Client.CoreV1().Pods(ns).Create(ctx, cluster.Pod("after-delete", map[string]string{
			relay.AnnotationStore: "remote-k8s-store", relay.AnnotationSecrets: "- late-0\n",
		}), metav1.CreateOptions{})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "remote-k8s-store")
		t.Logf("the denial: %v", err)
		copied, err := w.Down.Client.CoreV1().Secrets(ns).Get(ctx, "pulled-secrets", metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, "s3cr3t-rotated-username", string(copied.Data["username"]), "kept")
	})

	t.Run("Removing the trust upstream should turn the store ValidationFailed within 30 s, saying why.", func(t *testing.T) {
		trustServiceAccount(t, w, ns+"-distrust", "relay-reader")
		applyAccountStore(t, w, ns+"-distrust", "trusted", "relay-reader", ", audiences: ["+cluster.UpstreamAudience+"]")
		waitForStoreStatus(t, w, ns+"-distrust", "trusted", "True", "Valid", 30*time.Second)
		_, err := w.Down.Client.CoreV1().Pods(ns+"-distrust").Create(ctx, cluster.Pod("app", map[string]string{
			relay.AnnotationStore: "trusted", relay.AnnotationSecrets: seedAnnotation,
		}), metav1.CreateOptions{})
		require.NoError(t, err)

		distrusted := time.Now()
		cluster.Distrust(t, w.Up, w.Down)
		waitForStoreStatus(t, w, ns+"-distrust", "trusted", "False", "ValidationFailed", 30*time.Second)
		t.Logf("trust removed → ValidationFailed, 401, in %s, the upstream's restart included", time.Since(distrusted).Round(time.Millisecond))
		assert.Contains(t, storeStatusOf(t, w, ns+"-distrust", "trusted").message, "401 Unauthorized")
		assert.Contains(t, storeStatusOf(t, w, ns+"-distrust", "trusted").message, "does it trust this cluster's issuer")
		copied, err := w.Down.Client.CoreV1().Secrets(ns+"-distrust").Get(ctx, "pulled-secrets", metav1.GetOptions{})
		require.NoError(t, err)
		assert.NotEmpty(t, copied.Data["username"], "the copy keeps its data")
	})

	t.Run("No token should reach secret-relay's log.", func(t *testing.T) {
		log, err := os.ReadFile(w.Relay.LogFile)
		require.NoError(t, err)
		assert.NotContains(t, string(log), "eyJ", "a JWT, base64url of {\"")
	})
}

// TestShippedRBACServiceAccountAuth runs secret-relay as the ServiceAccount of
// manifests/install: without the component service-account-auth, a store with
// serviceAccount auth says what to enable; with it, the store works.
func TestShippedRBACServiceAccountAuth(t *testing.T) {
	up, down := cluster.StartTrustingPair(t, cluster.Options{CRDDirs: []string{cluster.CRDDir()}})
	manifests := filepath.Join(cluster.CRDDir(), "..")
	apply := func(f string) {
		out, err := exec.Command(cluster.BinaryDir()+"/kubectl", "--kubeconfig", down.Kubeconfig, "apply", "-f", filepath.Join(manifests, f)).CombinedOutput()
		require.NoError(t, err, string(out))
	}
	for _, f := range []string{"install/namespace.yaml", "install/serviceaccount.yaml", "install/rbac.yaml"} {
		apply(f)
	}
	w := &cluster.World{Up: up, Down: down, Dynamic: dynamicClient(t, down)}
	up.CreateSecret(t, "default", "user-credentials", map[string]string{"username": "peter", "password": "asdf1234"})
	// Validated every 2 s: a grant is no change to the store, and the next check
	// is what notices it.
	w.Relay = cluster.StartRelay(t, relayBinary, suiteDir, down, "--kubeconfig", down.KubeconfigFor(t, "secret-relay", "secret-relay"),
		"--store-validation-interval=2s")
	registerLog(w.Relay.LogFile)
	const ns = "team-sa"
	trustServiceAccount(t, w, ns, "relay-reader")
	applyAccountStore(t, w, ns, "remote-k8s-store", "relay-reader", ", audiences: ["+cluster.UpstreamAudience+"]")

	waitForStoreStatus(t, w, ns, "remote-k8s-store", "False", "InvalidStoreConfiguration", 30*time.Second)
	assert.Contains(t, storeStatusOf(t, w, ns, "remote-k8s-store").message,
		"secret-relay may not request tokens for ServiceAccount team-sa/relay-reader: install it with serviceAccountAuth.enabled=true (or the kustomize component manifests/components/service-account-auth)")

	apply("components/service-account-auth/rbac.yaml")
	waitForStoreStatus(t, w, ns, "remote-k8s-store", "True", "Valid", 30*time.Second)
}

// trustServiceAccount lets the downstream ServiceAccount ns/name, as the upstream
// sees it (prefixed), read Secrets in the upstream default namespace, and creates
// it, with the upstream's CA as the ConfigMap kube-root-remote-ca.crt, in ns. It
// returns the upstream user.
func trustServiceAccount(t *testing.T, w *cluster.World, ns, name string) string {
	t.Helper()
	ctx := cluster.Context(t)
	user := cluster.TrustedUserPrefix + "system:serviceaccount:" + ns + ":" + name
	_, err := w.Up.Client.RbacV1().Roles("default").Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "downstream-" + ns + "-" + name},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get", "list", "watch"}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = w.Up.Client.RbacV1().RoleBindings("default").Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "downstream-" + ns + "-" + name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "downstream-" + ns + "-" + name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: user}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)

	w.Down.EnsureNamespace(t, ns)
	_, err = w.Down.Client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = w.Down.Client.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-root-remote-ca.crt"},
		Data:       map[string]string{"ca.crt": string(w.Up.CA())},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	return user
}

// applyAccountStore creates SecretStore ns/name reading the upstream default
// namespace with tokens of ServiceAccount account; audiences is the rest of the
// serviceAccount block (", audiences: [...]", or nothing).
func applyAccountStore(t *testing.T, w *cluster.World, ns, name, account, audiences string) {
	t.Helper()
	w.ApplySecretStore(t, ns, name, fmt.Sprintf(`
server:
  url: %s
  caProvider: {type: ConfigMap, name: kube-root-remote-ca.crt, key: ca.crt}
remoteNamespace: default
auth:
  serviceAccount: {name: %s%s}
`, w.Up.URL(), account, audiences))
}

// TestESOStoresMoveOver checks the README's promise, for every auth method ESO's
// kubernetes provider has: an ESO SecretStore, as ESO's docs write it, moves over by
// changing its apiVersion alone, and validates.
func TestESOStoresMoveOver(t *testing.T) {
	w := cluster.NewCustomWorld(t, relayBinary, suiteDir, cluster.WorldOptions{TrustDownstream: true})
	registerLog(w.Relay.LogFile)
	w.Relay.Register(t, w.Down)
	ctx := cluster.Context(t)
	const ns = "from-eso"
	trustServiceAccount(t, w, ns, "relay-reader") // and the CA ConfigMap
	w.Down.CreateSecret(t, ns, "remote-sa-token", map[string]string{"token": w.Reader.Token})
	certPEM, keyPEM := w.Up.ClientCertUser(t, "eso-cert-reader")
	_, err := w.Up.Client.RbacV1().RoleBindings("default").Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "eso-cert-reader"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "downstream-" + ns + "-relay-reader"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: "eso-cert-reader"}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	w.Down.CreateSecret(t, ns, "client-tls", map[string]string{"tls.crt": string(certPEM), "tls.key": string(keyPEM)})
	w.Down.CreateSecret(t, ns, "upstream-kubeconfig", map[string]string{"config": string(upstreamKubeconfig(t, w, &clientcmdapi.AuthInfo{Token: w.Reader.Token}))})

	server := fmt.Sprintf(`
      server:
        url: %s
        caProvider:
          type: ConfigMap
          name: kube-root-remote-ca.crt
          key: ca.crt`, w.Up.URL())
	for name, provider := range map[string]string{
		"token": server + `
      auth:
        token:
          bearerToken:
            name: remote-sa-token
            key: token`,
		"cert": server + `
      auth:
        cert:
          clientCert:
            name: client-tls
            key: tls.crt
          clientKey:
            name: client-tls
            key: tls.key`,
		"serviceaccount": server + `
      auth:
        serviceAccount:
          name: relay-reader
          audiences:
          - ` + cluster.UpstreamAudience,
		"authref": `
      authRef:
        name: upstream-kubeconfig
        key: config`,
	} {
		t.Run("An ESO SecretStore with "+name+" auth should validate once its apiVersion is changed.", func(t *testing.T) {
			eso := fmt.Sprintf(`apiVersion: external-secrets.io/v1
kind: SecretStore
metadata:
  name: k8s-%s
  namespace: %s
spec:
  provider:
    kubernetes:
      remoteNamespace: default%s
`, name, ns, provider)
			w.Apply(t, strings.Replace(eso, "apiVersion: external-secrets.io/v1", "apiVersion: secret-relay.io/v1alpha1", 1))
			waitForStoreStatus(t, w, ns, "k8s-"+name, "True", "Valid", 30*time.Second)
		})
	}

	// This world renews tokens as production does, every 48 minutes: what notices a
	// deleted ServiceAccount is the review of its token downstream, every 5 s while
	// a cache uses it, which the downstream API server caches for 10 s.
	t.Run("A ServiceAccount deleted downstream should be noticed within 30 s without a renewal.", func(t *testing.T) {
		_, err := w.Down.Client.CoreV1().Pods(ns).Create(ctx, cluster.Pod("app", map[string]string{
			relay.AnnotationStore: "k8s-serviceaccount", relay.AnnotationSecrets: seedAnnotation,
		}), metav1.CreateOptions{})
		require.NoError(t, err)
		assert.Equal(t, "peter", string(localSecret(t, w, ns, "pulled-secrets").Data["username"]), "relayed through the store")
		require.NoError(t, w.Down.Client.CoreV1().ServiceAccounts(ns).Delete(ctx, "relay-reader", metav1.DeleteOptions{}))
		deleted := time.Now()
		waitForStoreStatus(t, w, ns, "k8s-serviceaccount", "False", "ValidationFailed", 30*time.Second)
		t.Logf("ServiceAccount deleted → ValidationFailed in %s, with no renewal due", time.Since(deleted).Round(time.Millisecond))
		// The review drops the token; the request for a new one then finds no ServiceAccount.
		assert.Regexp(t, `from-eso/relay-reader (is no longer valid|not found) downstream`, storeStatusOf(t, w, ns, "k8s-serviceaccount").message)
	})
}
