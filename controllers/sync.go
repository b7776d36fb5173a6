package controllers

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/secret-relay/secret-relay/relay"
	"github.com/secret-relay/secret-relay/remote"
)

// SyncConfig configures a SyncController.
type SyncConfig struct {
	Local *relay.ManagedSecrets
	// Stores is waited for before the first sync; Authorizer reads through it.
	Stores *remote.StoreCache
	// Authorizer decides, before every background write, whether the copy's
	// namespace may still use its store.
	Authorizer *remote.Authorizer
	Upstreams  *remote.Upstreams
	// Tokens keys the data tokens, as admission's do.
	Tokens  relay.Tokenizer
	Metrics *Metrics
	Logger  *zap.Logger
	// Recorder writes the Warning events on copies.
	Recorder record.EventRecorder
	// Describe words an error for an event: webhook.Describe, so that an event
	// says what a denial would.
	Describe func(error) string
	// Pods says which copies live pods use, and Owners which of a copy's owners
	// live, so that a copy deleted while one does is written again. Without them, a
	// deleted copy waits for the next admission.
	Pods   *relay.PodUsage
	Owners LiveOwners
	// WaitFor are more caches to wait for before the first sync: namespaces, the
	// token key.
	WaitFor []cache.InformerSynced
	// Now is the clock; tests fix it.
	Now func() time.Time
}

// LiveOwners finds which of a copy's owners still live.
type LiveOwners interface {
	LiveOwners(ctx context.Context, namespace string, refs []metav1.OwnerReference) ([]metav1.OwnerReference, error)
}

// SyncController keeps every managed local copy in step with upstream (contract §6).
//
// Every replica runs it, so that each keeps the upstream caches for the Secrets its
// copies reference warm for admission; only the leader writes. An upstream change
// arrives on the store's watch and is written to each copy that references it; an
// upstream deletion keeps the copy and leaves a Warning event on it. Before every
// write, the copy's namespace must still be allowed to use its store, by the same
// Authorizer admission asks: a Secret that merely looks managed gets nothing its
// namespace could not have asked for, and a copy whose namespace lost access keeps
// its data and is no longer refreshed. On start and on becoming leader, every copy
// is checked once, and rewritten only when its data or token is stale.
type SyncController struct {
	cfg   SyncConfig
	queue workqueue.TypedRateLimitingInterface[string]
	// readers finds the copies that read an upstream Secret (remotesOf). A copy
	// whose Add is not handled yet is missing from it for a moment; that Add queues
	// the copy, whose sync reads the upstream cache as it is by then, so no upstream
	// change is missed.
	readers *relay.KeyIndex
	leader  atomic.Bool

	mu sync.Mutex
	// seen holds, per local copy, when the earliest unsynced upstream change arrived.
	seen map[string]time.Time
	// warned holds, per local copy, the Warning event last written on it, so that
	// each problem is reported once, until the copy is healthy again.
	warned map[string]string
	// gone holds the copies deleted while a live pod used them, until they are
	// written again or no pod uses them any more.
	gone   map[string]*corev1.Secret
	primed atomic.Bool
}

// storeIndex indexes managed copies by the store their source names, so that a
// change to a store reaches every copy it feeds; readers finds them by the upstream
// Secrets they read. Both come from a copy's source, whether or not its namespace
// may use the store: the sync decides that.
const storeIndex = "secret-relay.io/store"

