package remote

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
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
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"

	"github.com/secret-relay/secret-relay/api/v1alpha1"
	"github.com/secret-relay/secret-relay/relay"
	"github.com/secret-relay/secret-relay/remote/remotetest"
)

// upstreamWorld is the upstream side on fake clientsets: a store cache over stores,
// the downstream objects they reference, and one fake upstream behind every client.
type upstreamWorld struct {
	down      *fake.Clientset
	up        *fake.Clientset
	access    *remotetest.Access
	stores    *StoreCache
	refs      *RefCache
	upstreams *Upstreams
	authz     *Authorizer
	builds    int
}

func newUpstreamWorld(t *testing.T, stores []runtime.Object, down []runtime.Object, up ...runtime.Object) *upstreamWorld {
	t.Helper()
	// The fake clientsets cannot stream a watch-list; real API servers can.
	t.Setenv("KUBE_FEATURE_WatchListClient", "false")
	w := &upstreamWorld{down: fake.NewClientset(down...)}
	w.up, w.access = remotetest.Upstream(up...)
	w.stores = NewStoreCache(remotetest.StoreClient(stores...), time.Hour)
	w.refs = NewRefCache(t.Context(), w.down)
	clients := NewClients(w.refs, nil)
	clients.BuildWith(func(*rest.Config) (UpstreamClient, error) { w.builds++; return w.up, nil })
	w.upstreams = NewUpstreams(t.Context(), clients, nil)
	nsInformers := informers.NewSharedInformerFactory(w.down, 0)
	lister := nsInformers.Core().V1().Namespaces().Lister()
	w.authz = NewAuthorizer(w.stores, NamespacesFrom(lister, w.down))
	nsInformers.Start(t.Context().Done())
	w.stores.Start(t.Context())
	require.True(t, cache.WaitForCacheSync(t.Context().Done(), w.stores.Synced))
	return w
}

func (w *upstreamWorld) grant(t *testing.T, ns string, ref relay.StoreRef) *Grant {
	t.Helper()
	g, err := w.authz.Authorize(context.Background(), ns, ref)
	require.NoError(t, err)
	return g
}

var own = relay.StoreRef{Kind: relay.SecretStoreKind, Name: "own"}

func TestUpstreams(t *testing.T) {
	down := []runtime.Object{remotetest.Namespace("team-a", nil), remotetest.TokenSecret("team-a")}
	stores := []runtime.Object{remotetest.Store(t, v1alpha1.SecretStoreKind, "team-a", "own", "")}

	t.Run("The same store should get the same cache, and a new token a new one that wants what the old did.", func(t *testing.T) {
		w := newUpstreamWorld(t, stores, down, remotetest.UpstreamSecret("db", map[string]string{"k": "v"}))
		first, err := w.upstreams.For(context.Background(), w.grant(t, "team-a", own))
		require.NoError(t, err)
		first.Want("db")
		again, err := w.upstreams.For(context.Background(), w.grant(t, "team-a", own))
		require.NoError(t, err)
		assert.Same(t, first, again)
		assert.Equal(t, 1, w.builds, "one client for one store")

		token := remotetest.TokenSecret("team-a")
		token.Data["token"] = []byte("rotated")
		token.ResourceVersion = "2" // the fake clientset keeps versions as given
		_, err = w.down.CoreV1().Secrets("team-a").Update(context.Background(), token, metav1.UpdateOptions{})
		require.NoError(t, err)
		rebuilt, err := w.upstreams.For(context.Background(), w.grant(t, "team-a", own))
		require.NoError(t, err)
		assert.NotSame(t, first, rebuilt, "a new credential, a new client and cache")
		assert.Equal(t, 2, w.builds)
		assert.Equal(t, []string{"db"}, rebuilt.wantedNames())
	})

	t.Run("A new remoteNamespace should get a new cache.", func(t *testing.T) {
		w := newUpstreamWorld(t, stores, down)
		g := w.grant(t, "team-a", own)
		first, err := w.upstreams.For(context.Background(), g)
		require.NoError(t, err)
		moved := *g.Store()
		moved.Spec.Provider.Kubernetes = moved.Spec.Provider.Kubernetes.DeepCopy()
		moved.Spec.Provider.Kubernetes.RemoteNamespace = "elsewhere"
		second, err := w.upstreams.For(context.Background(), &Grant{store: &moved, namespace: "team-a"})
		require.NoError(t, err)
		assert.NotSame(t, first, second)
		assert.Equal(t, "elsewhere", second.namespace)
	})

	t.Run("A store whose token Secret is missing should be misconfigured, naming it.", func(t *testing.T) {
		w := newUpstreamWorld(t, stores, []runtime.Object{remotetest.Namespace("team-a", nil)})
		_, err := w.upstreams.For(context.Background(), w.grant(t, "team-a", own))
		e := relay.AsError(err)
		require.NotNil(t, e, "%v", err)
		assert.Equal(t, relay.ErrStoreMisconfigured, e.Reason)
		assert.Equal(t, "Secret team-a/token not found", e.Detail)
		assert.Zero(t, w.builds)
	})

	t.Run("Forget should stop a deleted store's cache.", func(t *testing.T) {
		w := newUpstreamWorld(t, stores, down)
		c, err := w.upstreams.For(context.Background(), w.grant(t, "team-a", own))
		require.NoError(t, err)
		w.upstreams.Forget("SecretStore team-a/own")
		select {
		case <-c.stopped:
		case <-time.After(5 * time.Second):
			t.Fatal("the cache of a deleted store still runs")
		}
	})
}

