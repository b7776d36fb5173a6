package e2enode_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/secret-relay/secret-relay/relay"
	"github.com/secret-relay/secret-relay/test/node"
)

const (
	relayNamespace = "secret-relay"
	relaySelector  = "app.kubernetes.io/name=secret-relay"
)

// TestChart installs the Helm chart on the real node with chart-generated
// certificates and walks the seed through it, then rolls, disrupts and kills
// secret-relay under concurrent pod creation, counting failed admissions.
//
// The node's kube-proxy updates its rules at most every 5 s, as on a large cluster,
// and the load includes reviews posted on new connections (see load). Without
// both, a rolling update without the shutdown protection failed nothing here
// either, at 40 and at 110 creates/s: the API server's own long-lived connections
// end cleanly with secret-relay's graceful shutdown, and it retries a reset one.
func TestChart(t *testing.T) {
	// kube-proxy updates its rules at most every 5 s, as on a large cluster: a
	// terminating replica stays reachable through the ClusterIP that long after its
	// endpoint turned unready, which is what the shutdown protection is for.
	w := newWorld(t, node.Options{ProxyMinSyncPeriod: 5 * time.Second})
	w.importRelay(t, relayRepository+":"+relayTag)
	chart := filepath.Join(w.root, "manifests", "charts", "secret-relay")

	t.Run("helm install should bring up both replicas Ready, with the PDB in force and the webhook called through its Service", func(t *testing.T) {
		start := time.Now()
		w.helm(t, "install", "secret-relay", chart, "--namespace", relayNamespace, "--create-namespace",
			"--set", "certificates.certManager.enabled=false",
			"--set", "image.repository="+relayRepository, "--set", "image.tag="+relayTag, "--set", "image.pullPolicy=Never",
			"--wait", "--timeout", "3m")
		t.Logf("helm install --wait took %s", time.Since(start).Round(100*time.Millisecond))
		w.waitRelayReplicas(t, 2)
		w.checkWebhookThroughService(t)
		// The chart passes the container's memory limit (256Mi) down; the relay gives
		// the Go runtime 85% of it as its soft limit.
		pod := w.podsOf(t, relayNamespace, relaySelector)[0].Name
		limit := 256 << 20
		assert.Equal(t, float64(int64(float64(limit)*0.85)), w.metric(t, pod, "go_gc_gomemlimit_bytes"), "GOMEMLIMIT in the running pod")
		w.checkPDB(t)
	})

	t.Run("the seed walkthrough: an annotated Deployment's container should read peter from its env and its mounted file", func(t *testing.T) {
		w.walkthrough(t, "default")
	})

	t.Run("a Deployment deleted should take its copy with it, through the garbage collector, within 30 s", func(t *testing.T) {
		w.deletedWithItsDeployment(t, "gc")
	})

	t.Run("a Deployment's declaration edited with kubectl apply, and rolled back, should roll out; another Deployment claiming its copy should be denied", func(t *testing.T) {
		w.rollouts(t, "rollout")
	})

	t.Run("an upstream rotation should reach the mounted file inside the running container", func(t *testing.T) {
		w.rotate(t, "default")
	})

	t.Run("restart-on-change: without its RBAC an event says what to enable; with it one change of two copies rolls the Deployment once", func(t *testing.T) {
		w.restartOnChange(t, "restarts", func() {
			w.helm(t, "upgrade", "secret-relay", chart, "--namespace", relayNamespace, "--reuse-values",
				"--set", "restartOnChange.enabled=true", "--wait", "--timeout", "3m")
		})
	})

	t.Run("a soak of 2 minutes with a 2 s grace period, pods coming and going and upstream changes: no copy a pod or owner uses is ever gone", func(t *testing.T) {
		grace := func(d string) {
			w.helm(t, "upgrade", "secret-relay", chart, "--namespace", relayNamespace, "--reuse-values",
				"--set", "orphanGracePeriod="+d, "--wait", "--timeout", "3m")
			w.waitRolledOut(t)
		}
		grace("2s")
		w.soak(t, "soak", 2*time.Minute)
		grace("10m")
	})

	w.seedStore(t, "load")

	t.Run("a rolling update of secret-relay under concurrent pod creation should fail no admission", func(t *testing.T) {
		r := w.underLoad(t, func() {
			w.helm(t, "upgrade", "secret-relay", chart, "--namespace", relayNamespace, "--reuse-values",
				"--set-string", "podAnnotations.rollout="+strconv.FormatInt(time.Now().Unix(), 10), "--wait", "--timeout", "3m")
			w.waitRolledOut(t)
		})
		t.Logf("rolling update: %s", r)
		assert.NotEmpty(t, r.admitted)
		assert.Empty(t, r.failures, "failed admissions during the rolling update")
	})

	t.Run("deleting the replica that serves, while kube-proxy's rules still send it traffic, should fail no admission", func(t *testing.T) {
		r := w.underLoad(t, func() { w.deleteBehindProxy(t, w.servingReplica(t).Name) })
		t.Logf("pod deletion, kube-proxy %s behind: %s", proxyLag, r)
		assert.NotEmpty(t, r.admitted)
		assert.Empty(t, r.failures, "failed admissions while a secret-relay pod was deleted")
	})

	t.Run("SIGKILL of the replica that serves, under the same load: the other keeps admitting and the killed one comes back Ready", func(t *testing.T) {
		var (
			victim corev1.Pod
			pid    int
			killed time.Time
			back   time.Duration
		)
		r := w.underLoad(t, func() {
			// Kill the replica that gets the most reviews: the API server keeps its
			// connections open, and a replica it sends little to breaks little.
			victim = w.servingReplica(t)
			restarts := victim.Status.ContainerStatuses[0].RestartCount
			pid = w.containerPID(t, victim.Status.ContainerStatuses[0].ContainerID)
			killed = time.Now()
			require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
			waitFor(t, 2*time.Minute, "the killed container restarted and Ready", func() bool {
				p, err := w.node.Client.CoreV1().Pods(relayNamespace).Get(context.Background(), victim.Name, metav1.GetOptions{})
				return err == nil && p.Status.ContainerStatuses[0].RestartCount > restarts && p.Status.ContainerStatuses[0].Ready
			})
			back = time.Since(killed)
		})
		t.Logf("SIGKILL of %s (process %d): Ready again after %s; %s", victim.Name, pid, back.Round(100*time.Millisecond), r)
		// An abrupt stop breaks what was in flight on the killed process, and new
		// connections sent to it before its endpoint turned unready: 12-17 in runs
		// here, within 1 s. After that, the other replica admits everything.
		var last time.Duration
		for _, f := range r.failures {
			last = max(last, f.at.Sub(killed))
		}
		t.Logf("the last failed create came %s after the kill", last.Round(10*time.Millisecond))
		assert.Less(t, last, 10*time.Second, "creates still failed long after the kill")
		assert.Positive(t, r.admittedAfter(killed.Add(last)), "nothing was admitted after the failures stopped")
	})

	t.Run("without the shutdown protection, the same deletion should fail admissions", func(t *testing.T) {
		// The teeth of the deletion test: it catches what preStop and
		// --shutdown-delay prevent. The rollout removes them; the deleted pod has none.
		w.removeShutdownProtection(t)
		// Until the Deployment's controller has seen the change, the old pods look
		// rolled out: wait for the rollout first, then for its old pods to go.
		w.kubectl(t, "-n", relayNamespace, "rollout", "status", "deployment/secret-relay", "--timeout=3m")
		w.waitRolledOut(t)
		r := w.underLoad(t, func() { w.deleteBehindProxy(t, w.servingReplica(t).Name) })
		t.Logf("pod deletion without preStop, --shutdown-delay=0s, kube-proxy %s behind: %s", proxyLag, r)
		assert.NotEmpty(t, r.failures, "no admission failed without the shutdown protection")
	})

	t.Run("secret-relay's logs in its pods should hold no secret value", func(t *testing.T) {
		values := []string{"peter", "paul", "mary", "john", "asdf1234"}
		logs := w.relayPodLogs(t)
		require.NotEmpty(t, logs)
		for pod, log := range logs {
			require.NotEmpty(t, log, pod)
			for _, v := range values {
				for _, form := range []string{v, base64.StdEncoding.EncodeToString([]byte(v))} {
					assert.NotContains(t, log, form, "a secret value in the log of %s", pod)
				}
			}
		}
	})

	t.Run("with no replica running, every create under the load should fail: the load counts failed admissions", func(t *testing.T) {
		// The other subtests count no failure; this shows they could. failurePolicy
		// is Fail, so a pod the webhook cannot review is not created.
		w.kubectl(t, "-n", relayNamespace, "scale", "deployment/secret-relay", "--replicas=0")
		waitFor(t, time.Minute, "no secret-relay pod left", func() bool { return len(w.podsOf(t, relayNamespace, relaySelector)) == 0 })
		r := w.underLoad(t, func() {})
		t.Logf("no replica: %s", r)
		assert.Empty(t, r.admitted)
		assert.NotEmpty(t, r.failures)
		w.kubectl(t, "-n", relayNamespace, "scale", "deployment/secret-relay", "--replicas=2")
		w.waitRolledOut(t)
	})
}