// NewSyncController wires the controller to the local and upstream caches. It must
// be called before the managed Secrets cache runs: it adds indexes to it. Upstream
// caches opened from now on wait for Run to have found what the copies want.
func NewSyncController(cfg SyncConfig) (*SyncController, error) {
	if cfg.Local == nil || cfg.Stores == nil || cfg.Authorizer == nil || cfg.Upstreams == nil || cfg.Tokens == nil || cfg.Recorder == nil || cfg.Describe == nil {
		return nil, errors.New("invalid configuration: local, stores, authorizer, upstreams, tokens, recorder and describe are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &SyncController{
		cfg:     cfg,
		queue:   workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]()),
		readers: relay.NewKeyIndex(),
		seen:    map[string]time.Time{},
		warned:  map[string]string{},
		gone:    map[string]*corev1.Secret{},
	}
	inf := cfg.Local.Informer()
	if err := inf.AddIndexers(cache.Indexers{
		cache.NamespaceIndex: cache.MetaNamespaceIndexFunc,
		storeIndex: func(obj any) ([]string, error) {
			return bySource(obj, func(store string, _ relay.SecretRequest) []string { return []string{store} }), nil
		},
	}); err != nil {
		return nil, fmt.Errorf("could not index managed Secrets: %w", err)
	}
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { c.localChanged(nil, obj) },
		UpdateFunc: c.localChanged,
		DeleteFunc: c.forgetLocal,
	})
	if err != nil {
		return nil, fmt.Errorf("could not watch managed Secrets: %w", err)
	}
	cfg.Upstreams.OnEvent(c.upstreamChanged)
	cfg.Upstreams.Hold()
	return c, nil
}

// bySource is what keys makes of a cached copy's store (as storeIndexKey names it)
// and of what its source asks for; nothing when the source is unreadable (the sync
// reports that).
func bySource(obj any, keys func(store string, req relay.SecretRequest) []string) []string {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	ns, annotation, ok := relay.CopySource(obj)
	if !ok {
		return nil
	}
	src, err := relay.ParseSource(annotation)
	if err != nil {
		return nil
	}
	req := relay.SecretRequest{Store: src.Store, Data: src.Data, DataFrom: src.DataFrom}
	return keys(storeIndexKey(src.Store.Kind, ns, src.Store.Name), req)
}

func storeIndexKey(kind relay.StoreKind, copyNamespace, name string) string {
	if kind == relay.ClusterSecretStoreKind {
		copyNamespace = ""
	}
	return string(kind) + "/" + copyNamespace + "/" + name
}

// SetLeader says whether this replica may write. Becoming leader re-checks every copy.
func (c *SyncController) SetLeader(leading bool) {
	if c.leader.Swap(leading) == leading || !leading {
		return
	}
	c.ResyncAll()
}

// ResyncAll checks every copy again, as when the token key changed.
func (c *SyncController) ResyncAll() {
	for _, key := range c.cfg.Local.Informer().GetStore().ListKeys() {
		c.queue.Add(key)
	}
}

// StoreChanged checks again every copy that store s feeds: its spec or a Secret or
// ConfigMap it references changed, so its upstream client, namespace or conditions
// may have.
func (c *SyncController) StoreChanged(s *remote.Store) {
	c.enqueueIndexed(storeIndex, storeIndexKey(s.Kind, s.Namespace, s.Name))
}

// WatchNamespaces checks again the copies of every namespace whose labels change, or
// that is being deleted: a ClusterSecretStore's selector may no longer admit it.
func (c *SyncController) WatchNamespaces(namespaces cache.SharedIndexInformer) error {
	_, err := namespaces.AddEventHandler(cache.ResourceEventHandlerFuncs{UpdateFunc: func(old, obj any) {
		o, n := old.(*corev1.Namespace), obj.(*corev1.Namespace)
		if !maps.Equal(o.Labels, n.Labels) || n.DeletionTimestamp != nil {
			c.NamespaceChanged(n.Name)
		}
	}})
	return err
}

// NamespaceChanged checks again every copy in namespace ns: its labels may have
// changed what it may use.
func (c *SyncController) NamespaceChanged(ns string) {
	c.enqueueIndexed(cache.NamespaceIndex, ns)
}

func (c *SyncController) enqueueIndexed(index, value string) {
	keys, err := c.cfg.Local.Informer().GetIndexer().IndexKeys(index, value)
	if err != nil {
		c.cfg.Logger.Error("could not look up copies", zap.String("index", index), zap.Error(err))
		return
	}
	for _, key := range keys {
		c.queue.Add(key)
	}
}