func TestResolver(t *testing.T) {
	down := []runtime.Object{remotetest.Namespace("team-a", nil), remotetest.Namespace("evil", nil), remotetest.TokenSecret("store-config")}
	stores := []runtime.Object{remotetest.Store(t, v1alpha1.ClusterSecretStoreKind, "", "team-a-only", "[{namespaces: [team-a]}]")}
	store := relay.StoreRef{Kind: relay.ClusterSecretStoreKind, Name: "team-a-only"}
	w := newUpstreamWorld(t, stores, down, remotetest.UpstreamSecret("db", map[string]string{"k": "v"}))
	r := NewResolver(w.authz, w.upstreams)

	t.Run("A namespace the store excludes should be refused before any cache starts.", func(t *testing.T) {
		_, err := r.Resolve(context.Background(), "evil", store)
		assert.ErrorIs(t, err, relay.ErrNotAllowed)
		assert.Zero(t, w.builds, "no client, no cache, nothing read upstream")
	})

	src, err := r.Resolve(context.Background(), "team-a", store)
	require.NoError(t, err)
	t.Run("A Secret should be read through the store.", func(t *testing.T) {
		s, err := src.Get(context.Background(), "db")
		require.NoError(t, err)
		assert.Equal(t, []byte("v"), value(s, "k"))
	})
	t.Run("Failures should become the errors admission words.", func(t *testing.T) {
		tests := map[string]struct {
			reaction error
			expErr   *relay.Error
		}{
			"NotFound": {apierrors.NewNotFound(corev1.Resource("secrets"), "gone"),
				&relay.Error{Reason: relay.ErrRemoteNotFound, Store: store, Remote: "gone", RemoteNamespace: "default"}},
			"Forbidden": {apierrors.NewForbidden(corev1.Resource("secrets"), "gone", errors.New("no")),
				&relay.Error{Reason: relay.ErrRefused, Store: store, Remote: "gone", RemoteNamespace: "default", Detail: "Forbidden"}},
			"refused connection": {&url.Error{Op: "Get", URL: "https://u", Err: errors.New("dial tcp: connect: connection refused")},
				&relay.Error{Reason: relay.ErrUnreachable, Store: store, Remote: "gone", RemoteNamespace: "default", Detail: "dial tcp: connect: connection refused"}},
			"conflict": {apierrors.NewConflict(corev1.Resource("secrets"), "gone", errors.New("odd")),
				&relay.Error{Reason: relay.ErrUpstream, Store: store, Remote: "gone", RemoteNamespace: "default",
					Detail: `409 Conflict: Operation cannot be fulfilled on secrets "gone": odd`}},
		}
		for name, test := range tests {
			t.Run(name, func(t *testing.T) {
				w.up.PrependReactor("get", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) { return true, nil, test.reaction })
				defer func() { w.up.ReactionChain = w.up.ReactionChain[1:] }()
				_, err := src.Get(context.Background(), "gone")
				assert.Equal(t, test.expErr, relay.AsError(err))
			})
		}
	})
}

