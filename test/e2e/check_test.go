package e2e_test

import (
	"encoding/base64"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/secret-relay/secret-relay/certs/certstest"
	"github.com/secret-relay/secret-relay/test/cluster"
)

// check runs `secret-relay check` against the downstream cluster and returns its
// output and whether it exited 0.
func check(t *testing.T, w *cluster.World, args ...string) (string, bool) {
	t.Helper()
	out, err := exec.Command(relayBinary, append([]string{"check", "--kubeconfig", w.Down.Kubeconfig}, args...)...).CombinedOutput()
	if err != nil {
		var exit *exec.ExitError
		require.ErrorAs(t, err, &exit, string(out))
	}
	t.Logf("secret-relay check %s:\n%s", strings.Join(args, " "), out)
	return string(out), err == nil
}

// TestCheck runs `secret-relay check` on working and broken stores (issue 15): each
// step is said, the first failure is named in the upstream's words with a fix, and
// no credential is ever printed.
func TestCheck(t *testing.T) {
	w := newWorld(t)
	ctx := cluster.Context(t)
	const ns = "check"
	w.SeedStore(t, ns, "remote-k8s-store")

	t.Run("A working store should pass every step, naming the upstream user, and exit 0.", func(t *testing.T) {
		out, ok := check(t, w, "-n", ns, "remote-k8s-store")
		require.True(t, ok)
		for _, step := range []string{"references resolve", "upstream reachable", "CA verifies the upstream", "credentials accepted", "may read Secrets"} {
			assert.Contains(t, out, "  ok    "+step)
		}
		assert.Contains(t, out, `user system:serviceaccount:default:eso-reader may get, list and watch Secrets in namespace "default"`)
		assert.Contains(t, out, "store SecretStore check/remote-k8s-store: the upstream accepted its credentials, as user system:serviceaccount:default:eso-reader")
		assert.NotContains(t, out, w.Reader.Token)
	})

	t.Run("A store whose CA does not verify the upstream should fail there, with the fix.", func(t *testing.T) {
		other, err := certstest.NewCA("not-the-upstream")
		require.NoError(t, err)
		w.Down.CreateSecret(t, ns, "token", map[string]string{"token": w.Reader.Token})
		w.ApplySecretStore(t, ns, "wrong-ca", fmt.Sprintf(`
server: {url: %q, caBundle: %s}
auth: {token: {bearerToken: {name: token, key: token}}}
`, w.Up.URL(), base64.StdEncoding.EncodeToString(other.CertPEM())))
		out, ok := check(t, w, "SecretStore/wrong-ca", "-n", ns)
		require.False(t, ok)
		assert.Contains(t, out, "  FAIL  CA verifies the upstream: tls: failed to verify certificate: x509: certificate signed by unknown authority")
		assert.Contains(t, out, "  fix:  caBundle or caProvider must hold the CA that signed the upstream's serving certificate")
		assert.Contains(t, out, `secret-relay: store SecretStore check/wrong-ca: CA verifies the upstream failed`)
	})

	t.Run("A token the upstream refuses should fail with 401 Unauthorized.", func(t *testing.T) {
		w.SeedTokenStore(t, ns+"-refused", "refused", w.Up.URL(), "default", "not-a-token")
		out, ok := check(t, w, "-n", ns+"-refused", "refused")
		require.False(t, ok)
		assert.Contains(t, out, "  FAIL  credentials accepted: the upstream answered 401 Unauthorized")
		assert.NotContains(t, out, "not-a-token")
	})

	t.Run("An expired token should fail with 401 and say when it expired; the store's status too.", func(t *testing.T) {
		w.SeedTokenStore(t, ns+"-expired", "expired", w.Up.URL(), "default", w.Up.ExpiredToken(t, "default", cluster.ReaderServiceAccount))
		out, ok := check(t, w, "-n", ns+"-expired", "expired")
		require.False(t, ok)
		assert.Contains(t, out, "  FAIL  credentials accepted: the upstream answered 401 Unauthorized")
		assert.Contains(t, out, "  fix:  the token expired at ")
		waitForStoreStatus(t, w, ns+"-expired", "expired", "False", "ValidationFailed", 30*time.Second)
		assert.Contains(t, storeStatusOf(t, w, ns+"-expired", "expired").message, "(401 Unauthorized); the token expired at ")
	})

	t.Run("Credentials that may get but not list or watch should fail with 403 Forbidden, naming the user and the verbs.", func(t *testing.T) {
		_, err := w.Up.Client.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "getter"}}, metav1.CreateOptions{})
		require.NoError(t, err)
		_, err = w.Up.Client.RbacV1().Roles("default").Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "getter"},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get"}}}}, metav1.CreateOptions{})
		require.NoError(t, err)
		_, err = w.Up.Client.RbacV1().RoleBindings("default").Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "getter"},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "getter"},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "getter", Namespace: "default"}}}, metav1.CreateOptions{})
		require.NoError(t, err)
		w.SeedTokenStore(t, ns+"-getter", "getter", w.Up.URL(), "default", w.Up.Token(t, "default", "getter"))
		out, ok := check(t, w, "-n", ns+"-getter", "getter")
		require.False(t, ok)
		assert.Contains(t, out, "  ok    credentials accepted: as user system:serviceaccount:default:getter")
		assert.Contains(t, out, `  FAIL  may read Secrets: 403 Forbidden: user system:serviceaccount:default:getter may not list, watch Secrets in namespace "default" upstream`)
	})

	t.Run("An upstream where nothing listens should fail at reachability.", func(t *testing.T) {
		w.SeedTokenStore(t, ns+"-nowhere", "nowhere", fmt.Sprintf("https://127.0.0.1:%d", cluster.FreePort(t)), "default", w.Reader.Token)
		out, ok := check(t, w, "-n", ns+"-nowhere", "nowhere")
		require.False(t, ok)
		assert.Contains(t, out, "  FAIL  upstream reachable: could not connect to 127.0.0.1:")
		assert.Contains(t, out, "connection refused")
	})

	t.Run("A store whose token Secret is missing should fail at its references.", func(t *testing.T) {
		w.ApplySecretStore(t, ns, "no-token", fmt.Sprintf(`
server: {url: %q, caBundle: %s}
auth: {token: {bearerToken: {name: missing, key: token}}}
`, w.Up.URL(), base64.StdEncoding.EncodeToString(w.Up.CA())))
		out, ok := check(t, w, "-n", ns, "no-token")
		require.False(t, ok)
		assert.Contains(t, out, "  FAIL  references resolve: Secret check/missing not found")
		assert.Contains(t, out, "  fix:  fix the store, or create what it references")
	})

	t.Run("A store that does not exist should be named.", func(t *testing.T) {
		out, ok := check(t, w, "-n", ns, "ghost")
		require.False(t, ok)
		assert.Contains(t, out, `secret-relay: SecretStore "ghost" not found in namespace "check"`)
	})
}