// Run processes the queue until ctx ends. Before its workers start, it has every
// copy that exists say what it reads, and only then starts the upstream caches they
// need: their first lists keep what is wanted and nothing else. That work is local,
// and Primed reports it done.
func (c *SyncController) Run(ctx context.Context) error {
	go func() {
		<-ctx.Done()
		c.queue.ShutDown()
	}()
	wait := append([]cache.InformerSynced{c.cfg.Local.Synced, c.cfg.Stores.Synced}, c.cfg.WaitFor...)
	if !cache.WaitForCacheSync(ctx.Done(), wait...) {
		return nil
	}
	for _, obj := range c.cfg.Local.Informer().GetStore().List() {
		local, ok := relay.SecretOf(obj)
		if !ok {
			continue
		}
		if _, _, err := c.prepare(ctx, local); err != nil {
			c.cfg.Logger.Debug("could not prepare local copy; the sync retries", zap.Error(err))
		}
	}
	c.cfg.Upstreams.Release()
	c.primed.Store(true)

	// Each sync is one write at most, and a write waits a round trip to the API
	// server, so the workers bound the write rate as much as the client's QPS: the
	// goal of 10,000 copies in 30 s needs 333 writes/s. Workers beyond what the
	// client's QPS allows only queue.
	const workers = 16
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

// Primed reports whether every copy that existed at start has said what it reads.
// It depends on the downstream cluster alone, never on an upstream.
func (c *SyncController) Primed() bool { return c.primed.Load() }

// localChanged queues a copy that was added (old is nil) or changed, and keeps
// readers in step with what it reads.
func (c *SyncController) localChanged(old, obj any) {
	key, err := cache.MetaNamespaceKeyFunc(obj)
	if err != nil {
		return
	}
	switch {
	case old == nil:
		c.readers.Set(key, nil, remotesOf(obj))
	case sourceOf(old) != sourceOf(obj):
		c.readers.Set(key, remotesOf(old), remotesOf(obj))
	}
	c.queue.Add(key)
}

// sourceOf is a cached copy's source annotation.
func sourceOf(obj any) string {
	_, source, _ := relay.CopySource(obj)
	return source
}

func (c *SyncController) forgetLocal(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		return
	}
	c.readers.Set(key, remotesOf(obj), nil)
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.seen, key)
	delete(c.warned, key)
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	deleted, ok := relay.SecretOf(obj)
	if !ok || c.cfg.Pods == nil {
		return
	}
	// Whether an owner lives takes a read: the sync looks, after the delay.
	if c.cfg.Pods.UsedByLive(deleted.Namespace, deleted.Name) || len(deleted.OwnerReferences) > 0 && c.cfg.Owners != nil {
		c.gone[key] = deleted
		c.queue.AddAfter(key, recreateDelay)
	}
}

// recreateDelay is how long a copy deleted while a live pod uses it waits before
// it is written again, and its pods are looked at again: the garbage collector
// deletes a workload's pods and its copy together, and the pods' own deletion may
// reach the cache after the copy's. The contract wants it back within 10 s.
const recreateDelay = 2 * time.Second

// goneCopy returns the copy deleted under key, if a live pod or a live owner still
// uses it, and those of its owners that live.
func (c *SyncController) goneCopy(ctx context.Context, key string) (*corev1.Secret, []metav1.OwnerReference, bool, error) {
	c.mu.Lock()
	deleted, ok := c.gone[key]
	c.mu.Unlock()
	if !ok {
		return nil, nil, false, nil
	}
	var owners []metav1.OwnerReference
	if len(deleted.OwnerReferences) > 0 && c.cfg.Owners != nil {
		var err error
		if owners, err = c.cfg.Owners.LiveOwners(ctx, deleted.Namespace, deleted.OwnerReferences); err != nil {
			return nil, nil, false, fmt.Errorf("could not read the owners of %s: %w", key, err)
		}
	}
	if len(owners) == 0 && !c.cfg.Pods.UsedByLive(deleted.Namespace, deleted.Name) {
		c.forgetGone(key)
		return nil, nil, false, nil
	}
	return deleted, owners, true, nil
}

func (c *SyncController) forgetGone(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.gone, key)
}

// upstreamChanged queues every local copy that reads the changed upstream Secret.
func (c *SyncController) upstreamChanged(ev remote.SecretEvent) {
	store := storeIndexKey(ev.Store.Kind, ev.Store.Namespace, ev.Store.Name)
	keys := c.readers.Of(store + "\x00" + ev.Name)
	c.mu.Lock()
	for _, key := range keys {
		if _, ok := c.seen[key]; !ok {
			c.seen[key] = ev.Seen
		}
	}
	c.mu.Unlock()
	for _, key := range keys {
		c.queue.Add(key)
	}
}

