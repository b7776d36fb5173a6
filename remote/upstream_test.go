package remote

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	k8stesting "k8s.io/client-go/testing"

	"github.com/secret-relay/secret-relay/relay"
)

func upstreamSecret(name, value string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}},
		Data:       map[string][]byte{"k": []byte(value)},
	}
}

func countGets(client *fake.Clientset, name string) int {
	n := 0
	for _, a := range client.Actions() {
		if g, ok := a.(interface{ GetName() string }); ok && a.GetVerb() == "get" && g.GetName() == name {
			n++
		}
	}
	return n
}

// testStoreS is a SecretStore default/s reading upstream namespace default.
var testStoreS = &Store{Kind: "SecretStore", Namespace: "default", Name: "s"}

var testKey = cacheKey{namespace: "default"}

func startCache(t *testing.T, client UpstreamClient, events chan<- SecretEvent, wanted ...string) *Cache {
	c := newUpstreamCache(testKey, client, func(ev SecretEvent) {
		if events != nil {
			events <- ev
		}
	}, nil, nil)
	c.addUser(testStoreS)
	c.Want(wanted...)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c.run(ctx)
	return c
}

// slowList is an upstream whose lists of Secrets wait until release is closed, as a
// list of 50,000 Secrets keeps a real one busy for seconds. (A reactor cannot do it:
// the fake clientset holds its lock while one runs, so reads would wait too.)
type slowList struct {
	UpstreamClient
	release chan struct{}
}

func newSlowList(client UpstreamClient) *slowList {
	return &slowList{UpstreamClient: client, release: make(chan struct{})}
}

func (s *slowList) CoreV1() corev1client.CoreV1Interface {
	return slowCore{s.UpstreamClient.CoreV1(), s.release}
}

type slowCore struct {
	corev1client.CoreV1Interface
	release chan struct{}
}

func (c slowCore) Secrets(namespace string) corev1client.SecretInterface {
	return slowSecrets{c.CoreV1Interface.Secrets(namespace), c.release}
}

type slowSecrets struct {
	corev1client.SecretInterface
	release chan struct{}
}

func (s slowSecrets) List(ctx context.Context, opts metav1.ListOptions) (*corev1.SecretList, error) {
	select {
	case <-s.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return s.SecretInterface.List(ctx, opts)
}

func (c *Cache) isSynced() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.synced
}

func (c *Cache) held() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var names []string
	for name := range c.data {
		names = append(names, name)
	}
	return names
}

