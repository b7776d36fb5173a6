package webhook_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"

	"github.com/secret-relay/secret-relay/relay"
	"github.com/secret-relay/secret-relay/webhook"
)

// replicaSets are the ReplicaSets downstream, each of its Deployment.
type replicaSets map[types.UID]metav1.OwnerReference

func (r replicaSets) ControllerOf(_ context.Context, _ string, ref metav1.OwnerReference) (*metav1.OwnerReference, bool, error) {
	d, ok := r[ref.UID]
	return &d, ok && ref.Kind == "ReplicaSet", nil
}

func deploymentRef(name string, uid types.UID) metav1.OwnerReference {
	return metav1.OwnerReference{APIVersion: "apps/v1", Kind: "Deployment", Name: name, UID: uid, Controller: ptr.To(true)}
}

func replicaSetPod(rs string, uid types.UID) *corev1.Pod {
	p := seedWith(seedSecrets)
	p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs, UID: uid, Controller: ptr.To(true)}}
	return p
}

func TestCopyOwners(t *testing.T) {
	client := fake.NewClientset()
	m, err := webhook.NewMutator(webhook.MutatorConfig{
		Stores: upstream, Tokens: testTokens, Local: relay.ClientsetLocalSecrets{Client: client},
		Workloads: replicaSets{"rs-web": deploymentRef("web", "d-web"), "rs-api": deploymentRef("api", "d-api")},
	})
	require.NoError(t, err)
	owners := func() []string {
		s, err := client.CoreV1().Secrets("default").Get(context.Background(), "pulled-secrets", metav1.GetOptions{})
		require.NoError(t, err)
		var names []string
		for _, o := range s.OwnerReferences {
			assert.False(t, *o.Controller, "never the copy's controller")
			assert.False(t, *o.BlockOwnerDeletion, "never blocking the workload's deletion")
			names = append(names, o.Kind+"/"+o.Name)
		}
		return names
	}
	relayPod := func(p *corev1.Pod) webhook.Result {
		res, err := m.Relay(context.Background(), "default", p, false)
		require.NoError(t, err)
		return res
	}

	t.Run("A ReplicaSet's pod should make its Deployment an owner of the copy.", func(t *testing.T) {
		relayPod(replicaSetPod("web-1", "rs-web"))
		assert.Equal(t, []string{"Deployment/web"}, owners())
	})
	t.Run("Another Deployment's pod should add its own, even when the copy is current.", func(t *testing.T) {
		relayPod(replicaSetPod("web-1", "rs-web")) // current now, and remembered so
		res := relayPod(replicaSetPod("api-1", "rs-api"))
		assert.Equal(t, []string{"pulled-secrets"}, res.Written)
		assert.Equal(t, []string{"Deployment/web", "Deployment/api"}, owners())
	})
	t.Run("A pod of a workload already an owner should write nothing.", func(t *testing.T) {
		client.ClearActions()
		res := relayPod(replicaSetPod("web-1", "rs-web"))
		assert.Empty(t, res.Written)
		for _, a := range client.Actions() {
			assert.Equal(t, "get", a.GetVerb())
		}
	})
	t.Run("A pod naming a ReplicaSet that does not exist should add no owner.", func(t *testing.T) {
		relayPod(replicaSetPod("forged", "rs-forged"))
		assert.Equal(t, []string{"Deployment/web", "Deployment/api"}, owners())
	})
}

func TestCopyOwnersWarm(t *testing.T) {
	stores := fakeStores{"remote-k8s-store": {"user-credentials": {
		ObjectMeta: metav1.ObjectMeta{Name: "user-credentials", Namespace: "default", UID: "u1", ResourceVersion: "10"},
		Data:       map[string][]byte{"username": []byte("peter")},
	}}}
	local := &versionedSecrets{}
	m, err := webhook.NewMutator(webhook.MutatorConfig{Stores: stores, Local: local, Tokens: testTokens,
		Workloads: replicaSets{"rs-web": deploymentRef("web", "d-web"), "rs-api": deploymentRef("api", "d-api")}})
	require.NoError(t, err)
	for _, rs := range []types.UID{"rs-web", "rs-web", "rs-api"} {
		_, err := m.Relay(context.Background(), "default", replicaSetPod("some", rs), false)
		require.NoError(t, err)
	}
	assert.Equal(t, 2, local.writes, "the copy verified for web's pods is written again for api's")
	s, _ := local.Get(context.Background(), "default", "pulled-secrets")
	assert.Equal(t, types.UID("d-api"), s.OwnerReferences[0].UID)
}

func TestMarkedOrphanWritten(t *testing.T) {
	client := fake.NewClientset()
	m, err := webhook.NewMutator(webhook.MutatorConfig{Stores: upstream, Tokens: testTokens, Local: relay.ClientsetLocalSecrets{Client: client}})
	require.NoError(t, err)
	_, err = m.Relay(context.Background(), "default", seedWith(seedSecrets), false)
	require.NoError(t, err)
	secrets := client.CoreV1().Secrets("default")
	s, err := secrets.Get(context.Background(), "pulled-secrets", metav1.GetOptions{})
	require.NoError(t, err)
	s.Annotations[relay.AnnotationOrphanedAt] = "2026-01-01T00:00:00Z" // the leader is about to delete it
	_, err = secrets.Update(context.Background(), s, metav1.UpdateOptions{})
	require.NoError(t, err)

	res, err := m.Relay(context.Background(), "default", seedWith(seedSecrets), false)
	require.NoError(t, err)
	assert.Equal(t, []string{"pulled-secrets"}, res.Written, "a current copy marked for deletion is written, so that the deletion no longer matches")
	s, err = secrets.Get(context.Background(), "pulled-secrets", metav1.GetOptions{})
	require.NoError(t, err)
	assert.NotContains(t, s.Annotations, relay.AnnotationOrphanedAt)
	assert.Equal(t, "peter", string(s.Data["username"]))
}
