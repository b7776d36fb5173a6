package relay_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	metadatafake "k8s.io/client-go/metadata/fake"
	"k8s.io/utils/ptr"

	"github.com/secret-relay/secret-relay/relay"
)

func controllerRef(apiVersion, kind, name string, uid types.UID) metav1.OwnerReference {
	return metav1.OwnerReference{APIVersion: apiVersion, Kind: kind, Name: name, UID: uid, Controller: ptr.To(true)}
}

// ownerOf is the reference a copy carries to the workload ref names.
func ownerOf(ref metav1.OwnerReference) metav1.OwnerReference {
	ref.Controller, ref.BlockOwnerDeletion = ptr.To(false), ptr.To(false)
	return ref
}

func podOwnedBy(refs ...metav1.OwnerReference) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: "prod", OwnerReferences: refs}}
}

// knownControllers are the controllers downstream, by name: each with its UID and
// its own controller reference.
type knownControllers map[string]struct {
	uid    types.UID
	parent *metav1.OwnerReference
}

func (k knownControllers) ControllerOf(_ context.Context, _ string, ref metav1.OwnerReference) (*metav1.OwnerReference, bool, error) {
	if ref.Name == "unreadable" {
		return nil, false, errors.New("the downstream API server did not answer")
	}
	c, ok := k[ref.Kind+"/"+ref.Name]
	if !ok || c.uid != ref.UID {
		return nil, false, nil
	}
	return c.parent, true, nil
}

