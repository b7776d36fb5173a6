package remote

import (
	"context"
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
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// SecretEvent tells the sync controller that an upstream Secret that some local copy
// needs has changed or gone.
type SecretEvent struct {
	// Store is the store whose cache saw the change.
	Store *Store
	// Name is the upstream Secret's name.
	Name string
	// Deleted is true when the Secret is gone upstream.
	Deleted bool
	// Seen is when the watch delivered the change, for the sync-lag histogram.
	Seen time.Time
}

// Cache is the watch-based cache of one store's upstream namespace: what admission
// and the sync controller read upstream Secrets from.
//
// It watches every Secret in the namespace, but keeps data only for the Secrets that
// a local copy or an admission has asked for (wanted): the informer's own store holds
// metadata alone, with managed fields stripped. Memory is therefore bounded by the
// relayed data plus a few hundred bytes of metadata per upstream Secret.
type Cache struct {
	// store names the store, as Store.String renders it; of is the store itself.
	store     string
	of        *Store
	namespace string
	client    kubernetes.Interface
	informer  cache.SharedIndexInformer
	onEvent   func(SecretEvent)
	onHealth  func(*Store)
	metrics   *Metrics
	cancel    context.CancelFunc

	// flight deduplicates concurrent misses: 100 pods asking for one cold Secret
	// cause one upstream read.
	flight singleflight.Group

	mu sync.RWMutex
	// wanted names the Secrets whose data is kept.
	wanted map[string]bool
	// data holds the wanted Secrets, newest first seen.
	data map[string]*corev1.Secret
	// broken is set when the watch fails and cleared when it delivers again: while
	// it is set, the cache cannot vouch that what it holds is current.
	broken bool
	// watchGen counts watch streams, so that the end of an old one cannot mark a
	// newer one broken.
	watchGen uint64
	// noWatch is set when the upstream forbids list or watch: every read is live.
	noWatch bool
	// refusal is set while the upstream refuses the store's credentials, as the
	// credential check or a read found: every read fails with it, whatever the
	// cache holds, since a watch opened before a token was revoked keeps delivering.
	refusal error
	// keepAll keeps every Secret's data until trim: at start, the sync controller
	// learns what its copies want only as it goes through them, and the first list
	// already holds it all; keeping it spares one upstream read per copy.
	keepAll bool
}

func newUpstreamCache(of *Store, client kubernetes.Interface, onEvent func(SecretEvent), onHealth func(*Store), metrics *Metrics) *Cache {
	namespace := of.RemoteNamespace()
	if onHealth == nil {
		onHealth = func(*Store) {}
	}
	c := &Cache{
		store: of.String(), of: of, namespace: namespace, client: client, onEvent: onEvent, onHealth: onHealth, metrics: metrics,
		wanted: map[string]bool{}, data: map[string]*corev1.Secret{}, keepAll: true,
	}
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			return client.CoreV1().Secrets(namespace).List(ctx, opts)
		},
		// The reflector retries a failing watch quietly, so the cache tracks the
		// stream itself: it can vouch for its data only while a watch is open.
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			w, err := client.CoreV1().Secrets(namespace).Watch(ctx, opts)
			if err != nil {
				c.setBroken(true)
				return nil, err
			}
			gen := c.watchOpened()
			return newTrackedWatch(w, func() { c.watchEnded(gen) }), nil
		},
	}
	c.informer = cache.NewSharedIndexInformerWithOptions(lw, &corev1.Secret{}, cache.SharedIndexInformerOptions{})
	// Neither call can fail before the informer runs.
	_ = c.informer.SetTransform(c.transform)
	_ = c.informer.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) {
			c.noWatch = true
			return
		}
		c.setBrokenLocked(true)
	})
	_, _ = c.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { c.changed(obj, false) },
		UpdateFunc: func(old, obj any) { c.updated(old, obj) },
		DeleteFunc: func(obj any) { c.changed(obj, true) },
	})
	return c
}

// run starts the informer. With trimAfterSync, the cache drops the data nobody
// wants once its first list is in; otherwise it waits for trim.
func (c *Cache) run(ctx context.Context, trimAfterSync bool) {
	ctx, c.cancel = context.WithCancel(ctx)
	go c.informer.RunWithContext(ctx)
	go c.checkCredentials(ctx)
	if trimAfterSync {
		go func() {
			if cache.WaitForCacheSync(ctx.Done(), c.informer.HasSynced) {
				c.trim()
			}
		}()
	}
}

// trim drops the data of every Secret that no copy or admission has asked for, and
// keeps only wanted data from now on.
func (c *Cache) trim() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.keepAll {
		return
	}
	c.keepAll = false
	for name := range c.data {
		if !c.wanted[name] {
			delete(c.data, name)
		}
	}
}

// waitSynced waits, at most until ctx ends, for the first list: it holds every
// Secret, so waiting for it beats reading one Secret live. It stops as soon as a list
// or watch has failed or been forbidden: a live read then says sooner what is wrong.
func (c *Cache) waitSynced(ctx context.Context) {
	if c.informer.HasSynced() {
		return
	}
	cache.WaitForCacheSync(ctx.Done(), func() bool { return c.synced() || c.isBroken() })
}

func (c *Cache) stop() {
	if c.cancel != nil {
		c.cancel()
	}
}

// synced reports whether the first list is in, or the upstream forbids listing (then
// there is nothing to wait for).
func (c *Cache) synced() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.noWatch || c.informer.HasSynced()
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

