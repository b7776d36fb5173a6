package e2e_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/secret-relay/secret-relay/relay"
	"github.com/secret-relay/secret-relay/test/cluster"
)

// TestUpstreamUnreachable stops the upstream API server: a pod whose Secret has a
// managed copy is admitted with a warning, one without a copy is denied at once.
func TestUpstreamUnreachable(t *testing.T) {
	const upstreamTimeout = time.Second
	w := newWorld(t, "--upstream-timeout", upstreamTimeout.String())
	w.SeedStore(t, "default", "remote-k8s-store")
	annotations := map[string]string{relay.AnnotationStore: "remote-k8s-store", relay.AnnotationSecrets: seedAnnotation}
	_, err := w.Down.Client.CoreV1().Pods("default").Create(cluster.Context(t), cluster.Pod("before", annotations), metav1.CreateOptions{})
	require.NoError(t, err)
	copyBefore, err := w.Down.Client.CoreV1().Secrets("default").Get(cluster.Context(t), "pulled-secrets", metav1.GetOptions{})
	require.NoError(t, err)

	w.Up.Stop(t)
	// The relay learns of the outage when its watch fails; until then its cache is
	// as current as the upstream was a moment ago.
	require.Eventually(t, func() bool { return w.Relay.Metric(t, "secret_relay_upstream_watch_broken") > 0 }, 10*time.Second, 20*time.Millisecond,
		"the relay should notice the broken watch")

	t.Run("A pod with a managed copy should be admitted with a warning.", func(t *testing.T) {
		warnings := &cluster.WarningCollector{}
		client := w.Down.ClientWithWarnings(t, warnings)
		var created bool
		took := cluster.Timed(func() {
			_, err = client.CoreV1().Pods("default").Create(cluster.Context(t), cluster.Pod("during", annotations), metav1.CreateOptions{})
			created = err == nil
		})
		require.True(t, created, "admitted from the copy: %v", err)
		assert.Contains(t, warnings.All(), "secret-relay: upstream unreachable, using copy synced at "+copyBefore.Annotations[relay.AnnotationSyncedAt])
		assert.Less(t, took, upstreamTimeout+time.Second)
		after, err := w.Down.Client.CoreV1().Secrets("default").Get(cluster.Context(t), "pulled-secrets", metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, copyBefore.Data, after.Data, "the copy is kept as it was")
	})

	t.Run("A pod without a copy should be denied within the upstream timeout plus a second.", func(t *testing.T) {
		w.Down.EnsureNamespace(t, "no-copy")
		w.SeedStore(t, "no-copy", "remote-k8s-store")
		var err error
		took := cluster.Timed(func() {
			_, err = w.Down.Client.CoreV1().Pods("no-copy").Create(cluster.Context(t), cluster.Pod("p", annotations), metav1.CreateOptions{})
		})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "secret-relay: upstream of store SecretStore/remote-k8s-store is unreachable")
		assert.Less(t, took, upstreamTimeout+time.Second)
		t.Logf("denied in %s", took.Round(time.Millisecond))
	})

	t.Run("A store whose upstream never answers should be denied within the upstream timeout plus a second.", func(t *testing.T) {
		ns := "black-hole"
		w.SeedSilentStore(t, ns)
		var err error
		took := cluster.Timed(func() {
			_, err = w.Down.Client.CoreV1().Pods(ns).Create(cluster.Context(t), cluster.Pod("p", map[string]string{
				relay.AnnotationStore: "silent", relay.AnnotationSecrets: seedAnnotation,
			}), metav1.CreateOptions{})
		})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "secret-relay: upstream of store SecretStore/silent is unreachable")
		assert.Less(t, took, upstreamTimeout+time.Second)
		t.Logf("denied in %s", took.Round(time.Millisecond))
	})

	w.Up.Restart(t)
	restarted := time.Now()

	t.Run("After the upstream is back, pods should be relayed again.", func(t *testing.T) {
		_, err := w.Down.Client.CoreV1().Pods("no-copy").Create(cluster.Context(t), cluster.Pod("after", annotations), metav1.CreateOptions{})
		require.NoError(t, err)
	})

	t.Run("After the upstream is back, syncs should catch up within 10 s.", func(t *testing.T) {
		ctx := cluster.Context(t)
		s, err := w.Up.Client.CoreV1().Secrets("default").Get(ctx, "user-credentials", metav1.GetOptions{})
		require.NoError(t, err)
		s.Data["username"] = []byte("s3cr3t-rotated-username")
		_, err = w.Up.Client.CoreV1().Secrets("default").Update(ctx, s, metav1.UpdateOptions{})
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			local, err := w.Down.Client.CoreV1().Secrets("default").Get(ctx, "pulled-secrets", metav1.GetOptions{})
			return err == nil && string(local.Data["username"]) == "s3cr3t-rotated-username"
		}, 10*time.Second-time.Since(restarted), 20*time.Millisecond)
		t.Logf("the copy followed %s after the restart", time.Since(restarted).Round(time.Millisecond))
	})
}
