package manifests_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// tlsDir is where the serving certificate is mounted: the flags' defaults.
const tlsDir = "/etc/secret-relay/tls"

// deployment decodes the secret-relay Deployment and returns it with its one
// container.
func deployment(t *testing.T, objs objects) (*appsv1.Deployment, *corev1.Container) {
	t.Helper()
	var d appsv1.Deployment
	objs.one(t, "Deployment", "secret-relay", &d)
	require.Len(t, d.Spec.Template.Spec.Containers, 1, "one container")
	return &d, &d.Spec.Template.Spec.Containers[0]
}

// assertDeploymentMountsTLS checks that the pods mount Secret secretName read-only
// where the flags expect the serving certificate.
func assertDeploymentMountsTLS(t *testing.T, objs objects, secretName string) {
	t.Helper()
	d, c := deployment(t, objs)
	var volume string
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Secret != nil && v.Secret.SecretName == secretName {
			volume = v.Name
		}
	}
	require.NotEmpty(t, volume, "a volume of Secret %s", secretName)
	assert.Contains(t, c.VolumeMounts, corev1.VolumeMount{Name: volume, MountPath: tlsDir, ReadOnly: true})
}

// assertDeployment checks the Deployment against issue 5: replicas, the
// cert-manager-style securityContext, probes, resources, the preStop drain, and the
// downward-API namespace.
func assertDeployment(t *testing.T, objs objects, ns string, replicas int32) {
	t.Helper()
	d, c := deployment(t, objs)
	pod := d.Spec.Template.Spec
	assert.Equal(t, ns, d.Namespace)
	assert.Equal(t, ptr.To(replicas), d.Spec.Replicas)
	assert.Equal(t, "secret-relay", pod.ServiceAccountName)
	require.NotNil(t, d.Spec.Selector)
	for k, v := range d.Spec.Selector.MatchLabels {
		assert.Equal(t, v, d.Spec.Template.Labels[k], "the pod template carries selector label %s", k)
	}

	if assert.NotNil(t, pod.SecurityContext, "pod securityContext") {
		psc := pod.SecurityContext
		assert.Equal(t, ptr.To(true), psc.RunAsNonRoot)
		assert.Equal(t, ptr.To[int64](65532), psc.RunAsUser)
		if assert.NotNil(t, psc.SeccompProfile) {
			assert.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, psc.SeccompProfile.Type)
		}
	}
	if assert.NotNil(t, c.SecurityContext, "container securityContext") {
		sc := c.SecurityContext
		assert.Equal(t, ptr.To(true), sc.RunAsNonRoot)
		assert.Equal(t, ptr.To[int64](65532), sc.RunAsUser)
		assert.Equal(t, ptr.To(false), sc.AllowPrivilegeEscalation)
		assert.Equal(t, ptr.To(true), sc.ReadOnlyRootFilesystem)
		assert.Nil(t, sc.Privileged)
		if assert.NotNil(t, sc.Capabilities) {
			assert.Equal(t, []corev1.Capability{"ALL"}, sc.Capabilities.Drop)
			assert.Empty(t, sc.Capabilities.Add)
		}
		if assert.NotNil(t, sc.SeccompProfile) {
			assert.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, sc.SeccompProfile.Type)
		}
	}

	require.NotEmpty(t, c.Args)
	assert.Equal(t, "serve", c.Args[0])
	assert.Contains(t, c.Env, corev1.EnvVar{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{
		FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"},
	}})
	assert.Contains(t, c.Env, corev1.EnvVar{Name: "SECRET_RELAY_MEMORY_LIMIT", ValueFrom: &corev1.EnvVarSource{
		ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.memory"},
	}}, "secret-relay knows the memory limit, and gives the Go runtime a share of it")

	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	assert.Equal(t, map[string]int32{"https": 9443, "http-metrics": 8080}, ports)

	probe := func(what string, p *corev1.Probe, path string) {
		t.Helper()
		if assert.NotNil(t, p, what) && assert.NotNil(t, p.HTTPGet, what+" httpGet") {
			assert.Equal(t, path, p.HTTPGet.Path, what)
			port := p.HTTPGet.Port
			if port.Type == intstr.String {
				port = intstr.FromInt32(ports[port.StrVal])
			}
			assert.Equal(t, intstr.FromInt32(8080), port, what+" port")
		}
	}
	probe("readinessProbe", c.ReadinessProbe, "/readyz")
	probe("livenessProbe", c.LivenessProbe, "/healthz")

	assert.NotEmpty(t, c.Resources.Requests, "resource requests")
	assert.NotEmpty(t, c.Resources.Limits, "resource limits")

	if assert.NotNil(t, c.Lifecycle, "lifecycle") && assert.NotNil(t, c.Lifecycle.PreStop, "preStop") {
		// Distroless has no shell: the native sleep action, not exec.
		assert.Nil(t, c.Lifecycle.PreStop.Exec)
		if assert.NotNil(t, c.Lifecycle.PreStop.Sleep, "preStop sleep") {
			assert.Equal(t, int64(5), c.Lifecycle.PreStop.Sleep.Seconds)
		}
	}
	if assert.NotNil(t, pod.TerminationGracePeriodSeconds) {
		assert.Greater(t, *pod.TerminationGracePeriodSeconds, int64(5), "the grace period outlasts the preStop sleep")
	}
}