// servingReplica is the secret-relay pod whose admissions count grows under the
// load: the one the API server's connection goes to.
func (w *world) servingReplica(t *testing.T) corev1.Pod {
	t.Helper()
	pods := w.podsOf(t, relayNamespace, relaySelector)
	require.Len(t, pods, 2)
	before := []float64{w.admissions(t, pods[0].Name), w.admissions(t, pods[1].Name)}
	time.Sleep(time.Second)
	grew := []float64{w.admissions(t, pods[0].Name) - before[0], w.admissions(t, pods[1].Name) - before[1]}
	t.Logf("admissions in one second: %s %.0f, %s %.0f", pods[0].Name, grew[0], pods[1].Name, grew[1])
	if grew[1] > grew[0] {
		return pods[1]
	}
	return pods[0]
}

// admissions is the sum of a relay pod's secret_relay_admissions_total.
func (w *world) admissions(t *testing.T, pod string) float64 {
	t.Helper()
	return w.metric(t, pod, "secret_relay_admissions_total")
}

// metric is the sum of a relay pod's samples of metric name, read through the API
// server's pod proxy from its probe port; 0 when there are none.
func (w *world) metric(t *testing.T, pod, name string) float64 {
	t.Helper()
	body, err := w.node.Client.CoreV1().Pods(relayNamespace).ProxyGet("http", pod, "8080", "/metrics", nil).DoRaw(context.Background())
	require.NoError(t, err)
	var sum float64
	for _, line := range strings.Split(string(body), "\n") {
		if line == name || strings.HasPrefix(line, name+" ") || strings.HasPrefix(line, name+"{") {
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			require.NoError(t, err)
			sum += v
		}
	}
	return sum
}