// setBroken records whether the cache has a watch open.
func (c *Cache) setBroken(broken bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.setBrokenLocked(broken)
}

func (c *Cache) setBrokenLocked(broken bool) {
	if c.broken != broken {
		c.metrics.setWatchBroken(c.store, broken)
		go c.onHealth(c.of)
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
func (c *Cache) refused() { go c.onHealth(c.of) }

func (c *Cache) setRefusal(err error) {
	c.mu.Lock()
	changed := (c.refusal == nil) != (err == nil)
	c.refusal = err
	c.mu.Unlock()
	if changed {
		c.onHealth(c.of)
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
func CheckAccess(ctx context.Context, client kubernetes.Interface, namespace, verb string) (bool, error) {
	review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
		ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: namespace, Verb: verb, Resource: "secrets"},
	}}
	res, err := client.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, review, metav1.CreateOptions{})
	if err != nil {
		return false, err
	}
	return res.Status.Allowed, nil
}

// transform keeps a wanted Secret's data aside and gives the informer only the
// Secret's metadata to store. It is idempotent: metadata passes through as it is.
// A transform with a side map, rather than a metadata informer and reads, because the
// watch already carries the data: a read per change would double the upstream
// requests and the lag.
func (c *Cache) transform(obj any) (any, error) {
	s, ok := obj.(*corev1.Secret)
	if !ok {
		return obj, nil // already metadata, or a tombstone
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.noWatch = false
	if c.keepAll || c.wanted[s.Name] {
		c.data[s.Name] = stripped(s, true)
	}
	return &metav1.PartialObjectMetadata{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Name: s.Name, Namespace: s.Namespace, UID: s.UID, ResourceVersion: s.ResourceVersion},
	}, nil
}

// stripped copies what secret-relay needs of a Secret: no managed fields, and the
// data only when asked.
func stripped(s *corev1.Secret, withData bool) *corev1.Secret {
	out := &corev1.Secret{
		TypeMeta:   s.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{Name: s.Name, Namespace: s.Namespace, UID: s.UID, ResourceVersion: s.ResourceVersion},
		Type:       s.Type,
	}
	if withData {
		out.Data = s.Data
	}
	return out
}

func (c *Cache) updated(old, obj any) {
	o, _ := old.(*metav1.PartialObjectMetadata)
	n, _ := obj.(*metav1.PartialObjectMetadata)
	if o != nil && n != nil && o.ResourceVersion == n.ResourceVersion {
		return // a relist that changed nothing
	}
	c.changed(obj, false)
}

func (c *Cache) changed(obj any, deleted bool) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	s, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok {
		return
	}
	c.mu.Lock()
	wanted := c.wanted[s.Name]
	if deleted {
		delete(c.data, s.Name)
	}
	c.mu.Unlock()
	if wanted && c.onEvent != nil {
		c.onEvent(SecretEvent{Store: c.of, Name: s.Name, Deleted: deleted, Seen: time.Now()})
	}
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
// its watch is not broken. Before the first list is in, what it holds came from
// live reads moments ago, which is as current as another read would be; that is
// what lets one read serve a whole burst of cold admissions.
func (c *Cache) cached(name string) (*corev1.Secret, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.broken || c.noWatch || c.refusal != nil {
		return nil, false
	}
	s, ok := c.data[name]
	return s, ok
}

// Get returns an upstream Secret: from the cache when it holds a current copy,
// otherwise by one upstream read shared by every caller that asks meanwhile. The
// Secret is shared with the cache and must not be modified.
func (c *Cache) Get(ctx context.Context, name string) (*corev1.Secret, error) {
	if err := c.refusalErr(); err != nil {
		return nil, err
	}
	if s, ok := c.cached(name); ok {
		c.metrics.cacheHit()
		return s, nil
	}
	c.Want(name)
	if !c.informer.HasSynced() && !c.isBroken() {
		// A cache just started: its first list is on the way and holds this Secret.
		wait, cancel := context.WithTimeout(ctx, firstListWait)
		c.waitSynced(wait)
		cancel()
	}
	// Asked again in any case: the first list may have landed since the first look.
	if s, ok := c.cached(name); ok {
		c.metrics.cacheHit()
		return s, nil
	}
	c.metrics.cacheMiss()
	ch := c.flight.DoChan(name, func() (any, error) {
		// Detached from any one caller: a caller that gives up must not fail the
		// others that share this read. The client's own timeout still bounds it.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), readTimeout)
		defer cancel()
		s, err := c.client.CoreV1().Secrets(c.namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		s = stripped(s, true)
		c.mu.Lock()
		if prev, ok := c.data[name]; !ok || newer(s, prev) {
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
		return res.Val.(*corev1.Secret), nil
	case <-ctx.Done():
		return nil, fmt.Errorf("reading Secret %q: %w", name, ctx.Err())
	}
}

// readTimeout bounds one shared upstream read.
const readTimeout = 10 * time.Second

// firstListWait bounds how long a read waits for a new cache's first list before
// it reads live instead.
const firstListWait = time.Second

func (c *Cache) isBroken() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.broken || c.noWatch
}

// newer reports whether a is a later version than b. Resource versions are etcd
// revisions in every API server secret-relay talks to; one that does not parse
// counts as newer, so that a live read is never shadowed by a copy it cannot rank.
func newer(a, b *corev1.Secret) bool {
	if a.UID != b.UID {
		return true
	}
	av, errA := strconv.ParseUint(a.ResourceVersion, 10, 64)
	bv, errB := strconv.ParseUint(b.ResourceVersion, 10, 64)
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
