package e2e_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/secret-relay/secret-relay/relay"
	"github.com/secret-relay/secret-relay/test/cluster"
)

// TestSharedCache checks that stores of one identity on one upstream namespace share
// one watch, and that a store of another identity gets nothing from it.
func TestSharedCache(t *testing.T) {
	w := newWorld(t)
	const upstreamNS = "shared"
	reader := w.Up.SeedReader(t, upstreamNS)
	w.Up.CreateSecret(t, upstreamNS, "db", map[string]string{"password": "s3cr3t-shared"})
	stranger := w.Up.SeedReader(t, "elsewhere") // may read another namespace, not this one
	url := w.Up.URL()
	w.SeedTokenStore(t, "team-a", "store", url, upstreamNS, reader.Token)
	w.SeedTokenStore(t, "team-b", "store", url, upstreamNS, reader.Token)
	w.SeedTokenStore(t, "team-c", "store", url, upstreamNS, stranger.Token)

	ctx := cluster.Context(t)
	create := func(ns string) error {
		_, err := w.Down.Client.CoreV1().Pods(ns).Create(ctx, cluster.Pod("app", map[string]string{
			relay.AnnotationStore:   "store",
			relay.AnnotationSecrets: "- db\n",
		}), metav1.CreateOptions{})
		return err
	}
	require.NoError(t, create("team-a"))
	require.NoError(t, create("team-b"))
	for _, ns := range []string{"team-a", "team-b"} {
		s, err := w.Down.Client.CoreV1().Secrets(ns).Get(ctx, "db", metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, "s3cr3t-shared", string(s.Data["password"]))
	}
	watches := func(code string) float64 {
		return w.Relay.Metric(t, "secret_relay_upstream_requests_total", `verb="watch"`, `code="`+code+`"`, `store="SecretStore team-`)
	}
	require.Eventually(t, func() bool { return watches("200") >= 1 }, 10*time.Second, 50*time.Millisecond)
	assert.Equal(t, 1.0, watches("200"), "two stores of one identity: one watch")

	// The stranger's store names the same server and namespace: its pods must be
	// refused by the upstream, never served from the cache the others share.
	err := create("team-c")
	require.Error(t, err)
	assert.True(t, strings.Contains(err.Error(), `secret-relay: upstream refused to read Secret "db" in namespace "shared" of store store (Forbidden)`), "%v", err)
	_, err = w.Down.Client.CoreV1().Secrets("team-c").Get(ctx, "db", metav1.GetOptions{})
	assert.Error(t, err, "no copy for the stranger")
}
