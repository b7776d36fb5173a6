package relay_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	"github.com/secret-relay/secret-relay/relay"
)

// localCopy is a Secret secret-relay manages downstream, as the API holds it.
func localCopy(typ corev1.SecretType, kv map[string]string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name: "db", Namespace: "default", UID: "uid-1", ResourceVersion: "7",
			Labels:      map[string]string{relay.LabelManagedBy: relay.ManagedByValue, "team": "a"},
			Annotations: map[string]string{"note": "kept"},
		},
		Type: typ,
		Data: bytesData(kv),
	}
}

// writes lists the writing verbs the fake clientset saw, with their dry-run flags.
func writes(kube *fake.Clientset) []string {
	var out []string
	for _, a := range kube.Actions() {
		var dry []string
		switch a := a.(type) {
		case k8stesting.CreateActionImpl:
			dry = a.CreateOptions.DryRun
		case k8stesting.UpdateActionImpl:
			dry = a.UpdateOptions.DryRun
		case k8stesting.DeleteActionImpl:
			dry = a.DeleteOptions.DryRun
		default:
			continue
		}
		out = append(out, fmt.Sprintf("%s%v", a.GetVerb(), dry))
	}
	return out
}

func TestApply(t *testing.T) {
	desired := func(typ corev1.SecretType, kv map[string]string) *corev1.Secret {
		s := localCopy(typ, kv)
		s.UID, s.ResourceVersion = "", ""
		s.Labels = map[string]string{relay.LabelManagedBy: relay.ManagedByValue, "app.kubernetes.io/part-of": "abc"}
		s.Annotations = map[string]string{relay.AnnotationDataHash: "hash"}
		return s
	}
	ctx := context.Background()

	t.Run("A new Secret should be created by secret-relay's field manager.", func(t *testing.T) {
		kube := fake.NewClientset()
		require.NoError(t, relay.ClientsetLocalSecrets{Client: kube}.Apply(ctx, nil, desired(corev1.SecretTypeOpaque, map[string]string{"k": "v"}), false))
		got, err := kube.CoreV1().Secrets("default").Get(ctx, "db", metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, []byte("v"), got.Data["k"])
		assert.Equal(t, []string{"create[]"}, writes(kube))
		assert.Equal(t, relay.ManagedByValue, kube.Actions()[0].(k8stesting.CreateActionImpl).CreateOptions.FieldManager)
	})

	t.Run("An update should replace the data, merge metadata and keep what others added.", func(t *testing.T) {
		existing := localCopy(corev1.SecretTypeOpaque, map[string]string{"k": "old", "gone": "x"})
		kube := fake.NewClientset(existing)
		require.NoError(t, relay.ClientsetLocalSecrets{Client: kube}.Apply(ctx, existing, desired(corev1.SecretTypeOpaque, map[string]string{"k": "new"}), false))
		update := kube.Actions()[0].(k8stesting.UpdateActionImpl).Object.(*corev1.Secret)
		assert.Equal(t, "7", update.ResourceVersion, "a concurrent write conflicts instead of being overwritten")
		assert.Equal(t, bytesData(map[string]string{"k": "new"}), update.Data)
		assert.Equal(t, "a", update.Labels["team"])
		assert.Equal(t, "abc", update.Labels["app.kubernetes.io/part-of"])
		assert.Equal(t, map[string]string{"note": "kept", relay.AnnotationDataHash: "hash"}, update.Annotations)
		assert.Equal(t, "old", string(existing.Data["k"]), "the cached Secret is not modified")
		assert.Equal(t, []string{"update[]"}, writes(kube))
	})

	t.Run("A Secret without labels or annotations should get them.", func(t *testing.T) {
		existing := localCopy(corev1.SecretTypeOpaque, nil)
		existing.Labels, existing.Annotations = nil, nil
		kube := fake.NewClientset(existing)
		require.NoError(t, relay.ClientsetLocalSecrets{Client: kube}.Apply(ctx, existing, desired(corev1.SecretTypeOpaque, nil), false))
		update := kube.Actions()[0].(k8stesting.UpdateActionImpl).Object.(*corev1.Secret)
		assert.Equal(t, relay.ManagedByValue, update.Labels[relay.LabelManagedBy])
		assert.Equal(t, "hash", update.Annotations[relay.AnnotationDataHash])
	})

	t.Run("A new type should replace the Secret, deleting only the version that was checked.", func(t *testing.T) {
		existing := localCopy(corev1.SecretTypeOpaque, map[string]string{"k": "v"})
		kube := fake.NewClientset(existing)
		require.NoError(t, relay.ClientsetLocalSecrets{Client: kube}.Apply(ctx, existing, desired(corev1.SecretTypeDockerConfigJson, map[string]string{".dockerconfigjson": "{}"}), false))
		assert.Equal(t, []string{"delete[]", "create[]"}, writes(kube))
		pre := kube.Actions()[0].(k8stesting.DeleteActionImpl).DeleteOptions.Preconditions
		require.NotNil(t, pre)
		assert.Equal(t, "uid-1", string(*pre.UID))
		assert.Equal(t, "7", *pre.ResourceVersion)
		got, err := kube.CoreV1().Secrets("default").Get(ctx, "db", metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, corev1.SecretTypeDockerConfigJson, got.Type)
	})

	t.Run("An immutable Secret should be replaced when its data changes, and updated in place when only metadata does.", func(t *testing.T) {
		existing := localCopy(corev1.SecretTypeOpaque, map[string]string{"k": "v"})
		existing.Immutable = ptr.To(true)
		kube := fake.NewClientset(existing)
		changed := desired(corev1.SecretTypeOpaque, map[string]string{"k": "new"})
		require.NoError(t, relay.ClientsetLocalSecrets{Client: kube}.Apply(ctx, existing, changed, false))
		assert.Equal(t, []string{"delete[]", "create[]"}, writes(kube))

		kube = fake.NewClientset(existing)
		require.NoError(t, relay.ClientsetLocalSecrets{Client: kube}.Apply(ctx, existing, desired(corev1.SecretTypeOpaque, map[string]string{"k": "v"}), false))
		assert.Equal(t, []string{"update[]"}, writes(kube))
	})

	t.Run("A replace whose Secret is already gone should still create it.", func(t *testing.T) {
		existing := localCopy(corev1.SecretTypeOpaque, map[string]string{"k": "v"})
		kube := fake.NewClientset()
		require.NoError(t, relay.ClientsetLocalSecrets{Client: kube}.Apply(ctx, existing, desired(corev1.SecretTypeTLS, map[string]string{"tls.crt": "c", "tls.key": "k"}), false))
		assert.Equal(t, []string{"delete[]", "create[]"}, writes(kube))
	})

	t.Run("A replace whose delete is refused should not create.", func(t *testing.T) {
		existing := localCopy(corev1.SecretTypeOpaque, map[string]string{"k": "v"})
		kube := fake.NewClientset(existing)
		kube.PrependReactor("delete", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
			return true, nil, apierrors.NewConflict(corev1.Resource("secrets"), "db", errors.New("the object has been modified"))
		})
		err := relay.ClientsetLocalSecrets{Client: kube}.Apply(ctx, existing, desired(corev1.SecretTypeTLS, map[string]string{"tls.crt": "c", "tls.key": "k"}), false)
		assert.True(t, apierrors.IsConflict(err), "%v", err)
		assert.Equal(t, []string{"delete[]"}, writes(kube), "someone else's change is never removed")
	})

	t.Run("A dry run should ask the API server to store nothing, at every step.", func(t *testing.T) {
		existing := localCopy(corev1.SecretTypeOpaque, map[string]string{"k": "v"})
		for _, c := range []struct {
			existing *corev1.Secret
			desired  *corev1.Secret
			want     []string
		}{
			{nil, desired(corev1.SecretTypeOpaque, nil), []string{"create[All]"}},
			{existing, desired(corev1.SecretTypeOpaque, map[string]string{"k": "w"}), []string{"update[All]"}},
			{existing, desired(corev1.SecretTypeTLS, map[string]string{"tls.crt": "c", "tls.key": "k"}), []string{"delete[All]"}},
		} {
			kube := fake.NewClientset()
			kube.PrependReactor("*", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) { return true, nil, nil })
			require.NoError(t, relay.ClientsetLocalSecrets{Client: kube}.Apply(ctx, c.existing, c.desired, true))
			assert.Equal(t, c.want, writes(kube))
		}
	})
}