func (c *SyncController) processNext(ctx context.Context) bool {
	key, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(key)
	if err := c.sync(ctx, key); err != nil {
		c.cfg.Metrics.sync("error", 0)
		c.cfg.Logger.Warn("could not sync local copy", zap.String("secret", key), zap.Error(err))
		c.queue.AddRateLimited(key)
		return true
	}
	c.queue.Forget(key)
	return true
}

// copyPlan is what one copy reads, through which store, as prepare found it.
type copyPlan struct {
	req      relay.SecretRequest
	store    *remote.Store
	upstream *remote.Cache
}

// problem is why a copy cannot be synced until something changes: a Warning event
// on it, and the sync result to count.
type problem struct {
	reason, message, result string
}

// prepare finds what a copy reads and whether its namespace may still read it, and
// tells the upstream cache what to keep. It reads nothing upstream. A copy that
// cannot be synced as it stands returns a problem; an error is a failure to find
// out, worth a retry.
func (c *SyncController) prepare(ctx context.Context, local *corev1.Secret) (*copyPlan, *problem, error) {
	key := local.Namespace + "/" + local.Name
	src, err := relay.ParseSource(local.Annotations[relay.AnnotationSource])
	if err != nil {
		return nil, &problem{reason: "SourceUnreadable", result: "error",
			message: fmt.Sprintf("its %s annotation is unreadable; the copy is left as it is", relay.AnnotationSource)}, nil
	}
	grant, err := c.cfg.Authorizer.Authorize(ctx, local.Namespace, src.Store)
	if err == nil {
		var up *remote.Cache
		if up, err = c.cfg.Upstreams.For(ctx, grant); err == nil {
			req := relay.SecretRequest{Name: local.Name, Store: src.Store, Data: src.Data, DataFrom: src.DataFrom}
			names := req.RemoteKeys()
			up.Want(names...)
			return &copyPlan{req: req, store: grant.Store(), upstream: up}, nil, nil
		}
	}
	if !remote.Refused(err) {
		return nil, nil, err
	}
	c.clearSeen(key)
	reason := "AccessDenied"
	if errors.Is(err, relay.ErrStoreMisconfigured) {
		reason = "StoreMisconfigured"
	}
	return nil, &problem{reason: reason, result: "denied", message: c.cfg.Describe(err) + "; the copy keeps its data and is no longer refreshed"}, nil
}

