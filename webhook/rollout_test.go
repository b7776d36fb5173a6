package webhook_test

import (
	"context"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"

	"github.com/secret-relay/secret-relay/relay"
	"github.com/secret-relay/secret-relay/webhook"
)

// The declarations of one copy, pulled-secrets, that a rollout moves between.
const (
	oneKey  = `[{name: pulled-secrets, data: [{secretKey: username, remoteRef: {key: user-credentials, property: username}}]}]`
	twoKeys = `[{name: pulled-secrets, data: [{secretKey: username, remoteRef: {key: user-credentials, property: username}}, {secretKey: password, remoteRef: {key: user-credentials, property: password}}]}]`
	allKeys = `[{name: pulled-secrets, dataFrom: [{extract: {key: user-credentials}}]}]`
)

// copyUsers stands in for the relayed pods cache: the controller of each pod that
// uses a copy, by namespace/name.
type copyUsers struct {
	synced bool
	pods   map[string][]*metav1.OwnerReference
}

func (u *copyUsers) Users(namespace, name string) ([]*metav1.OwnerReference, bool) {
	return u.pods[namespace+"/"+name], u.synced
}

// rollout is a downstream cluster with Deployments web and api, their ReplicaSets,
// and a mutator that may move a copy to a new declaration.
type rollout struct {
	t      *testing.T
	client *fake.Clientset
	users  *copyUsers
	events *record.FakeRecorder
	m      *webhook.Mutator
}

func newRollout(t *testing.T) *rollout {
	r := &rollout{t: t, client: fake.NewClientset(), users: &copyUsers{synced: true, pods: map[string][]*metav1.OwnerReference{}},
		events: record.NewFakeRecorder(10)}
	honorDryRun(r.client)
	var err error
	r.m, err = webhook.NewMutator(webhook.MutatorConfig{
		Stores: upstream, Tokens: testTokens, Local: relay.ClientsetLocalSecrets{Client: r.client},
		Workloads: replicaSets{"rs-web-1": deploymentRef("web", "d-web"), "rs-web-2": deploymentRef("web", "d-web"), "rs-api": deploymentRef("api", "d-api")},
		Users:     r.users, Templates: relay.TemplateReader{Client: r.client}, Recorder: r.events,
	})
	require.NoError(t, err)
	r.declare("web", "d-web", oneKey)
	r.declare("api", "d-api", allKeys)
	return r
}

// declare creates or updates Deployment name, its pod template asking for secrets.
func (r *rollout) declare(name string, uid types.UID, secrets string) {
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: uid}}
	d.Spec.Template.Annotations = map[string]string{relay.AnnotationStore: "remote-k8s-store", relay.AnnotationSecrets: secrets}
	deployments := r.client.AppsV1().Deployments("default")
	if _, err := deployments.Create(context.Background(), d, metav1.CreateOptions{}); err != nil {
		_, err = deployments.Update(context.Background(), d, metav1.UpdateOptions{})
		require.NoError(r.t, err)
	}
}

// admit relays a pod of ReplicaSet rs (none: a bare pod) that asks for secrets, and
// on success counts it among the copy's users.
func (r *rollout) admit(rs types.UID, secrets string, dryRun bool) (webhook.Result, error) {
	p := seedWith(secrets)
	if rs != "" {
		p = replicaSetPod(string(rs), rs)
		p.Annotations[relay.AnnotationSecrets] = secrets
	}
	res, err := r.m.Relay(context.Background(), "default", p, dryRun)
	if err == nil && !dryRun {
		r.users.pods["default/pulled-secrets"] = append(r.users.pods["default/pulled-secrets"], metav1.GetControllerOf(p))
	}
	return res, err
}

func (r *rollout) copyKeys() []string {
	s, err := r.client.CoreV1().Secrets("default").Get(context.Background(), "pulled-secrets", metav1.GetOptions{})
	require.NoError(r.t, err)
	return slices.Sorted(maps.Keys(s.Data))
}

func requireOtherSource(t *testing.T, err error) {
	t.Helper()
	require.Error(t, err)
	assert.Contains(t, webhook.Describe(err), "is relayed from a different source")
}