func TestCacheCredentialCheck(t *testing.T) {
	down := []runtime.Object{remotetest.Namespace("team-a", nil), remotetest.TokenSecret("team-a")}
	w := newUpstreamWorld(t, []runtime.Object{remotetest.Store(t, v1alpha1.SecretStoreKind, "team-a", "own", "")}, down,
		remotetest.UpstreamSecret("db", map[string]string{"k": "v"}))
	healths := make(chan *Store, 10)
	w.upstreams.OnHealth(func(s *Store) { healths <- s })
	c, err := w.upstreams.For(context.Background(), w.grant(t, "team-a", own))
	require.NoError(t, err)
	c.Want("db")
	require.Eventually(t, func() bool { _, ok := c.cached("db"); return ok }, 5*time.Second, 10*time.Millisecond, "served from the watch")

	t.Run("Credentials that may no longer get Secrets should fail reads from the cache.", func(t *testing.T) {
		w.access.Allow("get", false)
		c.checkCredentialsOnce(context.Background())
		_, err := c.Get(context.Background(), "db")
		assert.True(t, apierrors.IsForbidden(err), "%v", err)
		assert.Equal(t, "SecretStore team-a/own", (<-healths).String(), "the store is validated again")
	})
	t.Run("Credentials accepted again should serve from the cache again.", func(t *testing.T) {
		w.access.Allow("get", true)
		c.checkCredentialsOnce(context.Background())
		s, err := c.Get(context.Background(), "db")
		require.NoError(t, err)
		assert.Equal(t, []byte("v"), value(s, "k"))
	})
	t.Run("A revoked token should fail reads.", func(t *testing.T) {
		w.access.Fail(func() error { return apierrors.NewUnauthorized("Unauthorized") })
		c.checkCredentialsOnce(context.Background())
		_, err := c.Get(context.Background(), "db")
		assert.True(t, apierrors.IsUnauthorized(err), "%v", err)
	})
	t.Run("A check that fails otherwise should change nothing.", func(t *testing.T) {
		w.access.Fail(func() error { return errors.New("connection refused") })
		c.checkCredentialsOnce(context.Background())
		_, err := c.Get(context.Background(), "db")
		assert.True(t, apierrors.IsUnauthorized(err), "still refused: %v", err)
	})
}

func TestStoreCacheWatch(t *testing.T) {
	down := []runtime.Object{remotetest.Namespace("team-a", nil), remotetest.TokenSecret("team-a")}
	// The fake clientsets cannot stream a watch-list; real API servers can.
	t.Setenv("KUBE_FEATURE_WatchListClient", "false")
	api := remotetest.StoreClient(remotetest.Store(t, v1alpha1.SecretStoreKind, "team-a", "own", ""))
	stores := NewStoreCache(api, time.Hour)
	kube := fake.NewClientset(down...)
	refs := NewRefCache(t.Context(), kube)
	changed, deleted := make(chan string, 10), make(chan string, 10)
	require.NoError(t, stores.Watch(refs, StoreHandlers{
		Changed: func(s *Store) { changed <- s.String() },
		Deleted: func(s *Store) { deleted <- s.String() },
	}))
	stores.Start(t.Context())
	require.True(t, cache.WaitForCacheSync(t.Context().Done(), stores.Synced))
	next := func(ch chan string) string {
		select {
		case s := <-ch:
			return s
		case <-time.After(5 * time.Second):
			return "nothing"
		}
	}
	assert.Equal(t, "SecretStore team-a/own", next(changed), "a store that exists is new to the watch")
	refs.mu.Lock()
	assert.Contains(t, refs.informers, refKey{"Secret", "team-a", "token"}, "its token is followed")
	refs.mu.Unlock()

	ss := api.SecretRelayV1alpha1().SecretStores("team-a")
	s, err := ss.Get(context.Background(), "own", metav1.GetOptions{})
	require.NoError(t, err)
	s.Status.Capabilities = v1alpha1.CapabilitiesReadOnly
	_, err = ss.UpdateStatus(context.Background(), s, metav1.UpdateOptions{})
	require.NoError(t, err)
	token := remotetest.TokenSecret("team-a")
	token.Data["token"] = []byte("rotated")
	token.ResourceVersion = "2" // the fake clientset keeps versions as given
	require.Eventually(t, func() bool {
		refs.mu.Lock()
		defer refs.mu.Unlock()
		return refs.informers[refKey{"Secret", "team-a", "token"}].HasSynced()
	}, 5*time.Second, 10*time.Millisecond)
	_, err = kube.CoreV1().Secrets("team-a").Update(context.Background(), token, metav1.UpdateOptions{})
	require.NoError(t, err)
	assert.Equal(t, "SecretStore team-a/own", next(changed), "a new token changes the store; its status did not")

	require.NoError(t, ss.Delete(context.Background(), "own", metav1.DeleteOptions{}))
	assert.Equal(t, "SecretStore team-a/own", next(deleted))
	assert.Eventually(t, func() bool { refs.mu.Lock(); defer refs.mu.Unlock(); return len(refs.informers) == 0 }, 5*time.Second, 10*time.Millisecond,
		"the token of a deleted store is no longer followed")
	select {
	case s := <-changed:
		t.Errorf("unexpected change of %s", s)
	default:
	}
}

