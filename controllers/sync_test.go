package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	"github.com/secret-relay/secret-relay/api/v1alpha1"
	"github.com/secret-relay/secret-relay/relay"
	"github.com/secret-relay/secret-relay/remote"
	"github.com/secret-relay/secret-relay/remote/remotetest"
)

// syncHarness starts a SyncController on a harness.
func (h *harness) startSync(leader bool) *SyncController {
	h.t.Helper()
	c, err := NewSyncController(SyncConfig{
		Local: h.local, Stores: h.stores, Authorizer: h.authz, Upstreams: h.upstreams, Tokens: h.tokens, Recorder: h.recorder, Describe: describe,
		Metrics: h.metrics,
	})
	require.NoError(h.t, err)
	h.start()
	c.SetLeader(leader)
	go func() { _ = c.Run(h.ctx) }()
	require.Eventually(h.t, c.Primed, 5*time.Second, 10*time.Millisecond)
	return c
}

var (
	teamAOnly = relay.StoreRef{Kind: relay.ClusterSecretStoreKind, Name: "team-a-only"}
	labelled  = relay.StoreRef{Kind: relay.ClusterSecretStoreKind, Name: "labelled"}
	ownStore  = relay.StoreRef{Kind: relay.SecretStoreKind, Name: "own"}
)

func syncStores(t *testing.T) []runtime.Object {
	return []runtime.Object{
		remotetest.Store(t, v1alpha1.ClusterSecretStoreKind, "", "team-a-only", "[{namespaces: [team-a]}]"),
		remotetest.Store(t, v1alpha1.ClusterSecretStoreKind, "", "labelled", "[{namespaceSelector: {matchLabels: {relay: allowed}}}]"),
		remotetest.Store(t, v1alpha1.SecretStoreKind, "team-a", "own", ""),
	}
}

