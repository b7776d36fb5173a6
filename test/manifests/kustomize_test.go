package manifests_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"sigs.k8s.io/yaml"
)

// kustomization reads manifests/kustomization.yaml's resources.
func kustomization(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(repoPath(t, "manifests", "kustomization.yaml"))
	require.NoError(t, err)
	var k struct {
		APIVersion string   `json:"apiVersion"`
		Kind       string   `json:"kind"`
		Resources  []string `json:"resources"`
	}
	require.NoError(t, yaml.Unmarshal(data, &k))
	assert.Equal(t, "Kustomization", k.Kind)
	return k.Resources
}

// TestKustomizationListsEveryManifest checks that every listed file exists and that
// every manifest under crds/ and install/ is listed, so apply -k installs it all.
func TestKustomizationListsEveryManifest(t *testing.T) {
	resources := kustomization(t)
	require.NotEmpty(t, resources)
	for _, r := range resources {
		_, err := os.Stat(repoPath(t, "manifests", r))
		assert.NoError(t, err, "kustomization lists %s", r)
	}
	for _, dir := range []string{"crds", "install"} {
		files, err := filepath.Glob(repoPath(t, "manifests", dir, "*.yaml"))
		require.NoError(t, err)
		require.NotEmpty(t, files, "manifests/%s", dir)
		for _, f := range files {
			rel := dir + "/" + filepath.Base(f)
			assert.True(t, slices.Contains(resources, rel), "kustomization does not list %s", rel)
		}
	}
	// CRDs come first, so their kinds exist before anything uses them.
	assert.Regexp(t, `^crds/`, resources[0])
}

// TestKustomizeBuild builds manifests/ with the pinned kubectl and checks that the
// output holds every object §7 asks for, with the contract's webhook.
func TestKustomizeBuild(t *testing.T) {
	objs := decodeObjects(t, run(t, tool(t, "k8s"), "kustomize", repoPath(t, "manifests")))
	count := map[string]int{}
	for _, o := range objs {
		count[o.Kind]++
	}
	assert.Equal(t, map[string]int{
		"CustomResourceDefinition":     2,
		"Namespace":                    1,
		"ServiceAccount":               1,
		"ClusterRole":                  1,
		"ClusterRoleBinding":           1,
		"Role":                         1,
		"RoleBinding":                  1,
		"Service":                      1,
		"Deployment":                   1,
		"PodDisruptionBudget":          1,
		"Issuer":                       2,
		"Certificate":                  2,
		"MutatingWebhookConfiguration": 1,
	}, count)

	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	objs.one(t, "MutatingWebhookConfiguration", "secret-relay", &mwc)
	assertContractMWC(t, &mwc, mwcWant{namespace: "secret-relay", excluded: []string{"kube-system", "secret-relay"}, certManager: true})
	assertRBAC(t, objs, "secret-relay")
	assertDeployment(t, objs, "secret-relay", 2)
	assertServiceAndPDB(t, objs, "secret-relay", true)
	assertCertManagerChain(t, objs, "secret-relay")
	for _, o := range objs {
		switch o.Kind {
		case "Namespace", "MutatingWebhookConfiguration", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition":
		default:
			assert.Equal(t, "secret-relay", o.Namespace, "%s %s", o.Kind, o.Name)
		}
	}
}
