package remote

import (
	"context"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/secret-relay/secret-relay/relay"
)

// RefCache reads the Secrets and ConfigMaps that stores reference from watch caches:
// one informer per referenced object, selected by name, run while some store
// references it (StoreCache.Watch tells it which). Warm admissions resolve a store's
// token and CA with no API call, and a rotated token reaches the upstream client as
// soon as the watch delivers it. An object no store references, or whose informer
// has not listed yet, is read live.
//
// One informer per object, rather than a shared one per kind: a shared informer
// would hold every Secret of the cluster. It keeps the context it was made with,
// because informers start from store events, which carry none.
type RefCache struct {
	kube kubernetes.Interface
	ctx  context.Context
	live RefReader

	mu        sync.Mutex
	informers map[refKey]*refInformer
	// users are the stores that reference each object; byStore the objects each
	// store references.
	users    map[refKey]map[string]bool
	byStore  map[string][]refKey
	onChange func(Reference)
}

type refKey struct{ kind, namespace, name string }

type refInformer struct {
	cache.SharedIndexInformer
	stop context.CancelFunc
}

var _ RefReader = (*RefCache)(nil)

// NewRefCache returns a RefCache whose informers run until ctx ends or no store
// references their object.
func NewRefCache(ctx context.Context, kube kubernetes.Interface) *RefCache {
	return &RefCache{
		kube: kube, ctx: ctx, live: ClientsetRefReader(kube),
		informers: map[refKey]*refInformer{}, users: map[refKey]map[string]bool{}, byStore: map[string][]refKey{},
	}
}

// OnChange sets who hears that a referenced object changed, appeared or went away
// after its informer's first list: the stores that read it must be resolved again.
// Set it before the first Track.
func (r *RefCache) OnChange(fn func(Reference)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.onChange = fn
}

// Track says that store (as Store.String names it) references refs, and nothing
// else: informers start for objects newly referenced, and stop for objects no store
// references any more. Track(store, nil) forgets a deleted store.
func (r *RefCache) Track(store string, refs []Reference) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, k := range r.byStore[store] {
		delete(r.users[k], store)
	}
	keys := make([]refKey, 0, len(refs))
	for _, ref := range refs {
		k := refKey{ref.Kind, ref.Namespace, ref.Name}
		keys = append(keys, k)
		if r.users[k] == nil {
			r.users[k] = map[string]bool{}
		}
		r.users[k][store] = true
		if r.informers[k] == nil {
			r.informers[k] = r.start(k)
		}
	}
	for _, k := range r.byStore[store] {
		if len(r.users[k]) == 0 {
			delete(r.users, k)
			if inf := r.informers[k]; inf != nil {
				inf.stop()
				delete(r.informers, k)
			}
		}
	}
	if len(keys) == 0 {
		delete(r.byStore, store)
	} else {
		r.byStore[store] = keys
	}
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
// not exist, or (nil, nil) when no cache can answer and the caller should read live.
func (r *RefCache) get(k refKey) (runtime.Object, error) {
	r.mu.Lock()
	inf := r.informers[k]
	r.mu.Unlock()
	if inf == nil || !inf.HasSynced() {
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

// start runs the informer of one referenced object; r.mu is held.
func (r *RefCache) start(k refKey) *refInformer {
	var lw *cache.ListWatch
	var example runtime.Object
	switch k.kind {
	case "Secret":
		secrets := r.kube.CoreV1().Secrets(k.namespace)
		lw, example = byNameListWatch(k.name, secrets.List, secrets.Watch), &corev1.Secret{}
	default:
		configMaps := r.kube.CoreV1().ConfigMaps(k.namespace)
		lw, example = byNameListWatch(k.name, configMaps.List, configMaps.Watch), &corev1.ConfigMap{}
	}
	ctx, stop := context.WithCancel(r.ctx)
	inf := &refInformer{SharedIndexInformer: cache.NewSharedIndexInformer(lw, example, 0, cache.Indexers{}), stop: stop}
	_ = inf.SetTransform(relay.StripManagedFields)
	if fn := r.onChange; fn != nil {
		ref := Reference{Kind: k.kind, Namespace: k.namespace, Name: k.name}
		_, _ = inf.AddEventHandler(cache.ResourceEventHandlerDetailedFuncs{
			AddFunc: func(_ any, initial bool) {
				if !initial {
					fn(ref) // created after the store first looked for it
				}
			},
			UpdateFunc: func(old, obj any) {
				if old.(metav1.Object).GetResourceVersion() != obj.(metav1.Object).GetResourceVersion() {
					fn(ref)
				}
			},
			DeleteFunc: func(any) { fn(ref) },
		})
	}
	go inf.RunWithContext(ctx)
	return inf
}

// byNameListWatch lists and watches the one object called name through a typed
// client's List and Watch.
func byNameListWatch[L runtime.Object](name string, list func(context.Context, metav1.ListOptions) (L, error),
	watchFn func(context.Context, metav1.ListOptions) (watch.Interface, error)) *cache.ListWatch {
	byName := func(o metav1.ListOptions) metav1.ListOptions {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
		return o
	}
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return list(ctx, byName(o))
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return watchFn(ctx, byName(o))
		},
	}
}