func TestSyncController(t *testing.T) {
	t.Run("A forged copy should get nothing its namespace could not have asked for.", func(t *testing.T) {
		h := newHarness(t, syncStores(t), nil, []runtime.Object{remotetest.UpstreamSecret("user-credentials", map[string]string{"username": "peter"})})
		real := h.managedCopy("team-a", "creds", teamAOnly, map[string]string{"username": "stale"}, "")
		// A tenant who may create Secrets in evil copies what a copy looks like,
		// and one in team-b names team-a's own SecretStore.
		forged := h.managedCopy("evil", "creds", teamAOnly, map[string]string{"username": "nobody"}, "")
		borrowed := h.managedCopy("team-b", "creds", ownStore, map[string]string{"username": "nobody"}, "")
		for _, obj := range []runtime.Object{remotetest.Namespace("team-a", nil), remotetest.Namespace("evil", nil), remotetest.Namespace("team-b", nil),
			remotetest.TokenSecret("store-config"), remotetest.TokenSecret("team-a"), real, forged, borrowed} {
			require.NoError(t, h.down.Tracker().Add(obj))
		}
		h.startSync(true)

		require.Eventually(t, func() bool { return h.copyValue("team-a", "creds", "username") == "peter" }, 5*time.Second, 10*time.Millisecond,
			"the copy its namespace may have is synced")
		time.Sleep(200 * time.Millisecond)
		assert.Equal(t, "nobody", h.copyValue("evil", "creds", "username"), "forged copies filled: 0")
		assert.Equal(t, "nobody", h.copyValue("team-b", "creds", "username"))
		assert.Zero(t, h.writes("evil", "creds"))
		assert.Zero(t, h.writes("team-b", "creds"))
		events := strings.Join(h.events(), "\n")
		assert.Contains(t, events, `Warning AccessDenied namespace "evil" may not use store ClusterSecretStore/team-a-only; the copy keeps its data and is no longer refreshed`)
		assert.Contains(t, events, `Warning AccessDenied store SecretStore/own not found in namespace "team-b"`)
		assert.NotContains(t, events, "peter")
	})

	t.Run("A copy whose namespace loses access should keep its data, stop following, and be told once.", func(t *testing.T) {
		h := newHarness(t, syncStores(t), nil, []runtime.Object{remotetest.UpstreamSecret("user-credentials", map[string]string{"username": "peter"})})
		ns := remotetest.Namespace("team-b", map[string]string{"relay": "allowed"})
		for _, obj := range []runtime.Object{ns, remotetest.TokenSecret("store-config"), h.managedCopy("team-b", "creds", labelled, map[string]string{"username": "peter"}, "")} {
			require.NoError(t, h.down.Tracker().Add(obj))
		}
		c := h.startSync(true)
		time.Sleep(100 * time.Millisecond)
		require.Empty(t, h.events(), "in step and allowed: nothing to say")

		ns.Labels = nil
		_, err := h.down.CoreV1().Namespaces().Update(context.Background(), ns, metav1.UpdateOptions{})
		require.NoError(t, err)
		c.NamespaceChanged("team-b")
		require.Eventually(t, func() bool { return len(h.events()) > 0 }, 5*time.Second, 10*time.Millisecond)

		up := remotetest.UpstreamSecret("user-credentials", map[string]string{"username": "changed"})
		_, err = h.up.CoreV1().Secrets("default").Update(context.Background(), up, metav1.UpdateOptions{})
		require.NoError(t, err)
		c.NamespaceChanged("team-b") // again: the event is not repeated
		time.Sleep(300 * time.Millisecond)
		assert.Equal(t, "peter", h.copyValue("team-b", "creds", "username"), "kept, not refreshed")
		assert.Empty(t, h.events(), "one event per problem")
	})

	t.Run("A follower should write nothing, and the copy should be synced when it leads.", func(t *testing.T) {
		h := newHarness(t, syncStores(t), nil, []runtime.Object{remotetest.UpstreamSecret("user-credentials", map[string]string{"username": "peter"})})
		for _, obj := range []runtime.Object{remotetest.Namespace("team-a", nil), remotetest.TokenSecret("team-a"), h.managedCopy("team-a", "creds", ownStore, map[string]string{"username": "stale"}, "")} {
			require.NoError(t, h.down.Tracker().Add(obj))
		}
		c := h.startSync(false)
		time.Sleep(300 * time.Millisecond)
		assert.Zero(t, h.writes("team-a", "creds"))
		c.SetLeader(true)
		assert.Eventually(t, func() bool { return h.copyValue("team-a", "creds", "username") == "peter" }, 5*time.Second, 10*time.Millisecond)
		// The next term reads the cache, which follows the write a watch event later;
		// a real API server would refuse a write from a cache that lags (its
		// resourceVersion is old), the fake clientset would not.
		want := h.tokens.Token(map[string][]byte{"username": []byte("peter")})
		require.Eventually(t, func() bool {
			s, err := h.local.Get(context.Background(), "team-a", "creds")
			return err == nil && s != nil && s.Annotations[relay.AnnotationDataHash] == want
		}, 5*time.Second, 10*time.Millisecond)
		c.SetLeader(false)
		c.SetLeader(true)
		time.Sleep(200 * time.Millisecond)
		assert.Equal(t, 1, h.writes("team-a", "creds"), "a later term rewrites nothing current")
	})

	t.Run("A copy an older version annotated should be re-annotated once, data untouched.", func(t *testing.T) {
		h := newHarness(t, syncStores(t), nil, []runtime.Object{remotetest.UpstreamSecret("user-credentials", map[string]string{"username": "peter"})})
		old := h.managedCopy("team-a", "creds", ownStore, map[string]string{"username": "peter"}, "")
		old.Annotations[relay.AnnotationDataHash] = hex.EncodeToString(relay.LengthDelimitedSum(sha256.New(), old.Data))
		for _, obj := range []runtime.Object{remotetest.Namespace("team-a", nil), remotetest.TokenSecret("team-a"), old} {
			require.NoError(t, h.down.Tracker().Add(obj))
		}
		h.startSync(true)
		require.Eventually(t, func() bool {
			s, err := h.down.CoreV1().Secrets("team-a").Get(context.Background(), "creds", metav1.GetOptions{})
			return err == nil && s.Annotations[relay.AnnotationDataHash] == h.tokens.Token(s.Data)
		}, 5*time.Second, 10*time.Millisecond)
		time.Sleep(300 * time.Millisecond)
		assert.Equal(t, 1, h.writes("team-a", "creds"))
		assert.Equal(t, "peter", h.copyValue("team-a", "creds", "username"))
	})

	t.Run("A copy whose source changes should follow what it reads now, and not what it read.", func(t *testing.T) {
		h := newHarness(t, syncStores(t), nil, []runtime.Object{
			remotetest.UpstreamSecret("user-credentials", map[string]string{"username": "peter"}),
			remotetest.UpstreamSecret("other", map[string]string{"username": "paul"}),
		})
		for _, obj := range []runtime.Object{remotetest.Namespace("team-a", nil), remotetest.TokenSecret("team-a"),
			h.managedCopy("team-a", "creds", ownStore, map[string]string{"username": "peter"}, "")} {
			require.NoError(t, h.down.Tracker().Add(obj))
		}
		h.startSync(true)
		time.Sleep(100 * time.Millisecond)

		edited, err := h.down.CoreV1().Secrets("team-a").Get(context.Background(), "creds", metav1.GetOptions{})
		require.NoError(t, err)
		edited.Annotations[relay.AnnotationSource] = relay.SourceOf(relay.SecretRequest{Name: "creds", Store: ownStore, Data: []relay.DataEntry{
			{SecretKey: "username", RemoteRef: relay.RemoteRef{Key: "other", Property: "username"}},
		}}).String()
		_, err = h.down.CoreV1().Secrets("team-a").Update(context.Background(), edited, metav1.UpdateOptions{})
		require.NoError(t, err)
		require.Eventually(t, func() bool { return h.copyValue("team-a", "creds", "username") == "paul" }, 5*time.Second, 10*time.Millisecond)

		up := func(name, value string) {
			_, err := h.up.CoreV1().Secrets("default").Update(context.Background(), remotetest.UpstreamSecret(name, map[string]string{"username": value}), metav1.UpdateOptions{})
			require.NoError(t, err)
		}
		up("other", "mary")
		require.Eventually(t, func() bool { return h.copyValue("team-a", "creds", "username") == "mary" }, 5*time.Second, 10*time.Millisecond,
			"a change to what it reads now reaches it")
		writes := h.writes("team-a", "creds")
		up("user-credentials", "changed")
		time.Sleep(300 * time.Millisecond)
		assert.Equal(t, writes, h.writes("team-a", "creds"), "a change to what it read no longer does")
		assert.Equal(t, "mary", h.copyValue("team-a", "creds", "username"))
	})

	t.Run("An immutable copy should be replaced when upstream changes, not retried for ever.", func(t *testing.T) {
		h := newHarness(t, syncStores(t), nil, []runtime.Object{remotetest.UpstreamSecret("user-credentials", map[string]string{"username": "peter"})})
		frozen := h.managedCopy("team-a", "creds", ownStore, map[string]string{"username": "stale"}, "")
		frozen.Immutable = ptr.To(true)
		for _, obj := range []runtime.Object{remotetest.Namespace("team-a", nil), remotetest.TokenSecret("team-a"), frozen} {
			require.NoError(t, h.down.Tracker().Add(obj))
		}
		h.startSync(true)
		assert.Eventually(t, func() bool { return h.copyValue("team-a", "creds", "username") == "peter" }, 5*time.Second, 10*time.Millisecond)
		var verbs []string
		for _, a := range h.down.Actions() {
			if a.GetResource().Resource == "secrets" && a.GetNamespace() == "team-a" && a.GetVerb() != "list" && a.GetVerb() != "watch" && a.GetVerb() != "get" {
				verbs = append(verbs, a.GetVerb())
			}
		}
		assert.Equal(t, []string{"delete", "create"}, verbs)
	})

	t.Run("An upstream deletion should keep the copy and be told once.", func(t *testing.T) {
		h := newHarness(t, syncStores(t), nil, nil)
		for _, obj := range []runtime.Object{remotetest.Namespace("team-a", nil), remotetest.TokenSecret("team-a"), h.managedCopy("team-a", "creds", ownStore, map[string]string{"username": "peter"}, "")} {
			require.NoError(t, h.down.Tracker().Add(obj))
		}
		c := h.startSync(true)
		require.Eventually(t, func() bool { return len(h.events()) > 0 }, 5*time.Second, 10*time.Millisecond)
		c.StoreChanged(&remote.Store{Kind: v1alpha1.SecretStoreKind, Namespace: "team-a", Name: "own"})
		time.Sleep(200 * time.Millisecond)
		assert.Empty(t, h.events())
		assert.Equal(t, "peter", h.copyValue("team-a", "creds", "username"))
		assert.Zero(t, h.writes("team-a", "creds"))
	})
}

