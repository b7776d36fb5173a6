package remote

import (
	"context"
	"crypto/sha256"
	"fmt"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"

	"github.com/secret-relay/secret-relay/relay"
)

// SecretEvent tells the sync controller that an upstream Secret that some local copy
// needs has changed or gone.
type SecretEvent struct {
	// Store is a store that reads through the cache that saw the change: one event
	// goes to each store sharing the cache.
	Store *Store
	// Name is the upstream Secret's name.
	Name string
	// Deleted is true when the Secret is gone upstream.
	Deleted bool
	// Seen is when the watch delivered the change, for the sync-lag histogram.
	Seen time.Time
}

// cacheKey identifies what a cache reads: one upstream namespace through one set of
// credentials. Stores with the same key share a cache; stores whose credentials
// differ never do, so no store reads what its own credentials could not.
type cacheKey struct {
	fingerprint [sha256.Size]byte
	namespace   string
}

// Cache is the watch-based cache of one upstream namespace, as one identity sees it:
// what admission and the sync controller read upstream Secrets from. Every store with
// that identity and namespace shares it.
//
// It watches every Secret in the namespace but keeps only the Secrets that a local
// copy or an admission has asked for (wanted), without managed fields. It is a
// reflector over a store of its own rather than an informer, because an informer
// keeps every object it lists: with 50,000 upstream Secrets, that is tens of MiB per
// namespace for Secrets nobody reads. Memory is bounded by the wanted data.
type Cache struct {
	key       cacheKey
	namespace string
	client    UpstreamClient
	reflector *cache.Reflector
	onEvent   func(SecretEvent)
	onHealth  func(*Store)
	metrics   *Metrics
	cancel    context.CancelFunc
	// stopped is closed when the reflector has stopped.
	stopped chan struct{}

	// flight deduplicates concurrent misses: 100 pods asking for one cold Secret
	// cause one upstream read.
	flight singleflight.Group

	mu sync.RWMutex
	// users are the stores that read through the cache, by Store.String.
	users map[string]*Store
	// wanted names the Secrets whose data is kept.
	wanted map[string]bool
	// data holds the wanted Secrets known, from the watch or from live reads.
	data map[string]*relay.Remote
	// started is set once the reflector runs; synced once its first list is in.
	started, synced bool
	// broken is set when the watch fails and cleared when it delivers again: while
	// it is set, the cache cannot vouch that what it holds is current.
	broken bool
	// watchGen counts watch streams, so that the end of an old one cannot mark a
	// newer one broken.
	watchGen uint64
	// noWatch is set when the upstream forbids list or watch: every read is live.
	noWatch bool
	// refusal is set while the upstream refuses the credentials, as the credential
	// check or a read found: every read fails with it, whatever the cache holds,
	// since a watch opened before a token was revoked keeps delivering.
	refusal error
}

func newUpstreamCache(key cacheKey, client UpstreamClient, onEvent func(SecretEvent), onHealth func(*Store), metrics *Metrics) *Cache {
	if onEvent == nil {
		onEvent = func(SecretEvent) {}
	}
	if onHealth == nil {
		onHealth = func(*Store) {}
	}
	c := &Cache{
		key: key, namespace: key.namespace, client: client, onEvent: onEvent, onHealth: onHealth, metrics: metrics,
		stopped: make(chan struct{}), users: map[string]*Store{}, wanted: map[string]bool{}, data: map[string]*relay.Remote{},
	}
	secrets := client.CoreV1().Secrets(key.namespace)
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			list, err := secrets.List(ctx, opts)
			if err != nil {
				c.listFailed(err)
				return nil, err
			}
			return list, nil
		},
		// The reflector retries a failing watch quietly, so the cache tracks the
		// stream itself: it can vouch for its data only while a watch is open.
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			w, err := secrets.Watch(ctx, opts)
			if err != nil {
				c.listFailed(err)
				return nil, err
			}
			gen := c.watchOpened()
			return newTrackedWatch(w, func() { c.watchEnded(gen) }), nil
		},
	}
	c.reflector = cache.NewReflectorWithOptions(lw, &corev1.Secret{}, reflectorStore{c},
		cache.ReflectorOptions{Name: "upstream Secrets of " + key.namespace})
	return c
}

