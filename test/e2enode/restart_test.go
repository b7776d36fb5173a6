package e2enode_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/secret-relay/secret-relay/relay"
)

// restartOnChange runs a Deployment in ns that asks for restart-on-change and uses
// two copies of user-credentials. Without the RBAC, an upstream change gives a
// Warning event that says what to enable; with it (enable upgrades the release),
// the next change rolls the Deployment exactly once, and its new pod's
// environment, read once at start, holds the new value.
func (w *world) restartOnChange(t *testing.T, ns string, enable func()) {
	t.Helper()
	ctx := context.Background()
	w.seedStore(t, ns)
	d := appDeployment(ns)
	d.Name = "restart"
	d.Spec.Template.Annotations = map[string]string{
		relay.AnnotationStore:           "remote-k8s-store",
		relay.AnnotationRestartOnChange: "true",
		relay.AnnotationSecrets: relayAnnotations[relay.AnnotationSecrets] + `- name: all-credentials
  dataFrom:
  - extract: {key: user-credentials}
`,
	}
	_, err := w.node.Client.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{})
	require.NoError(t, err)
	w.kubectl(t, "-n", ns, "rollout", "status", "deployment/restart", "--timeout=2m")
	username := w.upstreamUsername(t)
	w.node.WaitLog(t, ns, w.podsOf(t, ns, "app=app")[0].Name, "username="+username+" from env username", 30*time.Second)

	restartedAt := func() string {
		d, err := w.node.Client.AppsV1().Deployments(ns).Get(ctx, "restart", metav1.GetOptions{})
		require.NoError(t, err)
		return d.Spec.Template.Annotations[relay.AnnotationRestartedAt]
	}
	replicaSets := func() int {
		rs, err := w.node.Client.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=app"})
		require.NoError(t, err)
		return len(rs.Items)
	}

	t.Run("without the RBAC, a change should leave a Warning event that says what to enable, and restart nothing", func(t *testing.T) {
		w.setUpstreamUsername(t, "mary")
		var event corev1.Event
		waitFor(t, 30*time.Second, "a RestartForbidden event", func() bool {
			events, err := w.node.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "reason=RestartForbidden"})
			require.NoError(t, err)
			if len(events.Items) > 0 {
				event = events.Items[0]
			}
			return len(events.Items) > 0
		})
		t.Logf("event on %s/%s: %s", event.InvolvedObject.Kind, event.InvolvedObject.Name, event.Message)
		assert.Equal(t, corev1.EventTypeWarning, event.Type)
		assert.Equal(t, "Secret", event.InvolvedObject.Kind)
		assert.Contains(t, event.Message, "restartOnChange.enabled=true")
		assert.Empty(t, restartedAt())
		assert.Equal(t, 1, replicaSets())
	})

	t.Run("with it, one upstream change of two copies should roll the Deployment exactly once, and its new pod see the new value", func(t *testing.T) {
		enable()
		w.setUpstreamUsername(t, "john")
		changed := time.Now()
		waitFor(t, 30*time.Second, "the Deployment restarted", func() bool { return restartedAt() != "" })
		t.Logf("upstream change → restarted-at set on the template in %s", time.Since(changed).Round(10*time.Millisecond))
		first := restartedAt()
		w.kubectl(t, "-n", ns, "rollout", "status", "deployment/restart", "--timeout=2m")
		var pod corev1.Pod
		waitFor(t, time.Minute, "one live pod of the new revision", func() bool {
			var live []corev1.Pod
			for _, p := range w.podsOf(t, ns, "app=app") {
				if p.DeletionTimestamp == nil {
					live = append(live, p)
				}
			}
			if len(live) == 1 && live[0].Annotations[relay.AnnotationRestartedAt] == first {
				pod = live[0]
				return true
			}
			return false
		})
		w.node.WaitLog(t, ns, pod.Name, "username=john from env username", 30*time.Second)
		t.Logf("upstream change → the new pod's environment holds the new value in %s", time.Since(changed).Round(10*time.Millisecond))
		// Well past the quiet period: no second restart for the second copy.
		time.Sleep(3 * time.Second)
		assert.Equal(t, first, restartedAt(), "restarted once")
		assert.Equal(t, 2, replicaSets(), "one new revision")
		events, err := w.node.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "reason=Restarted"})
		require.NoError(t, err)
		require.Len(t, events.Items, 1)
		assert.Equal(t, "secret-relay restarted Deployment/restart: its copies all-credentials, pulled-secrets changed", events.Items[0].Message)
	})
}

func (w *world) upstreamUsername(t *testing.T) string {
	t.Helper()
	s, err := w.up.Client.CoreV1().Secrets("default").Get(context.Background(), "user-credentials", metav1.GetOptions{})
	require.NoError(t, err)
	return string(s.Data["username"])
}

func (w *world) setUpstreamUsername(t *testing.T, username string) {
	t.Helper()
	secrets := w.up.Client.CoreV1().Secrets("default")
	s, err := secrets.Get(context.Background(), "user-credentials", metav1.GetOptions{})
	require.NoError(t, err)
	s.Data["username"] = []byte(strings.TrimSpace(username))
	_, err = secrets.Update(context.Background(), s, metav1.UpdateOptions{})
	require.NoError(t, err)
}
