package e2e_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/secret-relay/secret-relay/relay"
	"github.com/secret-relay/secret-relay/test/cluster"
)

// TestOrphans checks contract §6, "Owners and cleanup", for copies without owners:
// a copy that only a bare pod used is deleted a grace period after that pod went,
// one a live pod uses never is, and deleted by hand, it is written again.
func TestOrphans(t *testing.T) {
	const grace = 3 * time.Second
	w := newWorld(t, "--orphan-grace-period", grace.String())
	w.SeedStore(t, "default", "remote-k8s-store")
	ctx := cluster.Context(t)
	pods := w.Down.Client.CoreV1().Pods("default")
	secrets := w.Down.Client.CoreV1().Secrets("default")
	bare := func(name, copyName string) {
		t.Helper()
		_, err := pods.Create(ctx, cluster.Pod(name, map[string]string{relay.AnnotationStore: "remote-k8s-store", relay.AnnotationSecrets: `- name: ` + copyName + `
  data:
  - {secretKey: username, remoteRef: {key: user-credentials, property: username}}
`}), metav1.CreateOptions{})
		require.NoError(t, err)
	}
	bare("short-lived", "short-lived-copy")
	bare("long-lived", "long-lived-copy")
	got, err := pods.Get(ctx, "long-lived", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, "true", got.Labels[relay.LabelRelayed], "the label the relay watches pods by")

	// No kubelet here: a pod without a node is gone as soon as it is deleted.
	require.NoError(t, pods.Delete(ctx, "short-lived", metav1.DeleteOptions{}))
	deleted := time.Now()
	require.Eventually(t, func() bool {
		_, err := secrets.Get(ctx, "short-lived-copy", metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	}, grace+10*time.Second, 100*time.Millisecond, "the copy only a deleted pod used")
	took := time.Since(deleted)
	t.Logf("bare pod deleted → its copy deleted in %s (grace %s)", took.Round(10*time.Millisecond), grace)
	assert.GreaterOrEqual(t, took, grace, "never before the grace period")
	assert.Equal(t, 1.0, w.Relay.Metric(t, "secret_relay_orphans_deleted_total"))
	// Events are written in the background, after the deletion.
	require.Eventually(t, func() bool {
		events, err := w.Down.Client.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "reason=OrphanDeleted"})
		require.NoError(t, err)
		return len(events.Items) == 1
	}, 5*time.Second, 50*time.Millisecond, "one OrphanDeleted event")

	// Twice the grace period more, and the copy the live pod uses is still there.
	time.Sleep(2 * grace)
	_, err = secrets.Get(ctx, "long-lived-copy", metav1.GetOptions{})
	require.NoError(t, err, "a copy a live pod uses is never deleted")

	// Deleted by hand while the live pod uses it, the copy is written again.
	require.NoError(t, secrets.Delete(ctx, "long-lived-copy", metav1.DeleteOptions{}))
	deleted = time.Now()
	require.Eventually(t, func() bool {
		s, err := secrets.Get(ctx, "long-lived-copy", metav1.GetOptions{})
		return err == nil && string(s.Data["username"]) == "peter"
	}, 10*time.Second, 50*time.Millisecond, "a deleted copy a live pod uses is written again within 10 s")
	t.Logf("copy deleted by hand → written again in %s", time.Since(deleted).Round(10*time.Millisecond))
}

// TestOwnedCopyRecreated checks contract §6, "A managed copy deleted": a copy whose
// owner lives, though no pod uses it (a Deployment scaled to zero), is written
// again when someone deletes it, with its owner. No controllers run here: the
// Deployment and its ReplicaSet are objects alone, and nothing garbage-collects.
func TestOwnedCopyRecreated(t *testing.T) {
	w := newWorld(t)
	w.SeedStore(t, "default", "remote-k8s-store")
	ctx := cluster.Context(t)
	rs := deploymentAndReplicaSet(t, w.Down, "default", "scaled")
	pod := cluster.Pod("scaled-1", map[string]string{relay.AnnotationStore: "remote-k8s-store", relay.AnnotationSecrets: seedAnnotation})
	pod.OwnerReferences = []metav1.OwnerReference{*metav1.NewControllerRef(rs, appsv1.SchemeGroupVersion.WithKind("ReplicaSet"))}
	pods := w.Down.Client.CoreV1().Pods("default")
	_, err := pods.Create(ctx, pod, metav1.CreateOptions{})
	require.NoError(t, err)
	secrets := w.Down.Client.CoreV1().Secrets("default")
	copied, err := secrets.Get(ctx, "pulled-secrets", metav1.GetOptions{})
	require.NoError(t, err)
	require.Len(t, copied.OwnerReferences, 1)
	owner := copied.OwnerReferences[0]
	assert.Equal(t, "Deployment", owner.Kind)

	// Scaled to zero: its pod goes, the Deployment stays.
	require.NoError(t, pods.Delete(ctx, "scaled-1", metav1.DeleteOptions{}))
	require.Eventually(t, func() bool {
		_, err := pods.Get(ctx, "scaled-1", metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	}, 10*time.Second, 50*time.Millisecond)
	time.Sleep(time.Second) // the relayed pods cache sees it go

	require.NoError(t, secrets.Delete(ctx, "pulled-secrets", metav1.DeleteOptions{}))
	deleted := time.Now()
	require.Eventually(t, func() bool {
		s, err := secrets.Get(ctx, "pulled-secrets", metav1.GetOptions{})
		return err == nil && string(s.Data["username"]) == "peter"
	}, 10*time.Second, 50*time.Millisecond, "a deleted copy a live owner uses is written again within 10 s")
	t.Logf("copy of a Deployment with no pod deleted by hand → written again in %s", time.Since(deleted).Round(10*time.Millisecond))
	again, err := secrets.Get(ctx, "pulled-secrets", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, []metav1.OwnerReference{owner}, again.OwnerReferences, "with its owner, so that the garbage collector keeps it")

	// With the Deployment gone too, a deletion is final.
	require.NoError(t, w.Down.Client.AppsV1().Deployments("default").Delete(ctx, "scaled", metav1.DeleteOptions{}))
	require.NoError(t, secrets.Delete(ctx, "pulled-secrets", metav1.DeleteOptions{}))
	time.Sleep(4 * time.Second)
	_, err = secrets.Get(ctx, "pulled-secrets", metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err), "nothing uses it: it stays deleted (%v)", err)
}