// run starts the reflector, the credential check and the poll, until ctx ends or
// stop.
func (c *Cache) run(ctx context.Context) {
	ctx, c.cancel = context.WithCancel(ctx)
	c.mu.Lock()
	c.started = true
	c.mu.Unlock()
	go func() {
		defer close(c.stopped)
		c.reflector.RunWithContext(ctx)
	}()
	go c.checkCredentials(ctx)
	go c.poll(ctx)
}

// pollInterval is how often a cache whose credentials may get Secrets but not list
// or watch them reads each wanted Secret again, so that its copies still follow
// upstream within 60 s (contract §6). Tests shorten it.
var pollInterval = 30 * time.Second

// poll reads every wanted Secret again each pollInterval while the upstream
// forbids the list or the watch, until ctx ends. The reflector keeps trying to
// list meanwhile: once the credentials may, the watch takes over.
func (c *Cache) poll(ctx context.Context) {
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if c.polls() {
			c.pollOnce(ctx)
		}
	}
}

func (c *Cache) polls() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.noWatch && c.refusal == nil
}

// pollOnce reads each wanted Secret once, keeping and announcing those that
// changed, and announcing those deleted that it held.
func (c *Cache) pollOnce(ctx context.Context) {
	for _, name := range c.wantedNames() {
		read, cancel := context.WithTimeout(ctx, readTimeout)
		got, err := c.client.CoreV1().Secrets(c.namespace).Get(read, name, metav1.GetOptions{})
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case apierrors.IsNotFound(err):
			c.mu.Lock()
			_, held := c.data[name]
			delete(c.data, name)
			users := c.usersLocked()
			c.mu.Unlock()
			if held {
				c.announce(users, []string{name}, true)
			}
		case err == nil:
			c.keep(got)
		}
		// Any other failure is the next poll's to retry; the credential check
		// reports a refusal on the store's status.
	}
}

func (c *Cache) stop() {
	if c.cancel != nil {
		c.cancel()
	}
}

// addUser records that store s reads through the cache; a store already there is
// replaced by its newer version.
func (c *Cache) addUser(s *Store) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.users[s.String()] = s
	c.metrics.setWatchBroken(s.String(), c.broken)
}

// removeUser forgets a store and reports how many are left.
func (c *Cache) removeUser(storeKey string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.users, storeKey)
	return len(c.users)
}

// usersLocked lists the stores that share the cache; c.mu must be held.
func (c *Cache) usersLocked() []*Store {
	out := make([]*Store, 0, len(c.users))
	for _, s := range c.users {
		out = append(out, s)
	}
	return out
}

// announce tells each store sharing the cache that the named Secrets changed, or
// went when deleted is set.
func (c *Cache) announce(users []*Store, names []string, deleted bool) {
	now := time.Now()
	for _, name := range names {
		for _, s := range users {
			c.onEvent(SecretEvent{Store: s, Name: name, Deleted: deleted, Seen: now})
		}
	}
}

// healthChanged tells each store sharing the cache to have its status checked.
func (c *Cache) healthChanged() {
	c.mu.RLock()
	users := c.usersLocked()
	c.mu.RUnlock()
	for _, s := range users {
		c.onHealth(s)
	}
}

// waitSynced waits, at most until ctx ends, for the first list: it holds every
// wanted Secret, so waiting for it beats reading one Secret live. It stops as soon
// as a list or watch has failed or been forbidden: a live read then says sooner
// what is wrong.
func (c *Cache) waitSynced(ctx context.Context) {
	cache.WaitForCacheSync(ctx.Done(), func() bool {
		c.mu.RLock()
		defer c.mu.RUnlock()
		return c.synced || c.broken || c.noWatch
	})
}

// listFailed records a failed list or watch request.
func (c *Cache) listFailed(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) {
		c.noWatch = true
		return
	}
	c.setBrokenLocked(true)
}

// watchOpened records a new watch stream and returns its generation.
func (c *Cache) watchOpened() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.watchGen++
	c.setBrokenLocked(false)
	return c.watchGen
}

// watchEnded marks the cache broken, unless a newer watch has opened meanwhile.
func (c *Cache) watchEnded(gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen == c.watchGen {
		c.setBrokenLocked(true)
	}
}

