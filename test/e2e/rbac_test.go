package e2e_test

import (
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"

	"github.com/secret-relay/secret-relay/relay"
	"github.com/secret-relay/secret-relay/test/cluster"
)

// TestShippedRBACIsEnough runs secret-relay as the ServiceAccount of
// manifests/install, with exactly its ClusterRole and Role, and walks what the
// relay does: validate a store, relay a Secret at admission, follow an upstream
// change, and warn on an upstream deletion. A missing permission fails a step; an
// extra one is caught by test/manifests.
func TestShippedRBACIsEnough(t *testing.T) {
	up, down := cluster.StartPair(t, cluster.Options{CRDDirs: []string{cluster.CRDDir()}})
	install := filepath.Join(cluster.CRDDir(), "..", "install")
	for _, f := range []string{"namespace.yaml", "serviceaccount.yaml", "rbac.yaml"} {
		out, err := exec.Command(cluster.BinaryDir()+"/kubectl", "--kubeconfig", down.Kubeconfig, "apply", "-f", filepath.Join(install, f)).CombinedOutput()
		require.NoError(t, err, string(out))
	}
	asRelay := down.KubeconfigFor(t, "secret-relay", "secret-relay")

	w := &cluster.World{Up: up, Down: down}
	w.Dynamic = dynamicClient(t, down)
	up.CreateSecret(t, "default", "user-credentials", map[string]string{"username": "peter", "password": "asdf1234"})
	up.CreateSecret(t, "default", "db-credentials", map[string]string{"password": "s3cr3t-db-password"})
	w.Reader = up.SeedReader(t, "default")
	w.Relay = cluster.StartRelay(t, relayBinary, suiteDir, down, "--kubeconfig", asRelay)
	registerLog(w.Relay.LogFile)
	w.Relay.Register(t, down)
	w.SeedStore(t, "default", "remote-k8s-store")
	waitForStoreStatus(t, w, "default", "remote-k8s-store", "True", "Valid", 10*time.Second)

	ctx := cluster.Context(t)
	_, err := down.Client.CoreV1().Pods("default").Create(ctx, cluster.Pod("app", map[string]string{
		relay.AnnotationStore: "remote-k8s-store", relay.AnnotationSecrets: seedAnnotation + "- db-credentials\n",
	}), metav1.CreateOptions{})
	require.NoError(t, err)

	// A Deployment's pod, created the moment its ReplicaSet is, as a controller
	// would: the copy names the Deployment among its owners, read with the shipped
	// RBAC, from the cache or, for a ReplicaSet the cache does not hold yet, live.
	rs := deploymentAndReplicaSet(t, down, "default", "web")
	pod := cluster.Pod("web-1", map[string]string{relay.AnnotationStore: "remote-k8s-store", relay.AnnotationSecrets: `- name: web-secrets
  data:
  - {secretKey: username, remoteRef: {key: user-credentials, property: username}}
`})
	pod.OwnerReferences = []metav1.OwnerReference{*metav1.NewControllerRef(rs, appsv1.SchemeGroupVersion.WithKind("ReplicaSet"))}
	_, err = down.Client.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{})
	require.NoError(t, err)
	copied, err := down.Client.CoreV1().Secrets("default").Get(ctx, "web-secrets", metav1.GetOptions{})
	require.NoError(t, err)
	require.Len(t, copied.OwnerReferences, 1)
	owner := copied.OwnerReferences[0]
	assert.Equal(t, rs.OwnerReferences[0].UID, owner.UID)
	assert.Equal(t, "Deployment/web", owner.Kind+"/"+owner.Name)
	assert.False(t, *owner.Controller)
	assert.False(t, *owner.BlockOwnerDeletion)

	s, err := up.Client.CoreV1().Secrets("default").Get(ctx, "user-credentials", metav1.GetOptions{})
	require.NoError(t, err)
	s.Data["username"] = []byte("s3cr3t-rotated-username")
	_, err = up.Client.CoreV1().Secrets("default").Update(ctx, s, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		local, err := down.Client.CoreV1().Secrets("default").Get(ctx, "pulled-secrets", metav1.GetOptions{})
		return err == nil && string(local.Data["username"]) == "s3cr3t-rotated-username"
	}, 5*time.Second, 20*time.Millisecond, "the sync controller writes with the shipped RBAC")

	require.NoError(t, up.Client.CoreV1().Secrets("default").Delete(ctx, "db-credentials", metav1.DeleteOptions{}))
	require.Eventually(t, func() bool {
		events, err := down.Client.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "reason=UpstreamDeleted"})
		return err == nil && len(events.Items) > 0
	}, 5*time.Second, 50*time.Millisecond, "events are written with the shipped RBAC")
	assert.NotContains(t, w.Relay.LogTail(), "forbidden", "no request of the relay was refused")
}

// deploymentAndReplicaSet creates a Deployment and a ReplicaSet it controls, as the
// Deployment controller would; no controller runs here to make either's pods.
func deploymentAndReplicaSet(t *testing.T, cp *cluster.ControlPlane, ns, name string) *appsv1.ReplicaSet {
	t.Helper()
	ctx := cluster.Context(t)
	labels := map[string]string{"app": name}
	template := corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "busybox"}}}}
	d, err := cp.Client.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: template},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	rs, err := cp.Client.AppsV1().ReplicaSets(ns).Create(ctx, &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: name + "-1", Labels: labels,
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(d, appsv1.SchemeGroupVersion.WithKind("Deployment"))}},
		Spec: appsv1.ReplicaSetSpec{Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: template},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	return rs
}

func dynamicClient(t *testing.T, cp *cluster.ControlPlane) dynamic.Interface {
	t.Helper()
	d, err := dynamic.NewForConfig(cp.Config)
	require.NoError(t, err)
	return d
}