func TestDescribeWriteError(t *testing.T) {
	data := map[string][]byte{"password": []byte("hunter2-secret")}
	encoded := base64.StdEncoding.EncodeToString(data["password"])
	for _, c := range []struct {
		name string
		err  error
		want string
	}{
		{"timeout", context.DeadlineExceeded, "the downstream API server did not answer in time"},
		{"server timeout", apierrors.NewServerTimeout(corev1.Resource("secrets"), "create", 1), "the downstream API server did not answer in time"},
		{"the API server's message", apierrors.NewForbidden(corev1.Resource("secrets"), "db", errors.New("quota exceeded")),
			`secrets "db" is forbidden: quota exceeded`},
		{"a message holding a value", apierrors.NewBadRequest("policy denied: password=hunter2-secret"),
			"the downstream API server refused it (BadRequest)"},
		{"an invalid Secret", apierrors.NewInvalid(corev1.SchemeGroupVersion.WithKind("Secret").GroupKind(), "db", nil),
			`Secret "db" is invalid`},
		{"an encoded value", apierrors.NewBadRequest("data: " + encoded),
			"the downstream API server refused it (BadRequest)"},
		{"no message", &apierrors.StatusError{ErrStatus: metav1.Status{Reason: metav1.StatusReasonForbidden}},
			"the downstream API server refused it (Forbidden)"},
		{"a transport error holding a value", fmt.Errorf("dial: hunter2-secret"), "the downstream API server could not be reached"},
		{"a transport error", errors.New("connection refused"), "connection refused"},
	} {
		got := relay.DescribeWriteError(c.err, data)
		assert.Equal(t, c.want, got, c.name)
		assert.NotContains(t, got, "hunter2", c.name)
		assert.NotContains(t, got, encoded, c.name)
	}
}