func TestUpstreamCache(t *testing.T) {
	// The fake clientset cannot stream a watch-list; real API servers can.
	t.Setenv("KUBE_FEATURE_WatchListClient", "false")
	t.Run("A burst of sync reads on a new cache should be served by its first list, not by reads.", func(t *testing.T) {
		client := fake.NewClientset(upstreamSecret("db", "v1"), upstreamSecret("api", "v1"))
		slow := newSlowList(client)
		c := startCache(t, slow, nil)
		var wg sync.WaitGroup
		for i := range 20 {
			wg.Go(func() {
				name := []string{"db", "api"}[i%2]
				s, err := c.GetListed(context.Background(), name)
				assert.NoError(t, err)
				assert.Equal(t, []byte("v1"), value(s, "k"))
			})
		}
		time.Sleep(200 * time.Millisecond)
		close(slow.release)
		wg.Wait()
		assert.Zero(t, countGets(client, "db")+countGets(client, "api"), "the list held both")
	})

	t.Run("An admission read on a new cache should not wait for a slow first list.", func(t *testing.T) {
		client := fake.NewClientset(upstreamSecret("db", "v1"))
		slow := newSlowList(client)
		defer close(slow.release)
		c := startCache(t, slow, nil)
		var wg sync.WaitGroup
		for range 20 {
			wg.Go(func() {
				// Shorter than a list of 50,000 Secrets takes.
				ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
				defer cancel()
				s, err := c.Get(ctx, "db")
				assert.NoError(t, err)
				assert.Equal(t, []byte("v1"), value(s, "k"))
			})
		}
		wg.Wait()
		assert.Equal(t, 1, countGets(client, "db"), "one read shared by the burst")
		assert.False(t, c.isSynced())
	})

	t.Run("An upstream change should be told to the sync controller and served at once.", func(t *testing.T) {
		client := fake.NewClientset(upstreamSecret("db", "v1"))
		events := make(chan SecretEvent, 10)
		c := startCache(t, client, events)
		_, err := c.Get(context.Background(), "db")
		require.NoError(t, err)
		// The fake clientset's watch delivers only what happens after it opens.
		require.Eventually(t, func() bool { return c.isSynced() && c.watchStarted() }, 5*time.Second, 10*time.Millisecond)

		updated := upstreamSecret("db", "v2")
		updated.ResourceVersion = "2"
		_, err = client.CoreV1().Secrets("default").Update(context.Background(), updated, metav1.UpdateOptions{})
		require.NoError(t, err)
		// Events of the first list may come first; the update's must find the cache
		// already holding the change, since the sync controller reads it from there.
		timeout := time.After(5 * time.Second)
		for {
			select {
			case ev := <-events:
				assert.Equal(t, SecretEvent{Store: testStoreS, Name: "db", Seen: ev.Seen}, ev)
				assert.Equal(t, "SecretStore default/s", ev.Store.String())
				if s, _ := c.Get(context.Background(), "db"); s != nil && string(value(s, "k")) == "v2" {
					return
				}
			case <-timeout:
				t.Fatal("no event for the change of a wanted Secret")
			}
		}
	})

	t.Run("The first list should keep only what is wanted.", func(t *testing.T) {
		client := fake.NewClientset(upstreamSecret("wanted", "w"), upstreamSecret("other", "o"))
		events := make(chan SecretEvent, 10)
		c := startCache(t, client, events, "wanted")
		require.Eventually(t, c.isSynced, 5*time.Second, 10*time.Millisecond)
		assert.Equal(t, []string{"wanted"}, c.held(), "nothing of a Secret nobody wants is kept")
		s, ok := c.cached("wanted")
		require.True(t, ok)
		assert.Equal(t, []byte("w"), value(s, "k"))
		assert.Zero(t, countGets(client, "wanted"))
		assert.Empty(t, events, "every copy is checked at start: the first list is not announced")
	})

	t.Run("A relist should announce what changed and what went, and keep a live read newer than the list.", func(t *testing.T) {
		c := newUpstreamCache(testKey, fake.NewClientset(), nil, nil, nil)
		var events []SecretEvent
		c.onEvent = func(ev SecretEvent) { events = append(events, ev) }
		c.addUser(testStoreS)
		c.Want("same", "changed", "gone", "created")
		version := func(name, rv string) *corev1.Secret {
			s := upstreamSecret(name, rv)
			s.ResourceVersion = rv
			return s
		}
		store := reflectorStore{c}
		require.NoError(t, store.Replace([]any{version("same", "5"), version("changed", "5"), version("gone", "5"), version("unwanted", "5")}, "5"))
		require.Empty(t, events)
		c.data["created"] = relay.RemoteOf(version("created", "9")) // read live after the list was taken
		require.NoError(t, store.Replace([]any{version("same", "5"), version("changed", "7")}, "8"))
		var said []string
		for _, ev := range events {
			said = append(said, fmt.Sprintf("%s deleted=%t", ev.Name, ev.Deleted))
		}
		assert.Equal(t, []string{"changed deleted=false", "gone deleted=true"}, said)
		assert.ElementsMatch(t, []string{"same", "changed", "created"}, c.held())
	})

	t.Run("A broken watch should send reads upstream instead of to the cache.", func(t *testing.T) {
		client := fake.NewClientset(upstreamSecret("db", "v1"))
		c := startCache(t, client, nil)
		_, err := c.Get(context.Background(), "db")
		require.NoError(t, err)
		c.watchEnded(c.watchGen)
		_, ok := c.cached("db")
		assert.False(t, ok, "a cache without a watch cannot vouch for its data")
		before := countGets(client, "db")
		_, err = c.Get(context.Background(), "db")
		require.NoError(t, err)
		assert.Equal(t, before+1, countGets(client, "db"))
	})

	t.Run("A cache held back from starting should read live every time.", func(t *testing.T) {
		client := fake.NewClientset(upstreamSecret("db", "v1"))
		c := newUpstreamCache(testKey, client, nil, nil, nil)
		for range 2 {
			s, err := c.Get(context.Background(), "db")
			require.NoError(t, err)
			assert.Equal(t, []byte("v1"), value(s, "k"))
		}
		assert.Equal(t, 2, countGets(client, "db"), "no watch would correct what it kept")
	})

	t.Run("The end of an old watch should not mark a newer one broken.", func(t *testing.T) {
		c := newUpstreamCache(testKey, fake.NewClientset(), nil, nil, nil)
		old := c.watchOpened()
		c.watchOpened()
		c.watchEnded(old)
		assert.False(t, c.broken)
	})
}

