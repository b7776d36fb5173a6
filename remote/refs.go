package remote

import (
	"context"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// RefCache reads the Secrets and ConfigMaps that stores reference from watch caches:
// one informer per referenced object, selected by name, started the first time the
// object is read. Warm admissions resolve a store's token and CA with no API call,
// and a rotated token reaches the upstream client as soon as the watch delivers it.
type RefCache struct {
	kube kubernetes.Interface
	ctx  context.Context
	live RefReader

	mu        sync.Mutex
	informers map[refKey]cache.SharedIndexInformer
}

type refKey struct{ kind, namespace, name string }

var _ RefReader = (*RefCache)(nil)

// NewRefCache returns a RefCache whose informers run until ctx ends.
func NewRefCache(ctx context.Context, kube kubernetes.Interface) *RefCache {
	return &RefCache{kube: kube, ctx: ctx, live: ClientsetRefReader(kube), informers: map[refKey]cache.SharedIndexInformer{}}
}

// Secret reads a referenced Secret.
func (r *RefCache) Secret(ctx context.Context, namespace, name string) (*corev1.Secret, error) {
	obj, err := r.get(refKey{"Secret", namespace, name})
	if obj == nil && err == nil {
		return r.live.Secret(ctx, namespace, name)
	}
	if err != nil {
		return nil, err
	}
	return obj.(*corev1.Secret), nil
}

// ConfigMap reads a referenced ConfigMap.
func (r *RefCache) ConfigMap(ctx context.Context, namespace, name string) (*corev1.ConfigMap, error) {
	obj, err := r.get(refKey{"ConfigMap", namespace, name})
	if obj == nil && err == nil {
		return r.live.ConfigMap(ctx, namespace, name)
	}
	if err != nil {
		return nil, err
	}
	return obj.(*corev1.ConfigMap), nil
}

// get returns the cached object, a NotFound error when the synced cache says it does
// not exist, or (nil, nil) when the cache cannot answer yet and the caller should
// read live.
func (r *RefCache) get(k refKey) (runtime.Object, error) {
	inf := r.informer(k)
	if !inf.HasSynced() {
		return nil, nil
	}
	obj, ok, err := inf.GetStore().GetByKey(k.namespace + "/" + k.name)
	switch {
	case err != nil:
		return nil, err
	case !ok:
		return nil, apierrors.NewNotFound(corev1.Resource(k.kind), k.name)
	}
	return obj.(runtime.Object), nil
}

func (r *RefCache) informer(k refKey) cache.SharedIndexInformer {
	r.mu.Lock()
	defer r.mu.Unlock()
	if inf, ok := r.informers[k]; ok {
		return inf
	}
	byName := func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", k.name).String()
	}
	var lw *cache.ListWatch
	var example runtime.Object
	switch k.kind {
	case "Secret":
		lw = cache.NewFilteredListWatchFromClient(r.kube.CoreV1().RESTClient(), "secrets", k.namespace, byName)
		example = &corev1.Secret{}
	default:
		lw = cache.NewFilteredListWatchFromClient(r.kube.CoreV1().RESTClient(), "configmaps", k.namespace, byName)
		example = &corev1.ConfigMap{}
	}
	inf := cache.NewSharedIndexInformer(lw, example, 0, cache.Indexers{})
	_ = inf.SetTransform(stripManagedFields)
	go inf.RunWithContext(r.ctx)
	r.informers[k] = inf
	return inf
}

// stripManagedFields drops managed fields before an object is cached: they are large
// and secret-relay never reads them.
func stripManagedFields(obj any) (any, error) {
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
	}
	return obj, nil
}