// assertServiceAndPDB checks the Service (443 to the webhook port, 8080 metrics) and
// that it and the PodDisruptionBudget select the Deployment's pods.
func assertServiceAndPDB(t *testing.T, objs objects, ns string, pdb bool) {
	t.Helper()
	d, _ := deployment(t, objs)
	var svc corev1.Service
	objs.one(t, "Service", "secret-relay", &svc)
	assert.Equal(t, ns, svc.Namespace)
	assert.Equal(t, d.Spec.Selector.MatchLabels, svc.Spec.Selector)
	ports := map[int32]intstr.IntOrString{}
	for _, p := range svc.Spec.Ports {
		ports[p.Port] = p.TargetPort
	}
	assert.Equal(t, map[int32]intstr.IntOrString{443: intstr.FromString("https"), 8080: intstr.FromString("http-metrics")}, ports)

	if !pdb {
		assert.Empty(t, objs.all("PodDisruptionBudget"))
		return
	}
	var budget policyv1.PodDisruptionBudget
	objs.one(t, "PodDisruptionBudget", "secret-relay", &budget)
	assert.Equal(t, ns, budget.Namespace)
	assert.Equal(t, ptr.To(intstr.FromInt32(1)), budget.Spec.MinAvailable)
	assert.Equal(t, d.Spec.Selector, budget.Spec.Selector)
}

func TestPlainDeployment(t *testing.T) {
	var objs objects
	for _, f := range []string{"deployment.yaml", "service.yaml", "pdb.yaml"} {
		objs = append(objs, readObjects(t, "manifests/install/"+f)...)
	}
	assertDeployment(t, objs, "secret-relay", 2)
	assertServiceAndPDB(t, objs, "secret-relay", true)
	_, c := deployment(t, objs)
	assert.Equal(t, "ghcr.io/secret-relay/secret-relay:latest", c.Image)
}

func TestChartDeployment(t *testing.T) {
	objs := helmTemplate(t, "secret-relay")
	assertDeployment(t, objs, "secret-relay", 2)
	assertServiceAndPDB(t, objs, "secret-relay", true)
}

func TestChartDeploymentValues(t *testing.T) {
	objs := helmTemplate(t, "relay-system",
		"replicaCount=3",
		"image.repository=example.com/relay",
		"image.tag=v9",
		"logLevel=debug",
		"logFormat=console",
		"podDisruptionBudget.enabled=false",
		"nodeSelector.kubernetes\\.io/os=linux",
		"tolerations[0].key=dedicated",
		"tolerations[0].operator=Exists",
		"resources.requests.cpu=123m",
		"upstreamTimeout=1500ms",
		"shutdownDelay=5s",
		"extraArgs[0]=--leader-elect-lease-duration=30s",
	)
	assertDeployment(t, objs, "relay-system", 3)
	assertServiceAndPDB(t, objs, "relay-system", false)
	d, c := deployment(t, objs)
	assert.Equal(t, "example.com/relay:v9", c.Image)
	assert.Contains(t, c.Args, "--log-level=debug")
	assert.Contains(t, c.Args, "--log-format=console")
	assert.Contains(t, c.Args, "--upstream-timeout=1500ms")
	assert.Contains(t, c.Args, "--shutdown-delay=5s")
	assert.Equal(t, "--leader-elect-lease-duration=30s", c.Args[len(c.Args)-1], "extra arguments come last")
	assert.Equal(t, map[string]string{"kubernetes.io/os": "linux"}, d.Spec.Template.Spec.NodeSelector)
	assert.Equal(t, []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpExists}}, d.Spec.Template.Spec.Tolerations)
	assert.Equal(t, "123m", ptr.To(c.Resources.Requests[corev1.ResourceCPU]).String())
}