func (c *Cache) watchStarted() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.watchGen > 0
}

// value is key's value in s, or nil.
func value(s *relay.Remote, key string) []byte {
	v, _ := s.Value(key)
	return v
}

func TestGetOnlyUpstream(t *testing.T) {
	defer func(d time.Duration) { pollInterval = d }(pollInterval)
	pollInterval = 50 * time.Millisecond
	db, gone := upstreamSecret("db", "v1"), upstreamSecret("gone", "v1")
	db.ResourceVersion, gone.ResourceVersion = "1", "1" // a real API server's versions
	client := fake.NewClientset(db, gone)
	forbid := func(verb string) k8stesting.ReactionFunc {
		return func(k8stesting.Action) (bool, runtime.Object, error) {
			return true, nil, apierrors.NewForbidden(corev1.Resource("secrets"), "", fmt.Errorf("may not %s", verb))
		}
	}
	client.PrependReactor("list", "secrets", forbid("list"))
	client.PrependWatchReactor("secrets", func(k8stesting.Action) (bool, watch.Interface, error) {
		return true, nil, apierrors.NewForbidden(corev1.Resource("secrets"), "", fmt.Errorf("may not watch"))
	})
	events := make(chan SecretEvent, 10)
	c := startCache(t, client, events, "db", "gone")
	for _, name := range []string{"db", "gone"} { // what a copy's first sync reads
		_, err := c.GetListed(context.Background(), name)
		require.NoError(t, err)
	}
	next := func() SecretEvent {
		select {
		case ev := <-events:
			return ev
		case <-time.After(5 * time.Second):
			t.Fatal("no event within 5 s")
			return SecretEvent{}
		}
	}

	t.Run("A change upstream should be announced by the poll, though nothing may list or watch.", func(t *testing.T) {
		// The first poll may announce what it is the first to hold; after it,
		// polls that find nothing new announce nothing.
		time.Sleep(3 * pollInterval)
		for len(events) > 0 {
			<-events
		}
		time.Sleep(3 * pollInterval)
		require.Empty(t, events)
		s := upstreamSecret("db", "v2")
		s.ResourceVersion = "2"
		_, err := client.CoreV1().Secrets("default").Update(context.Background(), s, metav1.UpdateOptions{})
		require.NoError(t, err)
		ev := next()
		assert.Equal(t, SecretEvent{Store: testStoreS, Name: "db"}, SecretEvent{Store: ev.Store, Name: ev.Name, Deleted: ev.Deleted})
		got, err := c.GetListed(context.Background(), "db")
		require.NoError(t, err)
		assert.Equal(t, []byte("v2"), value(got, "k"))
	})
	t.Run("A Secret deleted upstream should be announced as deleted.", func(t *testing.T) {
		require.NoError(t, client.CoreV1().Secrets("default").Delete(context.Background(), "gone", metav1.DeleteOptions{}))
		ev := next()
		assert.Equal(t, "gone", ev.Name)
		assert.True(t, ev.Deleted)
	})
	t.Run("Nothing unchanged should be announced.", func(t *testing.T) {
		select {
		case ev := <-events:
			t.Fatalf("announced %+v", ev)
		case <-time.After(300 * time.Millisecond):
		}
	})
}
