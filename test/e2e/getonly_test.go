package e2e_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/secret-relay/secret-relay/relay"
	"github.com/secret-relay/secret-relay/test/cluster"
)

// TestGetOnlyUpstream checks contract §6: a store whose credentials may get Secrets
// upstream but not list or watch them still has its copies follow, by polling,
// within 60 s.
func TestGetOnlyUpstream(t *testing.T) {
	w := newWorld(t)
	ctx := cluster.Context(t)
	const ns = "get-only"
	w.Up.EnsureNamespace(t, ns)
	_, err := w.Up.Client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "getter"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = w.Up.Client.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "get-secrets"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get"}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = w.Up.Client.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "getter"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "getter", Namespace: ns}},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "get-secrets"},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	w.Up.CreateSecret(t, ns, "api-key", map[string]string{"key": "s3cr3t-v1"})
	w.SeedTokenStore(t, ns, "store", w.Up.URL(), ns, w.Up.Token(t, ns, "getter"))

	_, err = w.Down.Client.CoreV1().Pods(ns).Create(ctx, cluster.Pod("app", map[string]string{
		relay.AnnotationStore: "store", relay.AnnotationSecrets: "- api-key\n",
	}), metav1.CreateOptions{})
	require.NoError(t, err, "admission reads with get alone")
	secrets := w.Down.Client.CoreV1().Secrets(ns)
	copied, err := secrets.Get(ctx, "api-key", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, "s3cr3t-v1", string(copied.Data["key"]))
	// The relay was refused the list: it knows it cannot watch.
	require.Eventually(t, func() bool {
		return w.Relay.Metric(t, "secret_relay_upstream_requests_total", `verb="list"`, `code="403"`, `store="SecretStore get-only/store"`) >= 1
	}, 10*time.Second, 50*time.Millisecond)

	upstream, err := w.Up.Client.CoreV1().Secrets(ns).Get(ctx, "api-key", metav1.GetOptions{})
	require.NoError(t, err)
	upstream.Data["key"] = []byte("s3cr3t-v2")
	_, err = w.Up.Client.CoreV1().Secrets(ns).Update(ctx, upstream, metav1.UpdateOptions{})
	require.NoError(t, err)
	changed := time.Now()
	require.Eventually(t, func() bool {
		s, err := secrets.Get(ctx, "api-key", metav1.GetOptions{})
		require.NoError(t, err)
		return string(s.Data["key"]) == "s3cr3t-v2"
	}, 60*time.Second, 200*time.Millisecond, "the copy followed the upstream change")
	t.Logf("a get-only store's copy followed the upstream change in %s", time.Since(changed).Round(10*time.Millisecond))
}
