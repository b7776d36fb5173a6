package manifests_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/yaml"
)

func TestChartLints(t *testing.T) {
	for name, set := range map[string][]string{
		"defaults":        nil,
		"no cert-manager": {"certificates.certManager.enabled=false"},
		"servicemonitor":  {"metrics.serviceMonitor.enabled=true", "webhook.extraExcludedNamespaces={team-a}"},
		"client CA and network policy": {"webhook.clientCA.configMap=apiserver-webhook-ca", "networkPolicy.enabled=true",
			"networkPolicy.webhookFrom[0].ipBlock.cidr=10.0.0.0/24", "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.monitoring=true"},
	} {
		t.Run(name, func(t *testing.T) {
			args := []string{"lint", "--strict", chartDir}
			for _, s := range set {
				args = append(args, "--set", s)
			}
			out := helm(t, args...)
			assert.Contains(t, string(out), "0 chart(s) failed")
		})
	}
}

func TestChartMetadata(t *testing.T) {
	data, err := os.ReadFile(repoPath(t, chartDir, "Chart.yaml"))
	require.NoError(t, err)
	var chart struct {
		APIVersion, Name, Version, AppVersion string
	}
	require.NoError(t, yaml.Unmarshal(data, &chart))
	assert.Equal(t, "v2", chart.APIVersion)
	assert.Equal(t, "secret-relay", chart.Name)
	assert.Equal(t, "0.1.0", chart.Version)
	assert.NotEmpty(t, chart.AppVersion)
}

// TestChartCRDsMatchManifests keeps the chart's copy of the CRDs identical to
// manifests/crds.
func TestChartCRDsMatchManifests(t *testing.T) {
	want, err := filepath.Glob(repoPath(t, "manifests", "crds", "*.yaml"))
	require.NoError(t, err)
	got, err := filepath.Glob(repoPath(t, chartDir, "crds", "*.yaml"))
	require.NoError(t, err)
	base := func(paths []string) []string {
		var out []string
		for _, p := range paths {
			out = append(out, filepath.Base(p))
		}
		return out
	}
	require.Equal(t, base(want), base(got), "the chart's crds/ holds the same files as manifests/crds/")
	for _, w := range want {
		a, err := os.ReadFile(w)
		require.NoError(t, err)
		b, err := os.ReadFile(repoPath(t, chartDir, "crds", filepath.Base(w)))
		require.NoError(t, err)
		assert.True(t, bytes.Equal(a, b), "%s differs: copy manifests/crds/ into %s/crds/", filepath.Base(w), chartDir)
	}
}

// leaves returns the dotted paths of a values tree's leaves; empty maps and lists
// are leaves.
func leaves(prefix string, v any) []string {
	m, ok := v.(map[string]any)
	if !ok || len(m) == 0 {
		return []string{prefix}
	}
	var out []string
	for k, child := range m {
		p := k
		if prefix != "" {
			p = prefix + "." + k
		}
		// resources is documented as one value.
		if p == "resources" {
			out = append(out, p)
			continue
		}
		out = append(out, leaves(p, child)...)
	}
	sort.Strings(out)
	return out
}

// TestChartValuesDocumented checks that the chart README documents every value and
// that values.yaml has a comment above every key.
func TestChartValuesDocumented(t *testing.T) {
	data, err := os.ReadFile(repoPath(t, chartDir, "values.yaml"))
	require.NoError(t, err)
	var values map[string]any
	require.NoError(t, yaml.Unmarshal(data, &values))
	readme, err := os.ReadFile(repoPath(t, chartDir, "README.md"))
	require.NoError(t, err)
	for _, path := range leaves("", values) {
		assert.Contains(t, string(readme), "`"+path+"`", "README.md documents %s", path)
	}

	// Every leaf key line is preceded by a comment line (nested maps may share the
	// comment of their parent section, so only lines with a value are checked).
	lines := strings.Split(string(data), "\n")
	for i, line := range lines {
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") || strings.HasPrefix(trimmed, "-") || !strings.Contains(trimmed, ":") {
			continue
		}
		if strings.HasSuffix(trimmed, ":") {
			continue // a section
		}
		indent := len(line) - len(strings.TrimLeft(line, " "))
		if parentIsResources(lines, i, indent) {
			continue
		}
		prev := ""
		if i > 0 {
			prev = strings.TrimSpace(lines[i-1])
		}
		assert.True(t, strings.HasPrefix(prev, "#"), "values.yaml line %d (%s) has no comment above it", i+1, trimmed)
	}
}

// parentIsResources reports whether line i sits inside the top-level resources
// block, which values.yaml documents as a whole.
func parentIsResources(lines []string, i, indent int) bool {
	if indent == 0 {
		return false
	}
	for j := i - 1; j >= 0; j-- {
		l := lines[j]
		if strings.TrimSpace(l) == "" || strings.HasPrefix(strings.TrimSpace(l), "#") {
			continue
		}
		if len(l)-len(strings.TrimLeft(l, " ")) == 0 {
			return strings.HasPrefix(l, "resources:")
		}
	}
	return false
}

