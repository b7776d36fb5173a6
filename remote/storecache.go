package remote

import (
	"context"
	"fmt"
	"slices"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/secret-relay/secret-relay/api/client/clientset/versioned"
	"github.com/secret-relay/secret-relay/api/client/informers/externalversions"
	listers "github.com/secret-relay/secret-relay/api/client/listers/api/v1alpha1"
	"github.com/secret-relay/secret-relay/api/v1alpha1"
	"github.com/secret-relay/secret-relay/relay"
)

// StoreCache watches SecretStores and ClusterSecretStores in the downstream cluster,
// so that admission finds a store without an API round trip. Every replica runs it.
type StoreCache struct {
	client  versioned.Interface
	factory externalversions.SharedInformerFactory
	stores  cache.SharedIndexInformer
	cluster cache.SharedIndexInformer
	// Listers read the typed stores the informers hold; they are shared and must
	// not be modified.
	SecretStores        listers.SecretStoreLister
	ClusterSecretStores listers.ClusterSecretStoreLister
}

// NewStoreCache returns a cache whose informers resync every resync: the store
// validator re-checks each store on that beat.
func NewStoreCache(client versioned.Interface, resync time.Duration) *StoreCache {
	f := externalversions.NewSharedInformerFactory(client, resync)
	stores, cluster := f.SecretRelay().V1alpha1().SecretStores(), f.SecretRelay().V1alpha1().ClusterSecretStores()
	c := &StoreCache{
		client: client, factory: f,
		stores: stores.Informer(), cluster: cluster.Informer(),
		SecretStores: stores.Lister(), ClusterSecretStores: cluster.Lister(),
	}
	// Managed fields are large and nothing here reads them.
	_ = c.stores.SetTransform(relay.StripManagedFields)
	_ = c.cluster.SetTransform(relay.StripManagedFields)
	return c
}

// Client is the typed client the cache reads with, for status writes.
func (c *StoreCache) Client() versioned.Interface { return c.client }

// Start starts the informers; they stop with ctx.
func (c *StoreCache) Start(ctx context.Context) { c.factory.Start(ctx.Done()) }

// Synced reports whether both informers hold a full list.
func (c *StoreCache) Synced() bool { return c.stores.HasSynced() && c.cluster.HasSynced() }

// Informers are the two store informers, SecretStores first.
func (c *StoreCache) Informers() []cache.SharedIndexInformer {
	return []cache.SharedIndexInformer{c.stores, c.cluster}
}

// List returns every store the cache holds.
func (c *StoreCache) List() []*Store {
	var out []*Store
	for _, obj := range c.stores.GetStore().List() {
		out = append(out, StoreFromSecretStore(obj.(*v1alpha1.SecretStore)))
	}
	for _, obj := range c.cluster.GetStore().List() {
		out = append(out, StoreFromClusterSecretStore(obj.(*v1alpha1.ClusterSecretStore)))
	}
	return out
}

// Get returns the store ref names, as seen from namespace ns. A store the cache does
// not hold yet, perhaps created a moment ago, is read from the API. A store that does
// not exist is a relay.Error with the reason ErrStoreNotFound. Only Authorizer should
// ask: finding a store says nothing about who may use it.
func (c *StoreCache) Get(ctx context.Context, ns string, ref relay.StoreRef) (*Store, error) {
	api := c.client.SecretRelayV1alpha1()
	switch ref.Kind {
	case relay.SecretStoreKind:
		s, err := c.SecretStores.SecretStores(ns).Get(ref.Name)
		if apierrors.IsNotFound(err) {
			s, err = api.SecretStores(ns).Get(ctx, ref.Name, metav1.GetOptions{})
		}
		if apierrors.IsNotFound(err) {
			return nil, &relay.Error{Reason: relay.ErrStoreNotFound, Namespace: ns, Store: ref}
		}
		if err != nil {
			return nil, fmt.Errorf("could not read store %s: %w", ref, err)
		}
		return StoreFromSecretStore(s), nil
	case relay.ClusterSecretStoreKind:
		s, err := c.ClusterSecretStores.Get(ref.Name)
		if apierrors.IsNotFound(err) {
			s, err = api.ClusterSecretStores().Get(ctx, ref.Name, metav1.GetOptions{})
		}
		if apierrors.IsNotFound(err) {
			return nil, &relay.Error{Reason: relay.ErrStoreNotFound, Namespace: ns, Store: ref}
		}
		if err != nil {
			return nil, fmt.Errorf("could not read store %s: %w", ref, err)
		}
		return StoreFromClusterSecretStore(s), nil
	default:
		return nil, &relay.Error{Reason: relay.ErrStoreNotFound, Namespace: ns, Store: ref}
	}
}

// StoreHandlers hear of the stores that change.
type StoreHandlers struct {
	// Changed is called when a store is created, its spec changes, or a Secret or
	// ConfigMap it references changes.
	Changed func(*Store)
	// Deleted is called when a store is deleted.
	Deleted func(*Store)
}

// storeOf is the Store of an informer's object, or of a deleted one's tombstone.
func storeOf(obj any) *Store {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	switch s := obj.(type) {
	case *v1alpha1.SecretStore:
		return StoreFromSecretStore(s)
	case *v1alpha1.ClusterSecretStore:
		return StoreFromClusterSecretStore(s)
	}
	return nil
}

// Watch calls h as stores and the objects they reference change, and keeps refs
// following the objects the stores reference.
func (c *StoreCache) Watch(refs *RefCache, h StoreHandlers) error {
	refs.OnChange(func(ref Reference) {
		for _, s := range c.List() {
			if slices.Contains(s.References(), ref) {
				h.Changed(s)
			}
		}
	})
	changed := func(obj any) {
		if s := storeOf(obj); s != nil {
			refs.Track(s.String(), s.References())
			h.Changed(s)
		}
	}
	for _, inf := range c.Informers() {
		if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: changed,
			UpdateFunc: func(old, obj any) {
				if o, n := old.(metav1.Object), obj.(metav1.Object); o.GetGeneration() != n.GetGeneration() {
					changed(obj) // not for status, labels or a resync: nothing a copy reads
				}
			},
			DeleteFunc: func(obj any) {
				if s := storeOf(obj); s != nil {
					refs.Track(s.String(), nil)
					h.Deleted(s)
				}
			},
		}); err != nil {
			return fmt.Errorf("could not watch stores: %w", err)
		}
	}
	return nil
}
