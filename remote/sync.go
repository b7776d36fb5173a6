package remote

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/secret-relay/secret-relay/webhook"
)

// SyncConfig configures a SyncController.
type SyncConfig struct {
	Local     *webhook.ManagedSecrets
	Stores    *StoreCache
	Upstreams *Upstreams
	Metrics   *Metrics
	Logger    *zap.Logger
	// Recorder writes the Warning event when an upstream Secret is deleted.
	Recorder record.EventRecorder
	// Now is the clock; tests fix it.
	Now func() time.Time
}

// SyncController keeps every managed local copy in step with upstream (contract §6).
//
// Every replica runs it, so that each keeps the upstream caches for the Secrets its
// copies reference warm for admission; only the leader writes. An upstream change
// arrives on the store's watch and is written to each copy that references it; an
// upstream deletion keeps the copy and leaves a Warning event on it. On start and on
// becoming leader, every copy is checked once, and rewritten only when its data-hash
// is stale.
type SyncController struct {
	cfg    SyncConfig
	queue  workqueue.TypedRateLimitingInterface[string]
	leader atomic.Bool

	mu sync.Mutex
	// refs maps "store key\x00remote name" to the local copies (namespace/name) that read it.
	refs map[string]map[string]bool
	// seen holds, per local copy, when the earliest unsynced upstream change arrived.
	seen map[string]time.Time
	// gone remembers the deletions already reported, so each warns once.
	gone map[string]bool
	// unprimed holds the copies that existed at start and have not been checked
	// yet; /readyz waits for it to empty, so that their upstream caches are warm.
	unprimed map[string]bool
	primed   atomic.Bool
}

// NewSyncController wires the controller to the local and upstream caches.
func NewSyncController(cfg SyncConfig) (*SyncController, error) {
	if cfg.Local == nil || cfg.Stores == nil || cfg.Upstreams == nil {
		return nil, errors.New("invalid configuration: local, stores and upstreams are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &SyncController{
		cfg:   cfg,
		queue: workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]()),
		refs:  map[string]map[string]bool{},
		seen:  map[string]time.Time{},
		gone:  map[string]bool{},
	}
	_, err := cfg.Local.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueueLocal,
		UpdateFunc: func(_, obj any) { c.enqueueLocal(obj) },
		DeleteFunc: c.forgetLocal,
	})
	if err != nil {
		return nil, fmt.Errorf("could not watch managed Secrets: %w", err)
	}
	cfg.Upstreams.OnEvent(c.upstreamChanged)
	return c, nil
}

// SetLeader says whether this replica may write. Becoming leader re-checks every copy.
func (c *SyncController) SetLeader(leading bool) {
	if c.leader.Swap(leading) == leading || !leading {
		return
	}
	for _, key := range c.cfg.Local.Informer().GetStore().ListKeys() {
		c.queue.Add(key)
	}
}

// Run processes the queue until ctx ends.
func (c *SyncController) Run(ctx context.Context) error {
	go func() {
		<-ctx.Done()
		c.queue.ShutDown()
	}()
	if !cache.WaitForCacheSync(ctx.Done(), c.cfg.Local.Synced, c.cfg.Stores.Synced) {
		return nil
	}
	c.mu.Lock()
	c.unprimed = map[string]bool{}
	for _, key := range c.cfg.Local.Informer().GetStore().ListKeys() {
		c.unprimed[key] = true
	}
	c.mu.Unlock()
	if len(c.unprimed) == 0 {
		c.setPrimed()
	}
	const workers = 4
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for c.processNext(ctx) {
			}
		})
	}
	wg.Wait()
	return nil
}

func (c *SyncController) enqueueLocal(obj any) {
	if key, err := cache.MetaNamespaceKeyFunc(obj); err == nil {
		c.queue.Add(key)
	}
}

func (c *SyncController) forgetLocal(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, locals := range c.refs {
		delete(locals, key)
	}
	delete(c.seen, key)
}

// upstreamChanged queues every local copy that reads the changed upstream Secret.
func (c *SyncController) upstreamChanged(ev SecretEvent) {
	c.mu.Lock()
	locals := make([]string, 0, len(c.refs[refIndex(ev.Store, ev.Name)]))
	for key := range c.refs[refIndex(ev.Store, ev.Name)] {
		locals = append(locals, key)
		if _, ok := c.seen[key]; !ok {
			c.seen[key] = ev.Seen
		}
	}
	c.mu.Unlock()
	for _, key := range locals {
		c.queue.Add(key)
	}
}

func refIndex(store, name string) string { return store + "\x00" + name }

func (c *SyncController) processNext(ctx context.Context) bool {
	key, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(key)
	defer c.markPrimed(key)
	if err := c.sync(ctx, key); err != nil {
		c.cfg.Metrics.sync("error", 0)
		c.cfg.Logger.Warn("could not sync local copy", zap.String("secret", key), zap.Error(err))
		c.queue.AddRateLimited(key)
		return true
	}
	c.queue.Forget(key)
	return true
}