func TestManagedSecrets(t *testing.T) {
	// The fake clientsets cannot stream a watch-list; real API servers can.
	t.Setenv("KUBE_FEATURE_WatchListClient", "false")
	managed := localCopy(corev1.SecretTypeOpaque, map[string]string{"k": "v"})
	managed.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: relay.ManagedByValue}}
	foreign := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "theirs", Namespace: "default"}}
	kube := fake.NewClientset(managed, foreign)
	m := relay.NewManagedSecrets(kube)
	ctx := context.Background()

	got, err := m.Get(ctx, "default", "theirs")
	require.NoError(t, err)
	require.NotNil(t, got, "before its first list, the cache reads live")

	go m.Run(t.Context())
	require.True(t, cache.WaitForCacheSync(t.Context().Done(), m.Synced))
	got, err = m.Get(ctx, "default", "db")
	require.NoError(t, err)
	require.NotNil(t, got)
	assert.Nil(t, got.ManagedFields, "managed fields are not cached")
	got, err = m.Get(ctx, "default", "theirs")
	require.NoError(t, err)
	assert.Nil(t, got, "an unmanaged Secret is not in the cache")
	got, err = m.Latest(ctx, "default", "theirs")
	require.NoError(t, err)
	assert.NotNil(t, got, "Latest reads live, and sees it")
	got, err = m.Latest(ctx, "default", "absent")
	require.NoError(t, err)
	assert.Nil(t, got)

	got, err = m.Get(ctx, "default", "db")
	require.NoError(t, err)
	assert.NotContains(t, fmt.Sprint(got.Data), "v", "the cache keeps no values")
	assert.True(t, relay.HoldsData(got, bytesData(map[string]string{"k": "v"})), "but tells equal data")
	assert.False(t, relay.HoldsData(got, bytesData(map[string]string{"k": "edited"})), "and changed data")
	assert.False(t, relay.HoldsData(got, bytesData(map[string]string{"k": "v", "extra": ""})))
	plain := localCopy(corev1.SecretTypeOpaque, map[string]string{"k": "v"})
	assert.True(t, relay.SameData(got, plain), "a cached copy and a plain Secret of the same data")
	assert.True(t, relay.SameData(plain, got))
	assert.True(t, relay.SameData(got, got))
	assert.False(t, relay.SameData(got, localCopy(corev1.SecretTypeOpaque, map[string]string{"k": "w"})))
	require.NoError(t, m.Apply(ctx, got, localCopy(corev1.SecretTypeOpaque, map[string]string{"k": "new"}), false))
	written, err := kube.CoreV1().Secrets("default").Get(ctx, "db", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, bytesData(map[string]string{"k": "new"}), written.Data, "an update from the cache writes the desired data, never the digest")

	other := fake.NewClientset()
	writer := m.WritingWith(other)
	require.NoError(t, writer.Apply(ctx, nil, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "new", Namespace: "default"}}, false))
	assert.Len(t, other.Actions(), 1, "writes go through the writer's client")
	assert.Same(t, m.Informer(), writer.Informer(), "reads share one cache")

	kube.PrependReactor("get", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewServiceUnavailable("down")
	})
	_, err = m.Latest(ctx, "default", "db")
	assert.True(t, apierrors.IsServiceUnavailable(err), "a failed read is an error, not an absent Secret: %v", err)
	_, err = m.Get(ctx, "default", "db")
	assert.NoError(t, err, "warm reads make no API call")
}

