package manifests_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	rbacv1 "k8s.io/api/rbac/v1"
)

// grant is one verb on one resource of one API group.
type grant struct{ group, resource, verb string }

func (g grant) String() string { return fmt.Sprintf("%s/%s:%s", g.group, g.resource, g.verb) }

// grants expands rules into single grants, failing on anything that is not a plain
// group/resource/verb rule (wildcards, resourceNames, nonResourceURLs).
func grants(t *testing.T, rules []rbacv1.PolicyRule) []grant {
	t.Helper()
	var out []grant
	for _, r := range rules {
		assert.Empty(t, r.ResourceNames, "rule %v: resourceNames", r)
		assert.Empty(t, r.NonResourceURLs, "rule %v: nonResourceURLs", r)
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					assert.NotContains(t, []string{g, res, v}, "*", "rule %v: wildcard", r)
					out = append(out, grant{g, res, v})
				}
			}
		}
	}
	return out
}

// expand turns a table of group, resources and verbs into grants.
func expand(table []rbacv1.PolicyRule) []grant {
	var out []grant
	for _, r := range table {
		for _, res := range r.Resources {
			for _, v := range r.Verbs {
				out = append(out, grant{r.APIGroups[0], res, v})
			}
		}
	}
	return out
}

// wantClusterGrants is everything secret-relay may do cluster-wide, and nothing more
// (issue 6): least privilege.
var wantClusterGrants = expand([]rbacv1.PolicyRule{
	// Relayed Secrets; delete only to replace a Secret whose type changed.
	{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get", "list", "watch", "create", "update", "delete"}},
	// CA providers.
	{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "list", "watch"}},
	// ClusterSecretStore namespace conditions.
	{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"get", "list", "watch"}},
	// The relayed pods, whose status says which copies they use (issue 14).
	{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"list", "watch"}},
	// The controllers above pods, whose workloads own the copies (issue 14).
	{APIGroups: []string{"apps"}, Resources: []string{"replicasets", "statefulsets", "daemonsets"}, Verbs: []string{"get", "list", "watch"}},
	{APIGroups: []string{"batch"}, Resources: []string{"jobs"}, Verbs: []string{"get", "list", "watch"}},
	// A workload's pod template, when a copy would follow its new declaration (issue 14).
	{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, Verbs: []string{"get"}},
	{APIGroups: []string{"batch"}, Resources: []string{"cronjobs"}, Verbs: []string{"get"}},
	{APIGroups: []string{"secret-relay.io"}, Resources: []string{"secretstores", "clustersecretstores"}, Verbs: []string{"get", "list", "watch"}},
	{APIGroups: []string{"secret-relay.io"}, Resources: []string{"secretstores/status", "clustersecretstores/status"}, Verbs: []string{"update", "patch"}},
	{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
	{APIGroups: []string{"events.k8s.io"}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
})

// wantLeaseGrants is what secret-relay may do in its own namespace.
var wantLeaseGrants = expand([]rbacv1.PolicyRule{
	{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "create", "update"}},
})

// assertGrantsExactly fails on any missing grant and on anything extra.
func assertGrantsExactly(t *testing.T, what string, want []grant, rules []rbacv1.PolicyRule) {
	t.Helper()
	got := grants(t, rules)
	for _, g := range got {
		assert.True(t, slices.Contains(want, g), "%s grants %s, which is not needed", what, g)
	}
	for _, g := range want {
		assert.True(t, slices.Contains(got, g), "%s lacks %s", what, g)
	}
	seen := map[grant]bool{}
	for _, g := range got {
		assert.False(t, seen[g], "%s grants %s twice", what, g)
		seen[g] = true
	}
}