func TestChartServiceMonitor(t *testing.T) {
	assert.Empty(t, helmTemplate(t, "secret-relay").all("ServiceMonitor"), "off by default")

	objs := helmTemplate(t, "relay-system", "metrics.serviceMonitor.enabled=true")
	monitors := objs.all("ServiceMonitor")
	require.Len(t, monitors, 1)
	var sm struct {
		Spec struct {
			Selector struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"selector"`
			Endpoints []struct {
				Port string `json:"port"`
				Path string `json:"path"`
			} `json:"endpoints"`
		} `json:"spec"`
	}
	require.NoError(t, yaml.Unmarshal(monitors[0].raw, &sm))
	assert.Equal(t, "relay-system", monitors[0].Namespace)
	require.Len(t, sm.Spec.Endpoints, 1)
	assert.Equal(t, "http-metrics", sm.Spec.Endpoints[0].Port)
	assert.Equal(t, "/metrics", sm.Spec.Endpoints[0].Path)
	d, _ := deployment(t, objs)
	for k, v := range sm.Spec.Selector.MatchLabels {
		assert.Equal(t, v, d.Spec.Template.Labels[k])
	}
}

// TestChartRendersSameKindsAsManifests checks that the chart with default values
// renders the same kinds of object as the plain install (the chart installs the CRDs
// from its crds/ directory and leaves the namespace to helm --create-namespace).
func TestChartRendersSameKindsAsManifests(t *testing.T) {
	kinds := func(objs objects) []string {
		var out []string
		for _, o := range objs {
			if o.Kind != "Namespace" && o.Kind != "CustomResourceDefinition" {
				out = append(out, o.Kind+"/"+o.Name)
			}
		}
		sort.Strings(out)
		return slices.Compact(out)
	}
	plain := decodeObjects(t, run(t, tool(t, "k8s"), "kustomize", repoPath(t, "manifests")))
	assert.Equal(t, kinds(plain), kinds(helmTemplate(t, "secret-relay")))
}

func TestChartClientCA(t *testing.T) {
	_, c := deployment(t, helmTemplate(t, "secret-relay"))
	for _, a := range c.Args {
		assert.NotContains(t, a, "--client-ca-file", "off by default")
	}

	objs := helmTemplate(t, "relay-system", "webhook.clientCA.configMap=apiserver-webhook-ca", "webhook.clientCA.key=bundle.pem",
		"webhook.extraExcludedNamespaces={team-a,team-b}")
	d, c := deployment(t, objs)
	assert.Contains(t, c.Args, "--client-ca-file=/etc/secret-relay/client-ca/bundle.pem")
	assert.Contains(t, c.Args, "--excluded-namespaces=team-a,team-b", "the relay refuses what the webhook configuration excludes")
	var mounted, volume bool
	for _, m := range c.VolumeMounts {
		mounted = mounted || m.Name == "client-ca" && m.MountPath == "/etc/secret-relay/client-ca" && m.ReadOnly
	}
	for _, v := range d.Spec.Template.Spec.Volumes {
		volume = volume || v.Name == "client-ca" && v.ConfigMap != nil && v.ConfigMap.Name == "apiserver-webhook-ca"
	}
	assert.True(t, mounted, "the bundle is mounted read-only")
	assert.True(t, volume, "from the ConfigMap, which the kubelet keeps current")
}

func TestChartNetworkPolicy(t *testing.T) {
	assert.Empty(t, helmTemplate(t, "secret-relay").all("NetworkPolicy"), "off by default")
	out, err := exec.Command(tool(t, "helm"), "template", "x", repoPath(t, chartDir), "--set", "networkPolicy.enabled=true").CombinedOutput()
	require.Error(t, err, "enabled without peers: %s", out)
	assert.Contains(t, string(out), "networkPolicy.webhookFrom must list the peers")

	objs := helmTemplate(t, "relay-system", "networkPolicy.enabled=true", "networkPolicy.webhookFrom[0].ipBlock.cidr=10.0.0.0/24")
	policies := objs.all("NetworkPolicy")
	require.Len(t, policies, 1)
	var np networkingv1.NetworkPolicy
	require.NoError(t, yaml.Unmarshal(policies[0].raw, &np))
	assert.Equal(t, "relay-system", np.Namespace)
	assert.Equal(t, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}, np.Spec.PolicyTypes)
	require.Len(t, np.Spec.Ingress, 2)
	webhookRule, metricsRule := np.Spec.Ingress[0], np.Spec.Ingress[1]
	assert.Equal(t, 9443, webhookRule.Ports[0].Port.IntValue())
	assert.Equal(t, []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/24"}}}, webhookRule.From)
	assert.Equal(t, 8080, metricsRule.Ports[0].Port.IntValue())
	assert.Empty(t, metricsRule.From, "probes and metrics from anywhere by default")
	d, _ := deployment(t, objs)
	for k, v := range np.Spec.PodSelector.MatchLabels {
		assert.Equal(t, v, d.Spec.Template.Labels[k], "selects the webhook pods")
	}
}
