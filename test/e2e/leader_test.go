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

// TestLeaderElection runs two serve processes: both admit pods, only the leader
// writes in the background, and the other takes over when the leader stops.
func TestLeaderElection(t *testing.T) {
	w := newWorld(t)
	first := w.Relay
	second := cluster.StartRelay(t, relayBinary, suiteDir, w.Down)
	registerLog(second.LogFile)
	w.SeedStore(t, "default", "remote-k8s-store")
	ctx := cluster.Context(t)

	require.Eventually(t, first.BecameLeader, 10*time.Second, 50*time.Millisecond,
		"the first replica takes the lease")
	assert.False(t, second.BecameLeader())

	// Both replicas serve admission: register the second one too.
	second.Register(t, w.Down)
	_, err := w.Down.Client.CoreV1().Pods("default").Create(ctx, cluster.Pod("app", map[string]string{
		relay.AnnotationStore: "remote-k8s-store", relay.AnnotationSecrets: seedAnnotation,
	}), metav1.CreateOptions{})
	require.NoError(t, err)
	assert.Positive(t, first.Metric(t, "secret_relay_admissions_total", `result="admitted"`))
	assert.Positive(t, second.Metric(t, "secret_relay_admissions_total", `result="admitted"`))

	rotate := func(value string) {
		t.Helper()
		s, err := w.Up.Client.CoreV1().Secrets("default").Get(ctx, "user-credentials", metav1.GetOptions{})
		require.NoError(t, err)
		s.Data["username"] = []byte(value)
		_, err = w.Up.Client.CoreV1().Secrets("default").Update(ctx, s, metav1.UpdateOptions{})
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			local, err := w.Down.Client.CoreV1().Secrets("default").Get(ctx, "pulled-secrets", metav1.GetOptions{})
			return err == nil && string(local.Data["username"]) == value
		}, 5*time.Second, 20*time.Millisecond, "the copy follows")
	}

	rotate("s3cr3t-rotated-username")
	// The copy changes before the relay counts its write: wait for the count.
	assert.Eventually(t, func() bool { return first.Metric(t, "secret_relay_syncs_total", `result="updated"`) == 1 }, 5*time.Second, 20*time.Millisecond,
		"the leader wrote")
	assert.Zero(t, second.Metric(t, "secret_relay_syncs_total", `result="updated"`), "the follower did not")

	first.Stop(t)
	require.Eventually(t, second.BecameLeader, 20*time.Second, 50*time.Millisecond,
		"the second replica takes over")
	rotate("peter")
	assert.Eventually(t, func() bool { return second.Metric(t, "secret_relay_syncs_total", `result="updated"`) == 1 }, 5*time.Second, 20*time.Millisecond,
		"the new leader wrote")
}