func TestCountRequests(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	rt := m.countRequests("SecretStore team-a/own")(roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if strings.Contains(r.URL.Path, "down") {
			return nil, errors.New("connection refused")
		}
		return &http.Response{StatusCode: http.StatusOK, Body: http.NoBody}, nil
	}))
	for _, u := range []string{
		"https://u/api/v1/namespaces/default/secrets", "https://u/api/v1/namespaces/default/secrets?watch=true",
		"https://u/api/v1/namespaces/default/secrets/db", "https://u/down/api/v1/namespaces/default/secrets/db",
	} {
		req, err := http.NewRequest(http.MethodGet, u, nil)
		require.NoError(t, err)
		if resp, err := rt.RoundTrip(req); err == nil {
			resp.Body.Close()
		}
	}
	count := func(verb, code string) float64 {
		return testutil.ToFloat64(m.upstreamRequests.WithLabelValues("SecretStore team-a/own", verb, code))
	}
	assert.Equal(t, 1.0, count("list", "200"))
	assert.Equal(t, 1.0, count("watch", "200"))
	assert.Equal(t, 1.0, count("get", "200"))
	assert.Equal(t, 1.0, count("get", "error"), "no response: counted as error")
}

func TestUpstreamsSharing(t *testing.T) {
	down := []runtime.Object{
		remotetest.Namespace("team-a", nil), remotetest.TokenSecret("team-a"),
		remotetest.Namespace("team-b", nil), remotetest.TokenSecret("team-b"),
		remotetest.Namespace("team-c", nil), remotetest.TokenSecret("team-c"),
	}
	down[5].(*corev1.Secret).Data["token"] = []byte("another identity")
	stores := []runtime.Object{
		remotetest.Store(t, v1alpha1.SecretStoreKind, "team-a", "own", ""),
		remotetest.Store(t, v1alpha1.SecretStoreKind, "team-b", "own", ""),
		remotetest.Store(t, v1alpha1.SecretStoreKind, "team-c", "own", ""),
	}
	w := newUpstreamWorld(t, stores, down, remotetest.UpstreamSecret("db", map[string]string{"k": "v"}))
	var mu sync.Mutex
	heard := map[string]int{}
	w.upstreams.OnEvent(func(ev SecretEvent) { mu.Lock(); heard[ev.Store.String()]++; mu.Unlock() })
	w.upstreams.Hold()
	a, err := w.upstreams.For(context.Background(), w.grant(t, "team-a", own))
	require.NoError(t, err)
	b, err := w.upstreams.For(context.Background(), w.grant(t, "team-b", own))
	require.NoError(t, err)
	other, err := w.upstreams.For(context.Background(), w.grant(t, "team-c", own))
	require.NoError(t, err)

	assert.Same(t, a, b, "one identity on one namespace: one cache")
	assert.NotSame(t, a, other, "other credentials never share a cache")
	assert.Equal(t, 3, w.builds, "each store keeps its own client")
	assert.False(t, a.isStarted(), "held caches wait")
	assert.Zero(t, countActions(w.up, "list"))

	a.Want("db")
	w.upstreams.Release()
	require.Eventually(t, func() bool { return a.isSynced() && other.isSynced() }, 5*time.Second, 10*time.Millisecond)
	assert.Equal(t, 2, countActions(w.up, "list"), "one list per cache, not per store")
	assert.Equal(t, []string{"db"}, a.held())
	assert.Empty(t, other.held(), "what one identity wants is not kept for another")
	require.Eventually(t, a.watchStarted, 5*time.Second, 10*time.Millisecond)
	changed := remotetest.UpstreamSecret("db", map[string]string{"k": "v2"})
	changed.ResourceVersion = "2" // the fake clientset keeps versions as given
	_, err = w.up.CoreV1().Secrets("default").Update(context.Background(), changed, metav1.UpdateOptions{})
	require.NoError(t, err)
	assert.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return heard["SecretStore team-a/own"] == 1 && heard["SecretStore team-b/own"] == 1
	}, 5*time.Second, 10*time.Millisecond, "every store sharing the cache hears of the change")
	assert.Zero(t, heard["SecretStore team-c/own"])

	w.upstreams.Forget("SecretStore team-a/own")
	select {
	case <-a.stopped:
		t.Fatal("a cache still in use was stopped")
	case <-time.After(50 * time.Millisecond):
	}
	w.upstreams.Forget("SecretStore team-b/own")
	select {
	case <-a.stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("a cache no store uses still runs")
	}
}

func (c *Cache) isStarted() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.started
}

func countActions(client *fake.Clientset, verb string) int {
	n := 0
	for _, a := range client.Actions() {
		if a.GetVerb() == verb && a.GetResource().Resource == "secrets" {
			n++
		}
	}
	return n
}