func (c *Cache) setBrokenLocked(broken bool) {
	if c.broken != broken {
		for name := range c.users {
			c.metrics.setWatchBroken(name, broken)
		}
		go c.healthChanged()
	}
	c.broken = broken
}

// credentialCheckInterval is how often a cache in use asks the upstream whether the
// store's credentials still hold. An API server authenticates a watch once, when it
// opens, so a watch opened before a token was revoked keeps delivering; the contract
// wants the revocation noticed within 30 s.
const credentialCheckInterval = 10 * time.Second

// checkCredentials asks the upstream, every credentialCheckInterval until ctx ends,
// whether the store may still get Secrets in its namespace.
func (c *Cache) checkCredentials(ctx context.Context) {
	// The first check waits an interval: the cache's first list has just asked.
	select {
	case <-ctx.Done():
		return
	case <-time.After(credentialCheckInterval):
	}
	wait.UntilWithContext(ctx, c.checkCredentialsOnce, credentialCheckInterval)
}

func (c *Cache) checkCredentialsOnce(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	ok, err := CheckAccess(ctx, c.client, c.namespace, "get")
	switch {
	case err == nil && ok:
		c.setRefusal(nil)
	case err == nil:
		c.setRefusal(apierrors.NewForbidden(corev1.Resource("secrets"), "",
			fmt.Errorf("the store's credentials may no longer get Secrets in namespace %q upstream", c.namespace)))
	case apierrors.IsUnauthorized(err):
		c.setRefusal(err)
	}
	// Anything else says nothing about the credentials, not even a 403 to the
	// review itself (every authenticated user may create one, unless an upstream
	// admin took that away): keep what is known.
}

// refused records that a read was refused, so that the next credential check need
// not come first: the store's status is checked again at once.
func (c *Cache) refused() { go c.healthChanged() }

func (c *Cache) setRefusal(err error) {
	c.mu.Lock()
	changed := (c.refusal == nil) != (err == nil)
	c.refusal = err
	c.mu.Unlock()
	if changed {
		c.healthChanged()
	}
}

func (c *Cache) refusalErr() error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.refusal
}

// CheckAccess asks the upstream, by a SelfSubjectAccessReview (which every
// authenticated user may create), whether the client may verb Secrets in namespace.
// An error is the API server's refusal of the credentials (401), or a failure to
// ask.
func CheckAccess(ctx context.Context, client UpstreamClient, namespace, verb string) (bool, error) {
	review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
		ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: namespace, Verb: verb, Resource: "secrets"},
	}}
	res, err := client.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, review, metav1.CreateOptions{})
	if err != nil {
		return false, err
	}
	return res.Status.Allowed, nil
}

// reflectorStore is what the reflector writes into: it keeps wanted Secrets only,
// and tells the stores sharing the cache of every change to one.
type reflectorStore struct{ c *Cache }

var _ cache.TransformingStore = reflectorStore{}

// Transformer slims what a watch-list streams into the reflector's temporary store
// before it reaches Replace: unwanted Secrets come through as their metadata alone.
func (r reflectorStore) Transformer() cache.TransformFunc {
	return func(obj any) (any, error) {
		s, ok := obj.(*corev1.Secret)
		if !ok {
			return obj, nil
		}
		if r.c.isWanted(s.Name) {
			return stripped(s), nil
		}
		return &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{
			Name: s.Name, Namespace: s.Namespace, UID: s.UID, ResourceVersion: s.ResourceVersion}}, nil
	}
}

func (r reflectorStore) Add(obj any) error    { r.c.watched(obj); return nil }
func (r reflectorStore) Update(obj any) error { r.c.watched(obj); return nil }
func (r reflectorStore) Resync() error        { return nil }

func (r reflectorStore) Delete(obj any) error {
	c := r.c
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	m, ok := obj.(metav1.Object)
	if !ok {
		return nil
	}
	name := m.GetName()
	c.mu.Lock()
	wanted := c.wanted[name]
	// A Secret read live since, under a new UID, was created after this one went.
	if prev, ok := c.data[name]; ok && prev.UID == m.GetUID() {
		delete(c.data, name)
	}
	users := c.usersLocked()
	c.mu.Unlock()
	if wanted {
		c.announce(users, []string{name}, true)
	}
	return nil
}