// walkthrough applies the README's Deployment in ns and checks its container's own
// output.
func (w *world) walkthrough(t *testing.T, ns string) {
	t.Helper()
	w.seedStore(t, ns)
	ctx := context.Background()
	start := time.Now()
	_, err := w.node.Client.AppsV1().Deployments(ns).Create(ctx, appDeployment(ns), metav1.CreateOptions{})
	require.NoError(t, err)
	var pod corev1.Pod
	waitFor(t, 2*time.Minute, "a Running pod of the Deployment", func() bool {
		pods := w.podsOf(t, ns, "app=app")
		if len(pods) == 1 && len(pods[0].Status.ContainerStatuses) == 1 && pods[0].Status.ContainerStatuses[0].Ready {
			pod = pods[0]
			return true
		}
		return false
	})
	t.Logf("Deployment created → its container Running and Ready in %s", time.Since(start).Round(10*time.Millisecond))
	s, err := w.node.Client.CoreV1().Secrets(ns).Get(ctx, "pulled-secrets", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, "secret-relay", s.Labels[relay.LabelManagedBy])
	deployment, err := w.node.Client.AppsV1().Deployments(ns).Get(ctx, "app", metav1.GetOptions{})
	require.NoError(t, err)
	require.Len(t, s.OwnerReferences, 1, "the copy names the Deployment above the pod")
	assert.Equal(t, deployment.UID, s.OwnerReferences[0].UID)
	assert.Contains(t, pod.Annotations["secret-relay.io/status"], "pulled-secrets")
	w.node.WaitLog(t, ns, pod.Name, "username=peter from env username", 30*time.Second)
	w.node.WaitLog(t, ns, pod.Name, "username=peter from file /etc/secret/username", 30*time.Second)
}