// sync brings one local copy up to date with what the upstream cache holds.
func (c *SyncController) sync(ctx context.Context, key string) (err error) {
	obj, ok, err := c.cfg.Local.Informer().GetStore().GetByKey(key)
	if err != nil {
		return err
	}
	var (
		local  *corev1.Secret
		owners []metav1.OwnerReference
	)
	// recreate is set for a copy deleted while a live pod or owner uses it: it is
	// planned from its last source and written again, through the same checks.
	recreate := !ok
	if recreate {
		if !c.leader.Load() {
			c.forgetGone(key) // the leader's to write again
			return nil
		}
		if local, owners, ok, err = c.goneCopy(ctx, key); !ok {
			return err
		}
		// Whatever stops the re-creation but a failure to retry (the namespace
		// lost the store, the upstream Secret went) forgets the copy.
		defer func() {
			if err == nil {
				c.forgetGone(key)
			}
		}()
	} else if local, ok = relay.SecretOf(obj); !ok {
		return nil
	}
	plan, prob, err := c.prepare(ctx, local)
	if err != nil {
		return err
	}
	if !c.leader.Load() {
		return nil
	}
	if prob != nil {
		c.cfg.Metrics.sync(prob.result, 0)
		c.warn(local, prob.reason, prob.message)
		return nil
	}

	read := relay.RemoteSecrets{}
	for _, name := range plan.req.RemoteKeys() {
		s, err := plan.upstream.GetListed(ctx, name)
		if apierrors.IsNotFound(err) {
			c.clearSeen(key)
			c.cfg.Metrics.sync("deleted_upstream", 0)
			c.warn(local, "UpstreamDeleted", fmt.Sprintf("upstream Secret %q was deleted from %s; the local copy is kept as it was", name, plan.store))
			return nil
		}
		if err != nil {
			return fmt.Errorf("could not read upstream Secret %q of %s: %s", name, plan.store, remote.DescribeUpstreamError(err))
		}
		read[name] = s
	}
	desired, err := relay.PlanSecret(local.Namespace, plan.req, read, c.cfg.Now(), c.cfg.Tokens)
	if err == nil && recreate {
		desired.OwnerReferences = owners
		return c.recreate(ctx, key, local, desired)
	}
	if err == nil {
		var write bool
		if write, err = relay.CheckExisting(local, desired); err == nil && !write {
			c.cfg.Metrics.sync("unchanged", 0)
			c.clearSeen(key)
			c.healthy(key)
			return nil
		}
	}
	if err != nil {
		// Upstream changed into something admission would refuse (a key gone, a
		// token type, over 1 MiB): keep the copy and say so.
		c.cfg.Metrics.sync("error", 0)
		c.warn(local, "SyncFailed", c.cfg.Describe(err)+"; keeping the last copy")
		return nil
	}
	relay.KeepOrphanMark(local, desired)
	if err := c.cfg.Local.Apply(ctx, local, desired, false); err != nil {
		if !apierrors.IsConflict(err) && !apierrors.IsAlreadyExists(err) {
			c.warn(local, "SyncFailed", fmt.Sprintf("could not write the copy: %s; keeping the last copy and retrying", relay.DescribeWriteError(err, desired.Data)))
		}
		// The error may quote what the API server refused; the event above says
		// it without values, and the log says only that it failed.
		return fmt.Errorf("could not update %s: %s", key, apierrors.ReasonForError(err))
	}
	c.cfg.Metrics.sync("updated", c.cfg.Now().Sub(c.clearSeen(key)))
	c.healthy(key)
	c.cfg.Logger.Info("synced local copy", zap.String("namespace", local.Namespace), zap.String("secret", local.Name), zap.String("store", plan.store.String()))
	return nil
}

// recreate creates a copy deleted while a live pod or owner used it. It gets the
// owners that were found live, and no others: the garbage collector may have
// deleted it because its owners went while their pods stay (an orphaning delete),
// and the same references would have it deleted again, round after round. The
// pods that use it keep it from the orphan sweep, and the next admission of a live
// workload names that workload again. A Secret created under its name meanwhile, by
// an admission or by someone else, is left as it is.
func (c *SyncController) recreate(ctx context.Context, key string, deleted, desired *corev1.Secret) error {
	err := c.cfg.Local.Apply(ctx, nil, desired, false)
	switch {
	case apierrors.IsAlreadyExists(err):
		c.forgetGone(key)
		return nil
	case err != nil:
		return fmt.Errorf("could not write %s again: %s", key, apierrors.ReasonForError(err))
	}
	c.forgetGone(key)
	c.cfg.Metrics.sync("updated", 0)
	c.cfg.Logger.Info("wrote again a copy deleted while a live pod uses it", zap.String("namespace", deleted.Namespace), zap.String("secret", deleted.Name))
	return nil
}

// warn writes a Warning event on the copy, unless the last one said the same.
func (c *SyncController) warn(local *corev1.Secret, reason, message string) {
	key := local.Namespace + "/" + local.Name
	c.mu.Lock()
	already := c.warned[key] == reason+"\x00"+message
	c.warned[key] = reason + "\x00" + message
	c.mu.Unlock()
	if already {
		return
	}
	c.cfg.Recorder.Event(local, corev1.EventTypeWarning, reason, message)
	c.cfg.Logger.Warn("local copy not synced", zap.String("namespace", local.Namespace), zap.String("secret", local.Name),
		zap.String("reason", reason), zap.String("message", message))
}

// healthy forgets the last warning: the next problem is reported again.
func (c *SyncController) healthy(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.warned, key)
}

// clearSeen forgets when the change being written arrived, and returns it (now
// when the sync was not triggered by a watched change).
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