func TestWorkloadOf(t *testing.T) {
	deployment := controllerRef("apps/v1", "Deployment", "web", "d-1")
	cronJob := controllerRef("batch/v1", "CronJob", "nightly", "cj-1")
	known := knownControllers{
		"ReplicaSet/web-abc": {uid: "rs-1", parent: &deployment},
		"ReplicaSet/alone":   {uid: "rs-2"},
		"Job/nightly-123":    {uid: "j-1", parent: &cronJob},
		"StatefulSet/db":     {uid: "ss-1"},
		"DaemonSet/agent":    {uid: "ds-1"},
		"Job/once":           {uid: "j-2"},
	}
	for _, test := range []struct {
		name string
		pod  *corev1.Pod
		want relay.Workload
		err  bool
	}{
		{name: "A pod without a controller should be its own workload, owning nothing.", pod: podOwnedBy()},
		{name: "A ReplicaSet's pod should belong to its Deployment.",
			pod: podOwnedBy(controllerRef("apps/v1", "ReplicaSet", "web-abc", "rs-1")), want: relay.Workload{Ref: ownerOf(deployment), Owns: true}},
		{name: "A ReplicaSet without a Deployment should be the workload.",
			pod:  podOwnedBy(controllerRef("apps/v1", "ReplicaSet", "alone", "rs-2")),
			want: relay.Workload{Ref: ownerOf(controllerRef("apps/v1", "ReplicaSet", "alone", "rs-2")), Owns: true}},
		{name: "A Job's pod should belong to its CronJob.",
			pod: podOwnedBy(controllerRef("batch/v1", "Job", "nightly-123", "j-1")), want: relay.Workload{Ref: ownerOf(cronJob), Owns: true}},
		{name: "A Job without a CronJob should be the workload.",
			pod: podOwnedBy(controllerRef("batch/v1", "Job", "once", "j-2")), want: relay.Workload{Ref: ownerOf(controllerRef("batch/v1", "Job", "once", "j-2")), Owns: true}},
		{name: "A StatefulSet should be the workload.",
			pod: podOwnedBy(controllerRef("apps/v1", "StatefulSet", "db", "ss-1")), want: relay.Workload{Ref: ownerOf(controllerRef("apps/v1", "StatefulSet", "db", "ss-1")), Owns: true}},
		{name: "A DaemonSet should be the workload.",
			pod: podOwnedBy(controllerRef("apps/v1", "DaemonSet", "agent", "ds-1")), want: relay.Workload{Ref: ownerOf(controllerRef("apps/v1", "DaemonSet", "agent", "ds-1")), Owns: true}},
		{name: "A reference that is not the pod's controller should be ignored.",
			pod: podOwnedBy(metav1.OwnerReference{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-abc", UID: "rs-1"})},
		{name: "A controller that does not exist should own nothing: the collector would delete the copy.",
			pod:  podOwnedBy(controllerRef("apps/v1", "StatefulSet", "forged", "ss-9")),
			want: relay.Workload{Ref: ownerOf(controllerRef("apps/v1", "StatefulSet", "forged", "ss-9"))}},
		{name: "A controller of that name but another UID should own nothing.",
			pod:  podOwnedBy(controllerRef("apps/v1", "StatefulSet", "db", "ss-old")),
			want: relay.Workload{Ref: ownerOf(controllerRef("apps/v1", "StatefulSet", "db", "ss-old"))}},
		{name: "A controller of a kind secret-relay cannot check should own nothing.",
			pod:  podOwnedBy(controllerRef("argoproj.io/v1alpha1", "Rollout", "web", "ro-1")),
			want: relay.Workload{Ref: ownerOf(controllerRef("argoproj.io/v1alpha1", "Rollout", "web", "ro-1"))}},
		{name: "A kind of the same name in another group should own nothing.",
			pod:  podOwnedBy(controllerRef("example.com/v1", "ReplicaSet", "web-abc", "rs-1")),
			want: relay.Workload{Ref: ownerOf(controllerRef("example.com/v1", "ReplicaSet", "web-abc", "rs-1"))}},
		{name: "A controller that cannot be read should own nothing, and say why.",
			pod:  podOwnedBy(controllerRef("apps/v1", "StatefulSet", "unreadable", "ss-2")),
			want: relay.Workload{Ref: ownerOf(controllerRef("apps/v1", "StatefulSet", "unreadable", "ss-2"))}, err: true},
	} {
		t.Run(test.name, func(t *testing.T) {
			got, err := relay.WorkloadOf(context.Background(), "prod", test.pod, known)
			if test.err {
				require.Error(t, err)
			} else {
				require.NoError(t, err)
			}
			assert.Equal(t, test.want, got)
		})
	}
}

func TestWorkloadOwners(t *testing.T) {
	web := relay.Workload{Ref: ownerOf(controllerRef("apps/v1", "Deployment", "web", "d-1")), Owns: true}
	api := relay.Workload{Ref: ownerOf(controllerRef("apps/v1", "Deployment", "api", "d-2")), Owns: true}
	desired := planned("pulled-secrets", corev1.SecretTypeOpaque, "SecretStore/remote-k8s-store", map[string]string{"username": "peter"})

	t.Run("A copy that lacks the pod's workload among its owners should be written.", func(t *testing.T) {
		existing := desired.DeepCopy()
		want := desired.DeepCopy()
		web.Own(want)
		write, err := relay.CheckExisting(existing, want)
		require.NoError(t, err)
		assert.True(t, write)
	})
	t.Run("A copy that names the workload among others should not be written.", func(t *testing.T) {
		existing := desired.DeepCopy()
		existing.OwnerReferences = []metav1.OwnerReference{api.Ref, web.Ref}
		want := desired.DeepCopy()
		web.Own(want)
		write, err := relay.CheckExisting(existing, want)
		require.NoError(t, err)
		assert.False(t, write)
	})
	t.Run("A workload that owns nothing should add no owner.", func(t *testing.T) {
		want := desired.DeepCopy()
		relay.Workload{Ref: web.Ref}.Own(want)
		assert.Empty(t, want.OwnerReferences)
	})
}

// metadataObject is an object as the metadata client serves it.
func metadataObject(gvk schema.GroupVersionKind, name string, uid types.UID, refs ...metav1.OwnerReference) runtime.Object {
	return &metav1.PartialObjectMetadata{
		TypeMeta:   metav1.TypeMeta{APIVersion: gvk.GroupVersion().String(), Kind: gvk.Kind},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "prod", UID: uid, OwnerReferences: refs},
	}
}

func TestControllerCache(t *testing.T) {
	scheme := runtime.NewScheme()
	metav1.AddMetaToScheme(scheme)
	deployment := controllerRef("apps/v1", "Deployment", "web", "d-1")
	rsKind := schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "ReplicaSet"}
	client := metadatafake.NewSimpleMetadataClient(scheme, metadataObject(rsKind, "web-abc", "rs-1", deployment))
	c := relay.NewControllerCache(client)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go c.Run(ctx)
	require.Eventually(t, c.Synced, 5*time.Second, 10*time.Millisecond)

	t.Run("A cached ReplicaSet should name its Deployment.", func(t *testing.T) {
		parent, ok, err := c.ControllerOf(ctx, "prod", controllerRef("apps/v1", "ReplicaSet", "web-abc", "rs-1"))
		require.NoError(t, err)
		require.True(t, ok)
		assert.Equal(t, "web", parent.Name)
		assert.Equal(t, types.UID("d-1"), parent.UID)
	})
	t.Run("A ReplicaSet of that name under another UID should not exist.", func(t *testing.T) {
		_, ok, err := c.ControllerOf(ctx, "prod", controllerRef("apps/v1", "ReplicaSet", "web-abc", "rs-9"))
		require.NoError(t, err)
		assert.False(t, ok)
	})
	t.Run("A ReplicaSet the cache does not hold yet should be read.", func(t *testing.T) {
		// Created behind the watch's back, as one just made is before its event.
		fresh := metadataObject(rsKind, "web-new", "rs-3", deployment).(*metav1.PartialObjectMetadata)
		gvr := relay.ReplicaSets
		require.NoError(t, client.Tracker().Create(gvr, fresh, "prod"))
		parent, ok, err := c.ControllerOf(ctx, "prod", controllerRef("apps/v1", "ReplicaSet", "web-new", "rs-3"))
		require.NoError(t, err)
		require.True(t, ok)
		assert.Equal(t, "web", parent.Name)
	})
	t.Run("A StatefulSet that does not exist should not exist.", func(t *testing.T) {
		_, ok, err := c.ControllerOf(ctx, "prod", controllerRef("apps/v1", "StatefulSet", "db", "ss-1"))
		require.NoError(t, err)
		assert.False(t, ok)
	})
}

func TestApplyKeepsOwners(t *testing.T) {
	web := relay.Workload{Ref: ownerOf(controllerRef("apps/v1", "Deployment", "web", "d-1")), Owns: true}
	api := relay.Workload{Ref: ownerOf(controllerRef("apps/v1", "Deployment", "api", "d-2")), Owns: true}
	for _, immutable := range []bool{false, true} {
		name := "An update should add the new workload and keep the owners there."
		if immutable {
			name = "A replaced immutable copy should keep its owners and add the new workload."
		}
		t.Run(name, func(t *testing.T) {
			existing := planned("pulled-secrets", corev1.SecretTypeOpaque, "SecretStore/remote-k8s-store", map[string]string{"username": "stale"})
			existing.OwnerReferences = []metav1.OwnerReference{web.Ref}
			existing.Immutable = ptr.To(immutable)
			client := fake.NewClientset(existing)
			desired := planned("pulled-secrets", corev1.SecretTypeOpaque, "SecretStore/remote-k8s-store", map[string]string{"username": "peter"})
			api.Own(desired)
			require.NoError(t, relay.ClientsetLocalSecrets{Client: client}.Apply(context.Background(), existing, desired, false))
			got, err := client.CoreV1().Secrets("prod").Get(context.Background(), "pulled-secrets", metav1.GetOptions{})
			require.NoError(t, err)
			assert.Equal(t, []metav1.OwnerReference{web.Ref, api.Ref}, got.OwnerReferences)
			assert.Equal(t, []byte("peter"), got.Data["username"])
		})
	}
}