func TestManagedSecretsKeepEverything(t *testing.T) {
	t.Setenv("KUBE_FEATURE_WatchListClient", "false")
	// written is a copy exactly as secret-relay writes it, which the cache keeps in
	// a compact form; each variant has something more, which no write from the
	// cache may drop.
	written := func() *corev1.Secret {
		return &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{
				Name: "db", Namespace: "default", UID: "uid-1", ResourceVersion: "7",
				CreationTimestamp: metav1.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
				Labels:            map[string]string{relay.LabelManagedBy: relay.ManagedByValue},
				Annotations: map[string]string{
					relay.AnnotationSource: `{"store":{"kind":"SecretStore","name":"s"}}`, relay.AnnotationDataHash: "v2:token",
					relay.AnnotationSyncedAt: "2026-01-01T00:00:00Z",
				},
				ManagedFields: []metav1.ManagedFieldsEntry{{Manager: relay.ManagedByValue}},
			},
			Type: corev1.SecretTypeOpaque,
			Data: bytesData(map[string]string{"k": "v"}),
		}
	}
	variants := map[string]func(*corev1.Secret){
		"as written":                    func(*corev1.Secret) {},
		"immutable: false":              func(s *corev1.Secret) { s.Immutable = ptr.To(false) },
		"a label of someone else":       func(s *corev1.Secret) { s.Labels["team"] = "a" },
		"an annotation of someone else": func(s *corev1.Secret) { s.Annotations["note"] = "kept" },
		"an empty annotation of ours":   func(s *corev1.Secret) { s.Annotations[relay.AnnotationSyncedAt] = "" },
		"no synced-at":                  func(s *corev1.Secret) { delete(s.Annotations, relay.AnnotationSyncedAt) },
		"an owner": func(s *corev1.Secret) {
			s.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: "web", UID: "uid-web"}}
		},
		"a finalizer":       func(s *corev1.Secret) { s.Finalizers = []string{"example.com/hold"} },
		"a generation":      func(s *corev1.Secret) { s.Generation = 3 },
		"another type":      func(s *corev1.Secret) { s.Type = "example.com/custom" },
		"a generateName":    func(s *corev1.Secret) { s.GenerateName = "db-" },
		"a deletion period": func(s *corev1.Secret) { s.DeletionGracePeriodSeconds = ptr.To[int64](30) },
	}
	for name, change := range variants {
		t.Run("A copy with "+name+" should be cached and written back with all it had.", func(t *testing.T) {
			stored := written()
			change(stored)
			kube := fake.NewClientset(stored.DeepCopy())
			m := relay.NewManagedSecrets(kube)
			go m.Run(t.Context())
			require.True(t, cache.WaitForCacheSync(t.Context().Done(), m.Synced))
			ctx := context.Background()

			got, err := m.Get(ctx, "default", "db")
			require.NoError(t, err)
			require.NotNil(t, got)
			want := stored.DeepCopy()
			want.ManagedFields = nil
			for k, v := range want.Annotations {
				assert.Equal(t, v, got.Annotations[k], k)
			}
			bare := got.DeepCopy() // what the cache returns is shared
			bare.Annotations, want.Annotations = nil, nil
			bare.Data, want.Data = nil, nil
			assert.Equal(t, want, bare, "what the cache returns is the Secret, less its data and managed fields")
			assert.True(t, relay.HoldsData(got, bytesData(map[string]string{"k": "v"})))
			assert.False(t, relay.HoldsData(got, bytesData(map[string]string{"k": "w"})))

			desired := written()
			desired.Type = stored.Type
			desired.Data = bytesData(map[string]string{"k": "new"})
			desired.Annotations[relay.AnnotationDataHash] = "v2:new"
			require.NoError(t, m.Apply(ctx, got, desired, false))
			after, err := kube.CoreV1().Secrets("default").Get(ctx, "db", metav1.GetOptions{})
			require.NoError(t, err)
			expect := stored.DeepCopy()
			expect.Data = desired.Data
			for k, v := range desired.Annotations {
				expect.Annotations[k] = v
			}
			expect.ManagedFields = nil
			after.ManagedFields = nil
			assert.Equal(t, expect, after, "the update kept everything but the data and secret-relay's annotations")
		})
	}

	t.Run("A compact copy should follow updates and deletes.", func(t *testing.T) {
		kube := fake.NewClientset(written())
		m := relay.NewManagedSecrets(kube)
		go m.Run(t.Context())
		require.True(t, cache.WaitForCacheSync(t.Context().Done(), m.Synced))
		ctx := context.Background()
		changed := written()
		changed.ResourceVersion = "8"
		changed.Annotations[relay.AnnotationDataHash] = "v2:changed"
		_, err := kube.CoreV1().Secrets("default").Update(ctx, changed, metav1.UpdateOptions{})
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			s, _ := m.Get(ctx, "default", "db")
			return s != nil && s.ResourceVersion == "8" && s.Annotations[relay.AnnotationDataHash] == "v2:changed"
		}, 5*time.Second, 10*time.Millisecond)
		require.NoError(t, kube.CoreV1().Secrets("default").Delete(ctx, "db", metav1.DeleteOptions{}))
		require.Eventually(t, func() bool {
			s, err := m.Get(ctx, "default", "db")
			return err == nil && s == nil
		}, 5*time.Second, 10*time.Millisecond)
		assert.Empty(t, m.Informer().GetStore().ListKeys())
	})
}

