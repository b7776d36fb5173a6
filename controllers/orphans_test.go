package controllers_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	metadatafake "k8s.io/client-go/metadata/fake"
	clienttesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"

	"github.com/secret-relay/secret-relay/controllers"
	"github.com/secret-relay/secret-relay/relay"
)

func managedCopy(name string, owners ...metav1.OwnerReference) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{
		Name: name, Namespace: "prod", UID: types.UID("uid-" + name), ResourceVersion: "1", OwnerReferences: owners,
		Labels:      map[string]string{relay.LabelManagedBy: relay.ManagedByValue},
		Annotations: map[string]string{relay.AnnotationSource: `{"store":"SecretStore/s"}`},
	}}
}

func relayedPod(name string, copies string) *metav1.PartialObjectMetadata {
	return &metav1.PartialObjectMetadata{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "prod", UID: types.UID("pod-" + name),
			Labels:      map[string]string{relay.LabelRelayed: "true"},
			Annotations: map[string]string{relay.AnnotationStatus: copies}},
	}
}

func TestOrphanSweeper(t *testing.T) {
	// The fake clientsets cannot stream a watch-list; real API servers can.
	t.Setenv("KUBE_FEATURE_WatchListClient", "false")
	owner := metav1.OwnerReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "web", UID: "d-1", Controller: ptr.To(false)}
	kube := fake.NewClientset(managedCopy("used"), managedCopy("orphan"), managedCopy("owned", owner), managedCopy("left"))
	scheme := runtime.NewScheme()
	require.NoError(t, metav1.AddMetaToScheme(scheme))
	leaving := relayedPod("leaving", `{"leaving-copy":"hmac-sha256:3"}`)
	leaving.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	meta := metadatafake.NewSimpleMetadataClient(scheme,
		relayedPod("app", `{"used":"hmac-sha256:1"}`), relayedPod("bare", `{"left":"hmac-sha256:2"}`), leaving)

	copies := relay.NewManagedSecrets(kube)
	pods := relay.NewPodUsage(meta)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	events := record.NewFakeRecorder(10)
	s, err := controllers.NewOrphanSweeper(controllers.OrphanConfig{
		Copies: copies.Informer(), Pods: pods, Client: kube, Grace: 10 * time.Minute,
		Recorder: events, Now: func() time.Time { return now },
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	exists := func(name string) bool {
		_, err := kube.CoreV1().Secrets("prod").Get(ctx, name, metav1.GetOptions{})
		if !apierrors.IsNotFound(err) {
			require.NoError(t, err)
			return true
		}
		return false
	}

	marked := func(name string) bool {
		obj, ok, _ := copies.Informer().GetStore().GetByKey("prod/" + name)
		copied, _ := relay.SecretOf(obj)
		return ok && relay.MarkedOrphan(copied)
	}

	go copies.Run(ctx)
	require.Eventually(t, copies.Synced, 5*time.Second, 10*time.Millisecond)
	t.Run("Before the relayed pods are listed, the sweep should delete nothing: every copy looks unused.", func(t *testing.T) {
		s.Sweep(ctx)
		now = now.Add(time.Hour)
		s.Sweep(ctx)
		assert.True(t, exists("used"))
		assert.True(t, exists("orphan"))
	})

	go pods.Run(ctx)
	require.Eventually(t, func() bool { return copies.Synced() && pods.Synced() }, 5*time.Second, 10*time.Millisecond)

	t.Run("A pod being deleted should still use its copy, but not as a live one.", func(t *testing.T) {
		assert.True(t, pods.Used("prod", "leaving-copy"), "kept from the sweep while its containers may read it")
		assert.False(t, pods.UsedByLive("prod", "leaving-copy"), "not written again for it once deleted")
		assert.True(t, pods.UsedByLive("prod", "used"))
	})
	t.Run("A copy nothing uses should be kept for the grace period, then deleted.", func(t *testing.T) {
		s.Sweep(ctx) // first seen unused
		now = now.Add(9 * time.Minute)
		s.Sweep(ctx)
		assert.True(t, exists("orphan"), "within the grace period")
		now = now.Add(time.Minute)
		s.Sweep(ctx)
		require.Eventually(t, func() bool { return marked("orphan") }, 5*time.Second, 10*time.Millisecond, "first marked")
		now = now.Add(controllers.MarkWait(10*time.Minute) - time.Second)
		s.Sweep(ctx)
		assert.True(t, exists("orphan"), "marked, and waiting")
		now = now.Add(time.Second)
		s.Sweep(ctx)
		assert.False(t, exists("orphan"))
		assert.Equal(t, "Normal OrphanDeleted no live pod and no owner has used this copy for 10m30s; deleted", <-events.Events)
	})
	t.Run("A copy a live pod uses, or one with an owner, should never be deleted.", func(t *testing.T) {
		now = now.Add(24 * time.Hour)
		s.Sweep(ctx)
		assert.True(t, exists("used"))
		assert.True(t, exists("owned"))
		assert.True(t, exists("left"))
	})
	t.Run("A copy whose last pod went should be deleted a grace period later.", func(t *testing.T) {
		require.NoError(t, meta.Resource(relay.Pods).Namespace("prod").Delete(ctx, "bare", metav1.DeleteOptions{}))
		require.Eventually(t, func() bool { return !pods.Used("prod", "left") }, 5*time.Second, 10*time.Millisecond)
		s.Sweep(ctx)
		now = now.Add(10*time.Minute - time.Second)
		s.Sweep(ctx)
		assert.True(t, exists("left"))
		now = now.Add(time.Second)
		s.Sweep(ctx)
		require.Eventually(t, func() bool { return marked("left") }, 5*time.Second, 10*time.Millisecond)

		t.Run("and a copy written after its mark, as an admission writes it, should be marked again, and kept a whole mark's wait.", func(t *testing.T) {
			s.Sweep(ctx)
			// An admission that found the copy current writes it, clearing the mark,
			// before its pod reaches the cache.
			left, err := kube.CoreV1().Secrets("prod").Get(ctx, "left", metav1.GetOptions{})
			require.NoError(t, err)
			delete(left.Annotations, relay.AnnotationOrphanedAt)
			_, err = kube.CoreV1().Secrets("prod").Update(ctx, left, metav1.UpdateOptions{})
			require.NoError(t, err)
			require.Eventually(t, func() bool { return !marked("left") }, 5*time.Second, 10*time.Millisecond)
			s.Sweep(ctx) // unused past the grace period still: marked again
			require.Eventually(t, func() bool { return marked("left") }, 5*time.Second, 10*time.Millisecond)
			now = now.Add(controllers.MarkWait(10*time.Minute) - time.Second)
			s.Sweep(ctx)
			assert.True(t, exists("left"), "waiting from the new mark")
		})
		t.Run("and once its wait is over, deleted.", func(t *testing.T) {
			now = now.Add(time.Second)
			s.Sweep(ctx)
			assert.False(t, exists("left"))
		})
	})

	t.Run("A copy marked that a pod uses again should lose its mark.", func(t *testing.T) {
		used, err := kube.CoreV1().Secrets("prod").Get(ctx, "used", metav1.GetOptions{})
		require.NoError(t, err)
		used.Annotations[relay.AnnotationOrphanedAt] = "2026-01-01T00:00:00Z"
		_, err = kube.CoreV1().Secrets("prod").Update(ctx, used, metav1.UpdateOptions{})
		require.NoError(t, err)
		require.Eventually(t, func() bool { return marked("used") }, 5*time.Second, 10*time.Millisecond)
		s.Sweep(ctx)
		require.Eventually(t, func() bool { return !marked("used") }, 5*time.Second, 10*time.Millisecond)
	})
}

// sweepWorld is a sweeper with a one-minute grace period over copies no pod uses,
// on a clock the test moves.
type sweepWorld struct {
	kube   *fake.Clientset
	copies *relay.ManagedSecrets
	s      *controllers.OrphanSweeper
	now    time.Time
}

func newSweepWorld(t *testing.T, logger *zap.Logger, copies ...runtime.Object) *sweepWorld {
	t.Helper()
	t.Setenv("KUBE_FEATURE_WatchListClient", "false")
	scheme := runtime.NewScheme()
	require.NoError(t, metav1.AddMetaToScheme(scheme))
	w := &sweepWorld{kube: fake.NewClientset(copies...), now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	w.copies = relay.NewManagedSecrets(w.kube)
	pods := relay.NewPodUsage(metadatafake.NewSimpleMetadataClient(scheme))
	var err error
	w.s, err = controllers.NewOrphanSweeper(controllers.OrphanConfig{
		Copies: w.copies.Informer(), Pods: pods, Client: w.kube, Grace: time.Minute,
		Recorder: record.NewFakeRecorder(10), Logger: logger, Now: func() time.Time { return w.now },
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go w.copies.Run(ctx)
	go pods.Run(ctx)
	require.Eventually(t, func() bool { return w.copies.Synced() && pods.Synced() }, 5*time.Second, 10*time.Millisecond)
	return w
}

// sweepAfter moves the clock by d and sweeps.
func (w *sweepWorld) sweepAfter(d time.Duration) {
	w.now = w.now.Add(d)
	w.s.Sweep(context.Background())
}

// get is the copy as stored, or nil once deleted.
func (w *sweepWorld) get(t *testing.T, name string) *corev1.Secret {
	t.Helper()
	s, err := w.kube.CoreV1().Secrets("prod").Get(context.Background(), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	require.NoError(t, err)
	return s
}

// cached waits until the copies cache holds name at the stored version.
func (w *sweepWorld) cached(t *testing.T, name string) {
	t.Helper()
	stored := w.get(t, name)
	require.Eventually(t, func() bool {
		obj, ok, _ := w.copies.Informer().GetStore().GetByKey("prod/" + name)
		s, _ := relay.SecretOf(obj)
		return ok && s.ResourceVersion == stored.ResourceVersion
	}, 5*time.Second, 10*time.Millisecond)
}

func TestOrphanSweeperSyncedWhileMarked(t *testing.T) {
	w := newSweepWorld(t, zap.NewNop(), managedCopy("orphan"))
	w.sweepAfter(0)
	w.sweepAfter(time.Minute)
	w.cached(t, "orphan")
	mark := w.get(t, "orphan").Annotations[relay.AnnotationOrphanedAt]
	require.NotEmpty(t, mark, "marked")

	// Its source changes more often than the mark's wait: a sync writes new data
	// every 30 s, keeping the mark, as relay.KeepOrphanMark has it.
	for i := range 2 {
		synced := w.get(t, "orphan")
		synced.Data = map[string][]byte{"password": []byte(w.now.String())}
		synced.ResourceVersion = strconv.Itoa(10 + i) // the fake clientset keeps versions as given
		_, err := w.kube.CoreV1().Secrets("prod").Update(context.Background(), synced, metav1.UpdateOptions{})
		require.NoError(t, err)
		w.cached(t, "orphan")
		w.sweepAfter(controllers.MarkWait(time.Minute) / 2)
	}
	assert.Nil(t, w.get(t, "orphan"), "deleted a mark's wait after its mark, though written since")
}

func TestOrphanSweeperKeepsValuesOutOfLogs(t *testing.T) {
	orphan := managedCopy("orphan")
	orphan.Data = map[string][]byte{"password": []byte("hunter2-value")}
	core, logs := observer.New(zap.DebugLevel)
	w := newSweepWorld(t, zap.New(core), orphan)
	// A third-party webhook that refuses a write may echo the object it was sent.
	w.kube.PrependReactor("*", "secrets", func(a clienttesting.Action) (bool, runtime.Object, error) {
		if a.GetVerb() != "update" && a.GetVerb() != "delete" {
			return false, nil, nil
		}
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, "orphan",
			errors.New(`admission webhook "audit.example.com" denied: data.password="hunter2-value"`))
	})

	w.sweepAfter(0)
	w.sweepAfter(time.Minute) // tries to mark it, and is refused
	entries := logs.FilterMessage("could not mark an unused copy").All()
	require.Len(t, entries, 1)
	for _, e := range logs.All() {
		for k, v := range e.ContextMap() {
			assert.NotContains(t, fmt.Sprint(v), "hunter2", "log field %q of %q", k, e.Message)
		}
	}
	assert.Equal(t, "the downstream API server refused it (Forbidden)", entries[0].ContextMap()["reason"])
}