// Replace takes a full list: the first one, or one after the watch was lost. After
// the first, what changed or went among the wanted Secrets is announced.
func (r reflectorStore) Replace(items []any, listVersion string) error {
	c := r.c
	var changed, gone []string
	c.mu.Lock()
	listed := map[string]bool{}
	for _, obj := range items {
		m, ok := obj.(metav1.Object)
		if !ok || !c.wanted[m.GetName()] {
			continue
		}
		name := m.GetName()
		listed[name] = true
		prev, had := c.data[name]
		if had && !newer(m.GetUID(), m.GetResourceVersion(), prev) {
			continue
		}
		if s, ok := obj.(*corev1.Secret); ok {
			c.data[name] = relay.RemoteOf(s)
		} else {
			// Wanted while the list streamed, so it came without its data: the
			// next read fetches it.
			delete(c.data, name)
		}
		changed = append(changed, name)
	}
	for name, prev := range c.data {
		// A live read may have brought a Secret created after the list was taken.
		if !listed[name] && !laterThan(prev.ResourceVersion, listVersion) {
			delete(c.data, name)
			gone = append(gone, name)
		}
	}
	// The first list is not announced: every copy is checked at start anyway, and
	// what an admission wanted before it, the admission read.
	first := !c.synced
	c.synced, c.noWatch = true, false
	users := c.usersLocked()
	c.mu.Unlock()
	if first {
		return nil
	}
	c.announce(users, changed, false)
	c.announce(users, gone, true)
	return nil
}

// watched keeps a Secret the watch delivered, if it is wanted and newer than what
// the cache holds, and announces it.
func (c *Cache) watched(obj any) {
	s, ok := obj.(*corev1.Secret)
	if !ok {
		return
	}
	c.mu.Lock()
	c.noWatch = false
	c.mu.Unlock()
	c.keep(s)
}

// keep keeps a wanted Secret read upstream, unless what the cache holds is as
// recent, and announces it.
func (c *Cache) keep(s *corev1.Secret) {
	c.mu.Lock()
	wanted := c.wanted[s.Name]
	if wanted {
		if prev, ok := c.data[s.Name]; ok && !newer(s.UID, s.ResourceVersion, prev) {
			wanted = false // a version a live read already brought
		} else {
			c.data[s.Name] = relay.RemoteOf(s)
		}
	}
	users := c.usersLocked()
	c.mu.Unlock()
	if wanted {
		c.announce(users, []string{s.Name}, false)
	}
}

// stripped copies what secret-relay needs of a Secret: no managed fields, labels or
// annotations.
func stripped(s *corev1.Secret) *corev1.Secret {
	return &corev1.Secret{
		TypeMeta:   s.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{Name: s.Name, Namespace: s.Namespace, UID: s.UID, ResourceVersion: s.ResourceVersion},
		Type:       s.Type,
		Data:       s.Data,
	}
}

func (c *Cache) isWanted(name string) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.wanted[name]
}

// Want marks names as needed by local copies, so that their data is kept from now
// on and their changes are announced.
func (c *Cache) Want(names ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range names {
		c.wanted[n] = true
	}
}

// cached returns a wanted Secret from the cache, when the cache can vouch for it:
// it runs and its watch is not broken. Before the first list is in, what it holds
// came from live reads moments ago, which is as current as another read would be;
// that is what lets one read serve a whole burst of cold admissions. A cache held
// back from starting (Upstreams.Hold) vouches for nothing: no watch will ever
// correct what a live read brought, however long the hold lasts.
func (c *Cache) cached(name string) (*relay.Remote, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if !c.started || c.broken || c.noWatch || c.refusal != nil {
		return nil, false
	}
	s, ok := c.data[name]
	return s, ok
}

// Get returns an upstream Secret: from the cache when it holds a current copy,
// otherwise by one upstream read shared by every caller that asks meanwhile. It is
// admission's read, so it never waits for a new cache's first list: with 50,000
// Secrets upstream that list takes seconds, longer than admission's budget, while
// one read takes milliseconds. The Secret is shared with the cache and must not be
// modified.
func (c *Cache) Get(ctx context.Context, name string) (*relay.Remote, error) {
	return c.get(ctx, name, 0)
}

