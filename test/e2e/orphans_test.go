package e2e_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
	events, err := w.Down.Client.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "reason=OrphanDeleted"})
	require.NoError(t, err)
	assert.Len(t, events.Items, 1)

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
