package e2e_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/secret-relay/secret-relay/relay"
	"github.com/secret-relay/secret-relay/test/cluster"
)

// TestSync checks contract §6: copies follow upstream changes by watch, survive an
// upstream deletion with a Warning event, and a restart rewrites nothing current.
func TestSync(t *testing.T) {
	w := newWorld(t)
	w.SeedStore(t, "default", "remote-k8s-store")
	w.Up.CreateSecret(t, "default", "db-credentials", map[string]string{"password": "s3cr3t-db-password"})
	ctx := cluster.Context(t)
	_, err := w.Down.Client.CoreV1().Pods("default").Create(ctx, cluster.Pod("app", map[string]string{
		relay.AnnotationStore:   "remote-k8s-store",
		relay.AnnotationSecrets: seedAnnotation + "- db-credentials\n",
	}), metav1.CreateOptions{})
	require.NoError(t, err)
	secrets := w.Down.Client.CoreV1().Secrets("default")

	t.Run("An upstream change should reach the local copy within 5 s, and the lag metric should show it.", func(t *testing.T) {
		before, err := secrets.Get(ctx, "pulled-secrets", metav1.GetOptions{})
		require.NoError(t, err)
		watcher, err := secrets.Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", "pulled-secrets").String(), ResourceVersion: before.ResourceVersion})
		require.NoError(t, err)
		defer watcher.Stop()

		upstream, err := w.Up.Client.CoreV1().Secrets("default").Get(ctx, "user-credentials", metav1.GetOptions{})
		require.NoError(t, err)
		upstream.Data["username"] = []byte("s3cr3t-rotated-username")
		_, err = w.Up.Client.CoreV1().Secrets("default").Update(ctx, upstream, metav1.UpdateOptions{})
		require.NoError(t, err)
		changed := time.Now()

		deadline := time.After(5 * time.Second)
		for {
			select {
			case ev := <-watcher.ResultChan():
				s, ok := ev.Object.(*corev1.Secret)
				if ev.Type != watch.Modified || !ok || string(s.Data["username"]) != "s3cr3t-rotated-username" {
					continue
				}
				t.Logf("local copy updated %s after the upstream change", time.Since(changed).Round(time.Millisecond))
				assert.Equal(t, w.Tokens(t).Token(s.Data), s.Annotations[relay.AnnotationDataHash])
				assert.Equal(t, map[string][]byte{"username": []byte("s3cr3t-rotated-username")}, s.Data, "still only the chosen key")
				require.Eventually(t, func() bool { return w.Relay.Metric(t, "secret_relay_sync_lag_seconds_count") >= 1 }, 5*time.Second, 50*time.Millisecond)
				assert.GreaterOrEqual(t, w.Relay.Metric(t, "secret_relay_syncs_total", `result="updated"`), 1.0)
				return
			case <-deadline:
				t.Fatal("the local copy did not follow the upstream change within 5 s")
			}
		}
	})

	t.Run("A copy edited by hand should be put back, though the cache keeps only a digest of its data.", func(t *testing.T) {
		copied, err := secrets.Get(ctx, "pulled-secrets", metav1.GetOptions{})
		require.NoError(t, err)
		want := copied.Data["username"]
		copied.Data["username"] = []byte("edited by hand")
		_, err = secrets.Update(ctx, copied, metav1.UpdateOptions{})
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			s, err := secrets.Get(ctx, "pulled-secrets", metav1.GetOptions{})
			require.NoError(t, err)
			return string(s.Data["username"]) == string(want)
		}, 5*time.Second, 50*time.Millisecond, "the sync puts the upstream data back")
		restored, err := secrets.Get(ctx, "pulled-secrets", metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, map[string][]byte{"username": want}, restored.Data, "the digest the cache keeps never reaches the API")
	})

	t.Run("An upstream deletion should keep the copy and leave a Warning event on it.", func(t *testing.T) {
		require.NoError(t, w.Up.Client.CoreV1().Secrets("default").Delete(ctx, "db-credentials", metav1.DeleteOptions{}))
		var event *corev1.Event
		require.Eventually(t, func() bool {
			events, err := w.Down.Client.CoreV1().Events("default").List(ctx, metav1.ListOptions{
				FieldSelector: fields.Set{"involvedObject.name": "db-credentials", "involvedObject.kind": "Secret", "reason": "UpstreamDeleted"}.String(),
			})
			require.NoError(t, err)
			if len(events.Items) == 0 {
				return false
			}
			event = &events.Items[0]
			return true
		}, 5*time.Second, 50*time.Millisecond, "a Warning event on the copy")
		assert.Equal(t, corev1.EventTypeWarning, event.Type)
		assert.Contains(t, event.Message, `upstream Secret "db-credentials" was deleted`)
		kept, err := secrets.Get(ctx, "db-credentials", metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, []byte("s3cr3t-db-password"), kept.Data["password"], "nothing is lost")
	})

	t.Run("A restarted relay should resync without rewriting current copies.", func(t *testing.T) {
		list, err := secrets.List(ctx, metav1.ListOptions{LabelSelector: relay.LabelManagedBy + "=" + relay.ManagedByValue})
		require.NoError(t, err)
		require.Len(t, list.Items, 2)
		versions := map[string]string{}
		for _, s := range list.Items {
			versions[s.Name] = s.ResourceVersion
		}
		w.Relay.Stop(t)
		restarted := cluster.StartRelay(t, relayBinary, suiteDir, w.Down)
		registerLog(restarted.LogFile)
		// Ready means every copy has been checked once against its store.
		require.Eventually(t, func() bool {
			return restarted.Metric(t, "secret_relay_syncs_total") >= float64(len(list.Items))
		}, 10*time.Second, 50*time.Millisecond)
		for name, rv := range versions {
			s, err := secrets.Get(ctx, name, metav1.GetOptions{})
			require.NoError(t, err)
			assert.Equal(t, rv, s.ResourceVersion, fmt.Sprintf("%s should not be rewritten", name))
		}
		assert.Zero(t, restarted.Metric(t, "secret_relay_syncs_total", `result="updated"`))
	})
}