// deletedWithItsDeployment walks the README's Deployment through ns (before the
// rotation, whose value the walkthrough does not expect), deletes it as
// kubectl does (in the background) and waits for the garbage collector to delete
// its copy.
func (w *world) deletedWithItsDeployment(t *testing.T, ns string) {
	t.Helper()
	ctx := context.Background()
	w.walkthrough(t, ns) // seedStore, within, creates ns
	require.NoError(t, w.node.Client.AppsV1().Deployments(ns).Delete(ctx, "app",
		metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationBackground)}))
	deleted := time.Now()
	waitFor(t, 30*time.Second, "the copy deleted with its Deployment", func() bool {
		_, err := w.node.Client.CoreV1().Secrets(ns).Get(ctx, "pulled-secrets", metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
	t.Logf("Deployment deleted → its copy gone in %s", time.Since(deleted).Round(10*time.Millisecond))
	// Its pods go at the same time: none of them, terminating, brings it back.
	time.Sleep(3 * time.Second)
	_, err := w.node.Client.CoreV1().Secrets(ns).Get(ctx, "pulled-secrets", metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err), "the copy stays deleted: %v", err)
}

// rotate changes the username upstream and measures, from the write to the
// container's own log line, how long it took to reach the mounted file.
func (w *world) rotate(t *testing.T, ns string) {
	t.Helper()
	ctx := context.Background()
	pod := w.podsOf(t, ns, "app=app")[0]
	secrets := w.up.Client.CoreV1().Secrets("default")
	s, err := secrets.Get(ctx, "user-credentials", metav1.GetOptions{})
	require.NoError(t, err)
	s.Data["username"] = []byte("paul")
	wrote := time.Now()
	_, err = secrets.Update(ctx, s, metav1.UpdateOptions{})
	require.NoError(t, err)
	line := w.node.WaitLog(t, ns, pod.Name, "username=paul from file /etc/secret/username", 2*time.Minute)
	nanos, err := strconv.ParseInt(strings.Fields(line)[0], 10, 64)
	require.NoError(t, err)
	t.Logf("upstream write → the container's log line: %s (kubelet refreshes Secret volumes every syncFrequency, 2s on this node)",
		time.Unix(0, nanos).Sub(wrote).Round(time.Millisecond))
}

func (w *world) readyReplicas(t *testing.T) int {
	t.Helper()
	d, err := w.node.Client.AppsV1().Deployments(relayNamespace).Get(context.Background(), "secret-relay", metav1.GetOptions{})
	require.NoError(t, err)
	return int(d.Status.ReadyReplicas)
}

// waitRelayReplicas waits for n Running, Ready secret-relay pods.
func (w *world) waitRelayReplicas(t *testing.T, n int) {
	t.Helper()
	waitFor(t, 2*time.Minute, fmt.Sprintf("%d Ready secret-relay pods", n), func() bool {
		ready := 0
		for _, p := range w.podsOf(t, relayNamespace, relaySelector) {
			if p.DeletionTimestamp == nil && len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].Ready {
				ready++
			}
		}
		return ready == n
	})
}

// waitRolledOut waits until only the Deployment's current pods are left: old ones
// are gone, not only terminating.
func (w *world) waitRolledOut(t *testing.T) {
	t.Helper()
	waitFor(t, 3*time.Minute, "the rollout done and the old pods gone", func() bool {
		pods := w.podsOf(t, relayNamespace, relaySelector)
		if len(pods) != 2 {
			return false
		}
		for _, p := range pods {
			if p.DeletionTimestamp != nil || len(p.Status.ContainerStatuses) != 1 || !p.Status.ContainerStatuses[0].Ready {
				return false
			}
		}
		return true
	})
}

