package remote

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"

	"github.com/secret-relay/secret-relay/api/v1alpha1"
	"github.com/secret-relay/secret-relay/webhook"
)

// StoreCache watches SecretStores and ClusterSecretStores in the downstream cluster,
// so that admission finds a store without an API round trip. Every replica runs it.
type StoreCache struct {
	dyn     dynamic.Interface
	factory dynamicinformer.DynamicSharedInformerFactory
	stores  cache.SharedIndexInformer
	cluster cache.SharedIndexInformer

	// converted memoizes the typed form of each cached store version: converting
	// from unstructured is reflection-heavy, and admission asks on every review.
	mu        sync.Mutex
	converted map[types.UID]*Store
}

// NewStoreCache returns a cache whose informers resync every resync: the store
// validator re-checks each store on that beat.
func NewStoreCache(dyn dynamic.Interface, resync time.Duration) *StoreCache {
	f := dynamicinformer.NewDynamicSharedInformerFactory(dyn, resync)
	return &StoreCache{
		dyn:     dyn,
		factory: f,
		stores:  f.ForResource(v1alpha1.SecretStoreGVR).Informer(),
		cluster: f.ForResource(v1alpha1.ClusterSecretStoreGVR).Informer(),
	}
}

// typed converts a cached store, once per version. Returned stores are shared and
// must not be modified.
func (c *StoreCache) typed(u *unstructured.Unstructured) (*Store, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.converted[u.GetUID()]; ok && s.ResourceVersion == u.GetResourceVersion() && s.Name == u.GetName() && s.Namespace == u.GetNamespace() {
		return s, nil
	}
	s, err := StoreFromUnstructured(u)
	if err != nil {
		return nil, err
	}
	if c.converted == nil || len(c.converted) > 4096 {
		c.converted = map[types.UID]*Store{} // deleted stores leave entries; start over now and then
	}
	c.converted[u.GetUID()] = s
	return s, nil
}

// Start starts the informers; they stop with ctx.
func (c *StoreCache) Start(ctx context.Context) { c.factory.Start(ctx.Done()) }

// Synced reports whether both informers hold a full list.
func (c *StoreCache) Synced() bool { return c.stores.HasSynced() && c.cluster.HasSynced() }

// Informers are the two store informers, SecretStores first.
func (c *StoreCache) Informers() []cache.SharedIndexInformer {
	return []cache.SharedIndexInformer{c.stores, c.cluster}
}

// Get returns the store ref names, as seen from namespace ns. A store the cache does
// not hold yet, perhaps created a moment ago, is read from the API. A store that does
// not exist is a denial whose cause is ErrStoreNotFound. Only Authorizer should ask:
// finding a store says nothing about who may use it.
func (c *StoreCache) Get(ctx context.Context, ns string, ref webhook.StoreRef) (*Store, error) {
	var (
		informer cache.SharedIndexInformer
		gvr      schema.GroupVersionResource
		key      = ref.Name
		notFound *webhook.DenyError
	)
	switch ref.Kind {
	case webhook.SecretStoreKind:
		informer, gvr, key = c.stores, v1alpha1.SecretStoreGVR, ns+"/"+ref.Name
		notFound = webhook.DenyBecause(ErrStoreNotFound, "store %s not found in namespace %q", ref, ns)
	case webhook.ClusterSecretStoreKind:
		informer, gvr = c.cluster, v1alpha1.ClusterSecretStoreGVR
		notFound = webhook.DenyBecause(ErrStoreNotFound, "store %s not found", ref)
	default:
		return nil, webhook.DenyBecause(ErrStoreNotFound, "unknown store kind %q", ref.Kind)
	}
	obj, ok, err := informer.GetStore().GetByKey(key)
	if err != nil {
		return nil, fmt.Errorf("could not read store %s from the cache: %w", ref, err)
	}
	if ok {
		return c.typed(obj.(*unstructured.Unstructured))
	}
	res := c.dyn.Resource(gvr)
	var u *unstructured.Unstructured
	if ref.Kind == webhook.SecretStoreKind {
		u, err = res.Namespace(ns).Get(ctx, ref.Name, metav1.GetOptions{})
	} else {
		u, err = res.Get(ctx, ref.Name, metav1.GetOptions{})
	}
	if apierrors.IsNotFound(err) {
		return nil, notFound
	}
	if err != nil {
		return nil, fmt.Errorf("could not read store %s: %w", ref, err)
	}
	return StoreFromUnstructured(u)
}

// StoreHandlers hear of the stores that change.
type StoreHandlers struct {
	// Changed is called when a store is created, its spec changes, or a Secret or
	// ConfigMap it references changes.
	Changed func(*Store)
	// Deleted is called when a store is deleted.
	Deleted func(*Store)
}

// Watch calls h as stores and the objects they reference (through refs) change.
func (c *StoreCache) Watch(refs *RefCache, h StoreHandlers) error {
	typed := func(obj any) *Store {
		if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = tomb.Obj
		}
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			return nil
		}
		s, err := c.typed(u)
		if err != nil {
			return nil
		}
		return s
	}
	for _, inf := range c.Informers() {
		if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: func(obj any) {
				if s := typed(obj); s != nil {
					h.Changed(s)
				}
			},
			UpdateFunc: func(old, obj any) {
				if o, n := old.(metav1.Object), obj.(metav1.Object); o.GetGeneration() == n.GetGeneration() {
					return // status, labels or a resync: nothing a copy reads
				}
				if s := typed(obj); s != nil {
					h.Changed(s)
				}
			},
			DeleteFunc: func(obj any) {
				if s := typed(obj); s != nil {
					h.Deleted(s)
				}
			},
		}); err != nil {
			return fmt.Errorf("could not watch stores: %w", err)
		}
	}
	refs.OnChange(func(ref Reference) {
		for _, inf := range c.Informers() {
			for _, obj := range inf.GetStore().List() {
				if s := typed(obj); s != nil && slices.Contains(s.References(), ref) {
					h.Changed(s)
				}
			}
		}
	})
	return nil
}