// GetListed is Get for the sync controller, which checks every copy when it starts:
// on a new cache it waits, up to listWait, for the first list, which holds every
// wanted Secret, rather than read each one live.
func (c *Cache) GetListed(ctx context.Context, name string) (*relay.Remote, error) {
	return c.get(ctx, name, listWait)
}

func (c *Cache) get(ctx context.Context, name string, forList time.Duration) (*relay.Remote, error) {
	if err := c.refusalErr(); err != nil {
		return nil, err
	}
	if s, ok := c.cached(name); ok {
		c.metrics.cacheHit()
		return s, nil
	}
	c.Want(name)
	if forList > 0 && c.waitsForList() {
		wait, cancel := context.WithTimeout(ctx, forList)
		c.waitSynced(wait)
		cancel()
		// Asked again: the first list may have landed since the first look.
		if s, ok := c.cached(name); ok {
			c.metrics.cacheHit()
			return s, nil
		}
	}
	c.metrics.cacheMiss()
	ch := c.flight.DoChan(name, func() (any, error) {
		// Detached from any one caller: a caller that gives up must not fail the
		// others that share this read. The client's own timeout still bounds it.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), readTimeout)
		defer cancel()
		got, err := c.client.CoreV1().Secrets(c.namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		s := relay.RemoteOf(got)
		c.mu.Lock()
		if prev, ok := c.data[name]; !ok || newer(s.UID, s.ResourceVersion, prev) {
			c.data[name] = s
		}
		c.mu.Unlock()
		return s, nil
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		return res.Val.(*relay.Remote), nil
	case <-ctx.Done():
		return nil, fmt.Errorf("reading Secret %q: %w", name, ctx.Err())
	}
}

// readTimeout bounds one shared upstream read.
const readTimeout = 10 * time.Second

// listWait bounds how long GetListed waits for a new cache's first list before it
// reads live instead. A list fails fast when the upstream refuses or is down (the
// wait ends with it); this bounds one that is merely slow.
const listWait = 30 * time.Second

// laterThan reports whether resource version a is known to be later than b.
func laterThan(a, b string) bool {
	av, errA := strconv.ParseUint(a, 10, 64)
	bv, errB := strconv.ParseUint(b, 10, 64)
	return errA == nil && errB == nil && av > bv
}

// waitsForList reports whether the cache's first list is on the way: it runs, has
// not listed yet, and nothing has failed.
func (c *Cache) waitsForList() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.started && !c.synced && !c.broken && !c.noWatch
}

// newer reports whether the Secret of uid at version is later than the one kept. Resource versions are etcd
// revisions in every API server secret-relay talks to; one that does not parse
// counts as newer, so that a live read is never shadowed by a copy it cannot rank.
func newer(uid types.UID, version string, than *relay.Remote) bool {
	if uid != than.UID {
		return true
	}
	av, errA := strconv.ParseUint(version, 10, 64)
	bv, errB := strconv.ParseUint(than.ResourceVersion, 10, 64)
	return errA != nil || errB != nil || av > bv
}

func (c *Cache) wantedNames() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	names := make([]string, 0, len(c.wanted))
	for n := range c.wanted {
		names = append(names, n)
	}
	return names
}

// trackedWatch forwards a watch's events and says when the stream ends.
type trackedWatch struct {
	w      watch.Interface
	events chan watch.Event
	done   chan struct{}
	once   sync.Once
}

func newTrackedWatch(w watch.Interface, onEnd func()) *trackedWatch {
	t := &trackedWatch{w: w, events: make(chan watch.Event), done: make(chan struct{})}
	go func() {
		defer close(t.events)
		defer onEnd()
		for ev := range w.ResultChan() {
			select {
			case t.events <- ev:
			case <-t.done:
				return
			}
		}
	}()
	return t
}

func (t *trackedWatch) ResultChan() <-chan watch.Event { return t.events }

func (t *trackedWatch) Stop() {
	t.once.Do(func() { close(t.done) })
	t.w.Stop()
}