// checkWebhookThroughService checks that the registration names the Service, not a
// URL: the walkthrough's admissions then prove the API server reached
// /mutate-pods through it.
func (w *world) checkWebhookThroughService(t *testing.T) {
	t.Helper()
	cfg, err := w.node.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(context.Background(), "secret-relay", metav1.GetOptions{})
	require.NoError(t, err)
	require.Len(t, cfg.Webhooks, 1)
	cc := cfg.Webhooks[0].ClientConfig
	assert.Nil(t, cc.URL)
	require.NotNil(t, cc.Service)
	assert.Equal(t, relayNamespace, cc.Service.Namespace)
	assert.Equal(t, "secret-relay", cc.Service.Name)
	assert.Equal(t, "/mutate-pods", *cc.Service.Path)
	assert.NotEmpty(t, cc.CABundle)
}

// checkPDB evicts one replica, which the budget allows, and then the other, which
// it must refuse while the first is replaced.
func (w *world) checkPDB(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	waitFor(t, time.Minute, "the PDB counting 2 healthy pods", func() bool {
		pdb, err := w.node.Client.PolicyV1().PodDisruptionBudgets(relayNamespace).Get(ctx, "secret-relay", metav1.GetOptions{})
		return err == nil && pdb.Status.CurrentHealthy == 2 && pdb.Status.DisruptionsAllowed == 1
	})
	pods := w.podsOf(t, relayNamespace, relaySelector)
	require.Len(t, pods, 2)
	evict := func(name string) error {
		return w.node.Client.CoreV1().Pods(relayNamespace).EvictV1(ctx, &policyv1.Eviction{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: relayNamespace},
		})
	}
	require.NoError(t, evict(pods[0].Name), "the first eviction")
	err := evict(pods[1].Name)
	assert.True(t, apierrors.IsTooManyRequests(err), "the second eviction should be refused by the PDB, got %v", err)
	w.waitRolledOut(t)
}

// proxyLag is how long deleteBehindProxy holds kube-proxy: less than the chart's
// preStop sleep (5 s) and --shutdown-delay (3 s) together, so the pod outlasts the
// rules that still name it.
const proxyLag = 5 * time.Second

// deleteBehindProxy deletes a secret-relay pod with kube-proxy suspended for
// proxyLag, so the Service's rules keep sending it new connections after the
// deletion: how a busy node, whose kube-proxy lags behind the endpoints, sees a
// rollout. It returns once the pod is gone and its replacement Ready.
func (w *world) deleteBehindProxy(t *testing.T, victim string) {
	t.Helper()
	ctx := context.Background()
	resume := w.node.Suspend(t, "kube-proxy")
	require.NoError(t, w.node.Client.CoreV1().Pods(relayNamespace).Delete(ctx, victim, metav1.DeleteOptions{}))
	time.Sleep(proxyLag)
	resume()
	waitFor(t, 2*time.Minute, "the deleted pod gone and its replacement Ready", func() bool {
		_, err := w.node.Client.CoreV1().Pods(relayNamespace).Get(ctx, victim, metav1.GetOptions{})
		return apierrors.IsNotFound(err) && w.readyReplicas(t) == 2
	})
}

// containerPID is the host PID of a container's process, as containerd knows it.
func (w *world) containerPID(t *testing.T, containerID string) int {
	t.Helper()
	id := strings.TrimPrefix(containerID, "containerd://")
	out := w.node.Ctr(t, "tasks", "ls")
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == id {
			pid, err := strconv.Atoi(f[1])
			require.NoError(t, err)
			return pid
		}
	}
	t.Fatalf("no containerd task %s in:\n%s", id, out)
	return 0
}

// removeShutdownProtection drops the preStop sleep and sets --shutdown-delay=0s.
func (w *world) removeShutdownProtection(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	d, err := w.node.Client.AppsV1().Deployments(relayNamespace).Get(ctx, "secret-relay", metav1.GetOptions{})
	require.NoError(t, err)
	c := &d.Spec.Template.Spec.Containers[0]
	c.Lifecycle = nil
	for i, a := range c.Args {
		if strings.HasPrefix(a, "--shutdown-delay=") {
			c.Args[i] = "--shutdown-delay=0s"
		}
	}
	_, err = w.node.Client.AppsV1().Deployments(relayNamespace).Update(ctx, d, metav1.UpdateOptions{})
	require.NoError(t, err)
}
