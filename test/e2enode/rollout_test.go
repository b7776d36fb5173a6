package e2enode_test

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/secret-relay/secret-relay/relay"
	"github.com/secret-relay/secret-relay/test/node"
)

// Declarations of pulled-secrets that the rollouts move between.
const (
	usernameOnly = `- name: pulled-secrets
  data:
  - secretKey: username
    remoteRef: {key: user-credentials, property: username}
`
	usernameAndPassword = `- name: pulled-secrets
  data:
  - secretKey: username
    remoteRef: {key: user-credentials, property: username}
  - secretKey: password
    remoteRef: {key: user-credentials, property: password}
`
	wholeSecret = `- name: pulled-secrets
  dataFrom:
  - extract: {key: user-credentials}
`
)

// readerDeployment is a Deployment whose container reads key from pulled-secrets,
// mounted, and whose template asks for secrets; JSON, for kubectl apply.
func readerDeployment(t *testing.T, ns, name, secrets, key string) string {
	spec := node.ReaderPodSpec("pulled-secrets", key)
	spec.Containers[0].Env = nil
	spec.Containers[0].Args = []string{"-file", "/etc/secret/" + key}
	d := deployment(ns, name, map[string]string{relay.AnnotationStore: "remote-k8s-store", relay.AnnotationSecrets: secrets}, spec)
	b, err := json.Marshal(d)
	require.NoError(t, err)
	return string(b)
}

// rollouts walks a Deployment in ns through an edit of its declaration, with
// kubectl apply, and a rollback, with kubectl rollout undo; then a second
// Deployment claims the same copy from another source.
func (w *world) rollouts(t *testing.T, ns string) {
	t.Helper()
	ctx := context.Background()
	w.seedStore(t, ns)
	rolledOut := func(what string) {
		t.Helper()
		start := time.Now()
		w.kubectl(t, "-n", ns, "rollout", "status", "deployment/web", "--timeout=2m")
		t.Logf("%s: rolled out in %s", what, time.Since(start).Round(10*time.Millisecond))
	}
	copyKeys := func() []string {
		s, err := w.node.Client.CoreV1().Secrets(ns).Get(ctx, "pulled-secrets", metav1.GetOptions{})
		require.NoError(t, err)
		return slices.Sorted(maps.Keys(s.Data))
	}
	sourceChanged := func() []corev1.Event {
		events, err := w.node.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "reason=SourceChanged"})
		require.NoError(t, err)
		var onReplicaSets []corev1.Event
		for _, e := range events.Items {
			if e.InvolvedObject.Kind == "ReplicaSet" {
				onReplicaSets = append(onReplicaSets, e)
			}
		}
		return onReplicaSets
	}
	readsPassword := func() {
		t.Helper()
		pods := w.podsOf(t, ns, "app=web")
		for _, p := range pods {
			if p.DeletionTimestamp == nil {
				w.node.WaitLog(t, ns, p.Name, "password=asdf1234 from file /etc/secret/password", 30*time.Second)
				return
			}
		}
		t.Fatal("no live pod of web")
	}

	w.apply(t, readerDeployment(t, ns, "web", usernameOnly, "username"))
	rolledOut("created")
	assert.Equal(t, []string{"username"}, copyKeys())

	w.apply(t, readerDeployment(t, ns, "web", usernameAndPassword, "password"))
	rolledOut("annotation edited from one key to two")
	assert.Equal(t, []string{"password", "username"}, copyKeys())
	readsPassword()
	var events []corev1.Event
	waitFor(t, 10*time.Second, "a SourceChanged event on the new ReplicaSet", func() bool { events = sourceChanged(); return len(events) == 1 })
	assert.Contains(t, events[0].Message, `Secret "pulled-secrets" follows the new declaration of Deployment/web; it was relayed from {"store":`)
	assert.NotContains(t, events[0].Message, "peter")
	t.Logf("event on %s/%s: %s", events[0].InvolvedObject.Kind, events[0].InvolvedObject.Name, events[0].Message)

	w.kubectl(t, "-n", ns, "rollout", "undo", "deployment/web")
	rolledOut("kubectl rollout undo")
	assert.Equal(t, []string{"username"}, copyKeys())
	waitFor(t, 10*time.Second, "a second SourceChanged event", func() bool { return len(sourceChanged()) == 2 })

	// Another Deployment, wanting the same local name from the whole remote Secret.
	w.apply(t, readerDeployment(t, ns, "other", wholeSecret, "username"))
	var denial string
	waitFor(t, time.Minute, "the second Deployment's pods denied", func() bool {
		events, err := w.node.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "reason=FailedCreate"})
		require.NoError(t, err)
		for _, e := range events.Items {
			if strings.HasPrefix(e.InvolvedObject.Name, "other-") && strings.Contains(e.Message, "secret-relay: ") {
				denial = e.Message
				return true
			}
		}
		return false
	})
	t.Logf("the second Deployment's ReplicaSet: %s", denial)
	assert.Contains(t, denial, `Secret "pulled-secrets" in namespace "`+ns+`" is relayed from a different source`)
	assert.Empty(t, w.podsOf(t, ns, "app=other"))
	assert.Equal(t, []string{"username"}, copyKeys(), "web's copy is untouched")
}