func TestSyncControllerProblems(t *testing.T) {
	peter := []runtime.Object{remotetest.UpstreamSecret("user-credentials", map[string]string{"username": "peter"})}
	teamA := func(h *harness, extra ...runtime.Object) {
		for _, obj := range append([]runtime.Object{remotetest.Namespace("team-a", nil), remotetest.TokenSecret("team-a")}, extra...) {
			require.NoError(t, h.down.Tracker().Add(obj))
		}
	}

	t.Run("An upstream change should reach the copy, counted with the lag since the watch saw it.", func(t *testing.T) {
		h := newHarness(t, syncStores(t), nil, peter)
		teamA(h, h.managedCopy("team-a", "creds", ownStore, map[string]string{"username": "peter"}, ""))
		reg := prometheus.NewRegistry()
		h.metrics = NewMetrics(reg, h.stores)
		h.startSync(true)
		require.Eventually(t, func() bool { return testutil.ToFloat64(h.metrics.syncs.WithLabelValues("unchanged")) == 1 }, 5*time.Second, 10*time.Millisecond,
			"checked once at start, and in step")

		changed := remotetest.UpstreamSecret("user-credentials", map[string]string{"username": "paul"})
		changed.ResourceVersion = "2" // the fake clientset keeps versions as given
		_, err := h.up.CoreV1().Secrets("default").Update(context.Background(), changed, metav1.UpdateOptions{})
		require.NoError(t, err)
		require.Eventually(t, func() bool { return h.copyValue("team-a", "creds", "username") == "paul" }, 5*time.Second, 10*time.Millisecond)
		assert.Eventually(t, func() bool { return testutil.ToFloat64(h.metrics.syncs.WithLabelValues("updated")) == 1 }, 5*time.Second, 10*time.Millisecond)
		assert.Equal(t, 1, testutil.CollectAndCount(h.metrics.syncLag), "one lag observed")
		assert.Empty(t, h.events())
	})

	t.Run("An upstream change should keep the orphan sweep's mark: a sync is no pod's admission.", func(t *testing.T) {
		h := newHarness(t, syncStores(t), nil, peter)
		marked := h.managedCopy("team-a", "creds", ownStore, map[string]string{"username": "peter"}, "")
		marked.Annotations[relay.AnnotationOrphanedAt] = "2026-01-01T00:00:00.5Z"
		teamA(h, marked)
		h.startSync(true)
		changed := remotetest.UpstreamSecret("user-credentials", map[string]string{"username": "paul"})
		changed.ResourceVersion = "2"
		_, err := h.up.CoreV1().Secrets("default").Update(context.Background(), changed, metav1.UpdateOptions{})
		require.NoError(t, err)
		require.Eventually(t, func() bool { return h.copyValue("team-a", "creds", "username") == "paul" }, 5*time.Second, 10*time.Millisecond)
		got, err := h.down.CoreV1().Secrets("team-a").Get(context.Background(), "creds", metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, "2026-01-01T00:00:00.5Z", got.Annotations[relay.AnnotationOrphanedAt],
			"else a copy whose source changes more often than the mark's wait is never deleted")
	})

	t.Run("A copy whose source annotation is unreadable should be told once and left as it is.", func(t *testing.T) {
		h := newHarness(t, syncStores(t), nil, peter)
		broken := h.managedCopy("team-a", "creds", ownStore, map[string]string{"username": "stale"}, "")
		broken.Annotations[relay.AnnotationSource] = "{not json"
		teamA(h, broken)
		c := h.startSync(true)
		require.Eventually(t, func() bool { return len(h.recorder.Events) > 0 }, 5*time.Second, 10*time.Millisecond)
		c.StoreChanged(&remote.Store{Kind: v1alpha1.SecretStoreKind, Namespace: "team-a", Name: "own"})
		c.NamespaceChanged("team-a")
		time.Sleep(200 * time.Millisecond)
		assert.Equal(t, []string{"Warning SourceUnreadable its secret-relay.io/source annotation is unreadable; the copy is left as it is"}, h.events())
		assert.Equal(t, "stale", h.copyValue("team-a", "creds", "username"))
		assert.Zero(t, h.writes("team-a", "creds"))
	})

	t.Run("An upstream change admission would refuse should keep the copy and say why.", func(t *testing.T) {
		h := newHarness(t, syncStores(t), nil, []runtime.Object{remotetest.UpstreamSecret("user-credentials", map[string]string{"login": "peter"})})
		teamA(h, h.managedCopy("team-a", "creds", ownStore, map[string]string{"username": "peter"}, ""))
		h.startSync(true)
		require.Eventually(t, func() bool { return len(h.recorder.Events) > 0 }, 5*time.Second, 10*time.Millisecond)
		assert.Equal(t, []string{`Warning SyncFailed remote Secret "user-credentials" has no key "username"; keeping the last copy`}, h.events())
		assert.Equal(t, "peter", h.copyValue("team-a", "creds", "username"))
		assert.Zero(t, h.writes("team-a", "creds"))
	})

	t.Run("A store that cannot be used should be named in the event, and the copy kept.", func(t *testing.T) {
		h := newHarness(t, syncStores(t), nil, peter)
		// The store's token Secret is missing.
		require.NoError(t, h.down.Tracker().Add(remotetest.Namespace("team-a", nil)))
		require.NoError(t, h.down.Tracker().Add(h.managedCopy("team-a", "creds", ownStore, map[string]string{"username": "stale"}, "")))
		h.startSync(true)
		require.Eventually(t, func() bool { return len(h.recorder.Events) > 0 }, 5*time.Second, 10*time.Millisecond)
		assert.Equal(t, []string{"Warning StoreMisconfigured store SecretStore/own is misconfigured: Secret team-a/token not found; " +
			"the copy keeps its data and is no longer refreshed"}, h.events())
		assert.Equal(t, "stale", h.copyValue("team-a", "creds", "username"))
	})

	t.Run("A refused write should be told without values, and retried.", func(t *testing.T) {
		h := newHarness(t, syncStores(t), nil, peter)
		teamA(h, h.managedCopy("team-a", "creds", ownStore, map[string]string{"username": "stale"}, ""))
		var updates atomic.Int32
		h.down.PrependReactor("update", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
			updates.Add(1)
			return true, nil, apierrors.NewForbidden(corev1.Resource("secrets"), "creds", errors.New(`policy: username "peter" is not allowed`))
		})
		h.startSync(true)
		require.Eventually(t, func() bool { return updates.Load() >= 3 }, 5*time.Second, 10*time.Millisecond, "retried with backoff")
		events := h.events()
		assert.Equal(t, []string{"Warning SyncFailed could not write the copy: the downstream API server refused it (Forbidden); keeping the last copy and retrying"}, events,
			"one event for one problem, without the value the API server quoted")
		assert.Equal(t, "stale", h.copyValue("team-a", "creds", "username"))
	})

	t.Run("A namespace whose labels change should have its copies checked again.", func(t *testing.T) {
		h := newHarness(t, syncStores(t), nil, peter)
		ns := remotetest.Namespace("team-b", map[string]string{"relay": "allowed"})
		for _, obj := range []runtime.Object{ns, remotetest.TokenSecret("store-config"), h.managedCopy("team-b", "creds", labelled, map[string]string{"username": "peter"}, "")} {
			require.NoError(t, h.down.Tracker().Add(obj))
		}
		namespaces := informers.NewSharedInformerFactory(h.down, 0).Core().V1().Namespaces().Informer()
		c, err := NewSyncController(SyncConfig{
			Local: h.local, Stores: h.stores, Authorizer: h.authz, Upstreams: h.upstreams, Tokens: h.tokens, Recorder: h.recorder, Describe: describe,
			WaitFor: []cache.InformerSynced{namespaces.HasSynced},
		})
		require.NoError(t, err)
		require.NoError(t, c.WatchNamespaces(namespaces))
		go namespaces.RunWithContext(h.ctx)
		h.start()
		c.SetLeader(true)
		go func() { _ = c.Run(h.ctx) }()
		require.Eventually(t, c.Primed, 5*time.Second, 10*time.Millisecond)
		time.Sleep(100 * time.Millisecond)
		require.Empty(t, h.events())

		ns.Labels = map[string]string{"relay": "denied"}
		_, err = h.down.CoreV1().Namespaces().Update(context.Background(), ns, metav1.UpdateOptions{})
		require.NoError(t, err)
		require.Eventually(t, func() bool { return len(h.recorder.Events) > 0 }, 5*time.Second, 10*time.Millisecond)
		assert.Equal(t, []string{`Warning AccessDenied namespace "team-b" may not use store ClusterSecretStore/labelled; the copy keeps its data and is no longer refreshed`}, h.events())
	})
}