func TestErrorIs(t *testing.T) {
	err := fmt.Errorf("wrapped: %w", &relay.Error{Reason: relay.ErrRemoteNotFound})
	assert.ErrorIs(t, err, relay.ErrRemoteNotFound)
	assert.NotErrorIs(t, err, relay.ErrStoreMisconfigured)
}

func TestRemoteKeys(t *testing.T) {
	r := relay.SecretRequest{
		Data:     []relay.DataEntry{{RemoteRef: relay.RemoteRef{Key: "db"}}, {RemoteRef: relay.RemoteRef{Key: "api"}}, {RemoteRef: relay.RemoteRef{Key: "db"}}},
		DataFrom: []relay.DataFromEntry{{Extract: relay.RemoteRef{Key: "tls"}}, {Extract: relay.RemoteRef{Key: "api"}}},
	}
	assert.Equal(t, []string{"db", "api", "tls"}, r.RemoteKeys())
}

// TestRemoteKeysMany: past the keys compared one by one, a set takes over, and the
// list is still each key once, in order.
func TestRemoteKeysMany(t *testing.T) {
	var r relay.SecretRequest
	var want []string
	for i := range 40 {
		key := fmt.Sprintf("k-%02d", i)
		want = append(want, key)
		// Every key twice, the second time after later keys, on both sides of the switch.
		r.Data = append(r.Data, relay.DataEntry{RemoteRef: relay.RemoteRef{Key: key}})
		if i >= 2 {
			r.DataFrom = append(r.DataFrom, relay.DataFromEntry{Extract: relay.RemoteRef{Key: fmt.Sprintf("k-%02d", i-2)}})
		}
	}
	r.DataFrom = append(r.DataFrom, relay.DataFromEntry{Extract: relay.RemoteRef{Key: "k-38"}}, relay.DataFromEntry{Extract: relay.RemoteRef{Key: "k-39"}}, relay.DataFromEntry{Extract: relay.RemoteRef{Key: "new"}})
	assert.Equal(t, append(want, "new"), r.RemoteKeys())
}