// assertRBAC checks the ServiceAccount, ClusterRole, Role and their bindings in ns.
func assertRBAC(t *testing.T, objs objects, ns string) {
	t.Helper()
	require.Len(t, objs.all("ServiceAccount"), 1)
	assert.Equal(t, "secret-relay", objs.all("ServiceAccount")[0].Name)
	assert.Equal(t, ns, objs.all("ServiceAccount")[0].Namespace)

	var cr rbacv1.ClusterRole
	objs.one(t, "ClusterRole", "secret-relay", &cr)
	assert.Nil(t, cr.AggregationRule)
	assertGrantsExactly(t, "ClusterRole secret-relay", wantClusterGrants, cr.Rules)
	require.Len(t, objs.all("ClusterRole"), 1, "one ClusterRole")

	var crb rbacv1.ClusterRoleBinding
	objs.one(t, "ClusterRoleBinding", "secret-relay", &crb)
	assert.Equal(t, rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "secret-relay"}, crb.RoleRef)
	assert.Equal(t, []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "secret-relay", Namespace: ns}}, crb.Subjects)

	roles := objs.all("Role")
	require.Len(t, roles, 1, "one Role")
	assert.Equal(t, ns, roles[0].Namespace, "the Role lives in the install namespace")
	var role rbacv1.Role
	objs.one(t, "Role", roles[0].Name, &role)
	assertGrantsExactly(t, "Role "+role.Name, wantLeaseGrants, role.Rules)

	bindings := objs.all("RoleBinding")
	require.Len(t, bindings, 1, "one RoleBinding")
	var rb rbacv1.RoleBinding
	objs.one(t, "RoleBinding", bindings[0].Name, &rb)
	assert.Equal(t, ns, rb.Namespace)
	assert.Equal(t, rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name}, rb.RoleRef)
	assert.Equal(t, []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "secret-relay", Namespace: ns}}, rb.Subjects)

	// No other RBAC object slips in.
	for _, o := range objs {
		if o.APIVersion == rbacv1.SchemeGroupVersion.String() {
			assert.True(t, slices.Contains([]string{"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}, o.Kind), "unexpected %s", o.Kind)
		}
	}
}

func TestPlainRBACIsLeastPrivilege(t *testing.T) {
	var objs objects
	for _, f := range []string{"serviceaccount.yaml", "rbac.yaml"} {
		objs = append(objs, readObjects(t, "manifests/install/"+f)...)
	}
	assertRBAC(t, objs, "secret-relay")
}

func TestChartRBACIsLeastPrivilege(t *testing.T) {
	assertRBAC(t, helmTemplate(t, "secret-relay"), "secret-relay")
	assertRBAC(t, helmTemplate(t, "relay-system", "certificates.certManager.enabled=false"), "relay-system")
}

// wantRestartGrants is what restartOnChange.enabled, or the kustomize component,
// adds: patch on the workloads a restart rolls, and nothing else.
var wantRestartGrants = expand([]rbacv1.PolicyRule{
	{APIGroups: []string{"apps"}, Resources: []string{"deployments", "statefulsets", "daemonsets"}, Verbs: []string{"patch"}},
})

// wantServiceAccountAuthGrants is what serviceAccountAuth.enabled, or the kustomize
// component, adds: tokens for ServiceAccounts, and reviews of them.
var wantServiceAccountAuthGrants = expand([]rbacv1.PolicyRule{
	{APIGroups: []string{""}, Resources: []string{"serviceaccounts/token"}, Verbs: []string{"create"}},
	{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"tokenreviews"}, Verbs: []string{"create"}},
})

// assertOptionalRBAC checks an optional ClusterRole, secret-relay-<name>, and its
// binding to the install's ServiceAccount in ns.
func assertOptionalRBAC(t *testing.T, objs objects, name string, grants []grant, ns string) {
	t.Helper()
	var cr rbacv1.ClusterRole
	objs.one(t, "ClusterRole", "secret-relay-"+name, &cr)
	assertGrantsExactly(t, "ClusterRole "+cr.Name, grants, cr.Rules)
	var crb rbacv1.ClusterRoleBinding
	objs.one(t, "ClusterRoleBinding", "secret-relay-"+name, &crb)
	assert.Equal(t, rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: cr.Name}, crb.RoleRef)
	assert.Equal(t, []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "secret-relay", Namespace: ns}}, crb.Subjects)
}

// TestOptionalRBAC checks the grants that only a chart value, or a kustomize
// component, adds.
func TestOptionalRBAC(t *testing.T) {
	for _, o := range []struct {
		value, component string
		grants           []grant
	}{
		{"restartOnChange.enabled", "restart-on-change", wantRestartGrants},
		{"serviceAccountAuth.enabled", "service-account-auth", wantServiceAccountAuthGrants},
	} {
		t.Run("The chart should grant "+o.component+" only with "+o.value+"=true.", func(t *testing.T) {
			assert.Len(t, helmTemplate(t, "secret-relay").all("ClusterRole"), 1)
			objs := helmTemplate(t, "relay-system", o.value+"=true")
			assert.Len(t, objs.all("ClusterRole"), 2)
			assertOptionalRBAC(t, objs, o.component, o.grants, "relay-system")
		})
		t.Run("The kustomize component "+o.component+" should grant the same, to the install's ServiceAccount.", func(t *testing.T) {
			overlay := t.TempDir()
			rel := func(parts ...string) string { // kustomize takes relative paths only
				p, err := filepath.Rel(overlay, repoPath(t, parts...))
				require.NoError(t, err)
				return p
			}
			require.NoError(t, os.WriteFile(filepath.Join(overlay, "kustomization.yaml"), []byte(fmt.Sprintf(
				"resources: [%s]\ncomponents: [%s]\n", rel("manifests"), rel("manifests", "components", o.component))), 0o644))
			objs := decodeObjects(t, run(t, tool(t, "k8s"), "kustomize", "--load-restrictor=LoadRestrictionsNone", overlay))
			assert.Len(t, objs.all("ClusterRole"), 2)
			assertOptionalRBAC(t, objs, o.component, o.grants, "secret-relay")
		})
	}
}
