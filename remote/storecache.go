package remote

import (
	"context"
	"fmt"
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
	if s, ok := c.converted[u.GetUID()]; ok && s.ResourceVersion == u.GetResourceVersion() {
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
// not hold yet, perhaps created a moment ago, is read from the API.
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
		notFound = webhook.Denyf("store %s not found in namespace %q", ref, ns)
	case webhook.ClusterSecretStoreKind:
		informer, gvr = c.cluster, v1alpha1.ClusterSecretStoreGVR
		notFound = webhook.Denyf("store %s not found", ref)
	default:
		return nil, webhook.Denyf("unknown store kind %q", ref.Kind)
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