// sync brings one local copy up to date with what the upstream cache holds.
func (c *SyncController) sync(ctx context.Context, key string) error {
	obj, ok, err := c.cfg.Local.Informer().GetStore().GetByKey(key)
	if err != nil || !ok {
		return err
	}
	local := obj.(*corev1.Secret)
	src, err := webhook.ParseSource(local.Annotations[webhook.AnnotationSource])
	if err != nil {
		return nil // not ours to fix: admission refuses to take over such a Secret too
	}
	store, err := c.cfg.Stores.Get(ctx, local.Namespace, src.Store)
	if webhook.IsDeny(err) {
		return nil // the store is gone; the copy stays as it is
	}
	if err != nil {
		return err
	}
	upstream, err := c.cfg.Upstreams.For(ctx, store)
	if err != nil {
		return err
	}
	req := webhook.SecretRequest{Name: local.Name, Store: src.Store, Data: src.Data, DataFrom: src.DataFrom}
	names := req.RemoteKeys()
	upstream.want(names...)
	c.track(store.String(), names, key)
	if !c.leader.Load() {
		return nil
	}

	remote := webhook.RemoteSecrets{}
	for _, name := range names {
		s, err := upstream.Get(ctx, name)
		if apierrors.IsNotFound(err) {
			c.upstreamDeleted(local, store, name)
			return nil
		}
		if err != nil {
			return fmt.Errorf("could not read upstream Secret %q of %s: %w", name, store, err)
		}
		remote[name] = s
	}
	c.forgetDeleted(key)
	desired, err := webhook.PlanSecret(local.Namespace, req, remote, c.cfg.Now())
	if err != nil {
		// Upstream changed into something admission would refuse (a key gone, a
		// token type): keep the copy and say so.
		c.cfg.Recorder.Eventf(local, corev1.EventTypeWarning, "SyncFailed", "%v; keeping the last copy", err)
		c.cfg.Metrics.sync("error", 0)
		return nil
	}
	write, err := webhook.CheckExisting(local, desired)
	if err != nil || !write {
		c.cfg.Metrics.sync("unchanged", 0)
		c.clearSeen(key)
		return nil
	}
	if err := c.cfg.Local.Apply(ctx, local, desired); err != nil {
		return fmt.Errorf("could not update %s: %w", key, err)
	}
	c.cfg.Metrics.sync("updated", c.cfg.Now().Sub(c.clearSeen(key)))
	c.cfg.Logger.Info("synced local copy", zap.String("namespace", local.Namespace), zap.String("secret", local.Name), zap.String("store", store.String()))
	return nil
}

// Primed reports whether every local copy that existed at start has been checked
// once, so that the upstream caches they need are started.
func (c *SyncController) Primed() bool { return c.primed.Load() }

func (c *SyncController) markPrimed(key string) {
	if c.primed.Load() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.unprimed == nil {
		return
	}
	delete(c.unprimed, key)
	if len(c.unprimed) == 0 {
		go c.setPrimed()
	}
}

// setPrimed records that every copy present at start has said what it wants, so
// the upstream caches may drop the rest.
func (c *SyncController) setPrimed() {
	if !c.primed.Swap(true) {
		c.cfg.Upstreams.Trim()
	}
}

// track records that local copy key reads names through store.
func (c *SyncController) track(store string, names []string, key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range names {
		idx := refIndex(store, n)
		if c.refs[idx] == nil {
			c.refs[idx] = map[string]bool{}
		}
		c.refs[idx][key] = true
	}
}

// clearSeen forgets when the change being written arrived, and returns it (zero when
// the sync was not triggered by a watched change).
func (c *SyncController) clearSeen(key string) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.seen[key]
	delete(c.seen, key)
	if t.IsZero() {
		return c.cfg.Now()
	}
	return t
}

func (c *SyncController) upstreamDeleted(local *corev1.Secret, store *Store, name string) {
	key := local.Namespace + "/" + local.Name
	c.mu.Lock()
	already := c.gone[key]
	c.gone[key] = true
	delete(c.seen, key)
	c.mu.Unlock()
	if already {
		return
	}
	c.cfg.Metrics.sync("deleted_upstream", 0)
	c.cfg.Recorder.Eventf(local, corev1.EventTypeWarning, "UpstreamDeleted",
		"upstream Secret %q was deleted from %s; the local copy is kept as it was", name, store)
	c.cfg.Logger.Warn("upstream Secret deleted; keeping the local copy", zap.String("namespace", local.Namespace),
		zap.String("secret", local.Name), zap.String("store", store.String()), zap.String("remote", name))
}

func (c *SyncController) forgetDeleted(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.gone, key)
}