func TestRollouts(t *testing.T) {
	t.Run("An edited Deployment's new pods should move its copy to the new declaration, with a warning and events naming the old source.", func(t *testing.T) {
		r := newRollout(t)
		_, err := r.admit("rs-web-1", oneKey, false)
		require.NoError(t, err)
		r.declare("web", "d-web", twoKeys)
		res, err := r.admit("rs-web-2", twoKeys, false)
		require.NoError(t, err)
		assert.Equal(t, []string{"password", "username"}, r.copyKeys())
		require.Len(t, res.Warnings, 1)
		assert.True(t, strings.HasPrefix(res.Warnings[0], "secret-relay: "), res.Warnings[0])
		assert.Contains(t, res.Warnings[0], `it was relayed from {"store":{"kind":"SecretStore","name":"remote-k8s-store"},"data":[{"secretKey":"username"`)
		require.Len(t, r.events.Events, 2, "one on the copy, one on the ReplicaSet")
		assert.Contains(t, <-r.events.Events, `Normal SourceChanged Secret "pulled-secrets" follows the new declaration of Deployment/web; it was relayed from {"store"`)

		t.Run("and its rollback should move it back.", func(t *testing.T) {
			r.declare("web", "d-web", oneKey)
			res, err := r.admit("rs-web-1", oneKey, false)
			require.NoError(t, err)
			assert.Equal(t, []string{"username"}, r.copyKeys())
			assert.Len(t, res.Warnings, 1)
		})
		t.Run("and a pod of its old revision, which no longer declares it, should be denied.", func(t *testing.T) {
			_, err := r.admit("rs-web-2", twoKeys, false)
			requireOtherSource(t, err)
			assert.Equal(t, []string{"username"}, r.copyKeys())
		})
	})

	t.Run("Another Deployment's pod should never move a copy that one uses.", func(t *testing.T) {
		r := newRollout(t)
		_, err := r.admit("rs-web-1", oneKey, false)
		require.NoError(t, err)
		_, err = r.admit("rs-api", allKeys, false)
		requireOtherSource(t, err)
		assert.Equal(t, []string{"username"}, r.copyKeys())
	})

	t.Run("A pod whose controller reference names web's ReplicaSet, forged, should not move web's copy.", func(t *testing.T) {
		r := newRollout(t)
		_, err := r.admit("rs-web-1", oneKey, false)
		require.NoError(t, err)
		_, err = r.admit("rs-web-2", allKeys, false) // web's template still declares oneKey
		requireOtherSource(t, err)
		assert.Equal(t, []string{"username"}, r.copyKeys())
	})

	t.Run("A copy that a bare pod also uses should keep its source.", func(t *testing.T) {
		r := newRollout(t)
		_, err := r.admit("rs-web-1", oneKey, false)
		require.NoError(t, err)
		r.users.pods["default/pulled-secrets"] = append(r.users.pods["default/pulled-secrets"], nil)
		r.declare("web", "d-web", twoKeys)
		_, err = r.admit("rs-web-2", twoKeys, false)
		requireOtherSource(t, err)
	})

	t.Run("Before the relayed pods are listed, a copy should keep its source.", func(t *testing.T) {
		r := newRollout(t)
		_, err := r.admit("rs-web-1", oneKey, false)
		require.NoError(t, err)
		r.users.synced = false
		r.declare("web", "d-web", twoKeys)
		_, err = r.admit("rs-web-2", twoKeys, false)
		requireOtherSource(t, err)
	})

	t.Run("A bare pod should not take over a copy, even one no pod is known to use.", func(t *testing.T) {
		r := newRollout(t)
		_, err := r.admit("", oneKey, false)
		require.NoError(t, err)
		_, err = r.admit("", twoKeys, false)
		requireOtherSource(t, err)                     // the first pod uses it
		delete(r.users.pods, "default/pulled-secrets") // or it is still in flight
		_, err = r.admit("", twoKeys, false)
		requireOtherSource(t, err)
		assert.Equal(t, []string{"username"}, r.copyKeys())
	})

	t.Run("A dryRun should give the same verdict and warning, and write nothing.", func(t *testing.T) {
		r := newRollout(t)
		_, err := r.admit("rs-web-1", oneKey, false)
		require.NoError(t, err)
		r.declare("web", "d-web", twoKeys)
		res, err := r.admit("rs-web-2", twoKeys, true)
		require.NoError(t, err)
		assert.Len(t, res.Warnings, 1)
		assert.Equal(t, []string{"username"}, r.copyKeys())
		assert.Empty(t, r.events.Events)
	})
}
