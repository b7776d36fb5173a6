package remote

import (
	"context"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// RefCache reads the Secrets and ConfigMaps that stores reference from watch caches:
// one informer per referenced object, selected by name, started the first time the
// object is read. Warm admissions resolve a store's token and CA with no API call,
// and a rotated token reaches the upstream client as soon as the watch delivers it.
// An informer nobody has read for refIdleTTL is stopped, so that the references of
// deleted stores do not hold watches for ever; a later read starts it again.
type RefCache struct {
	kube kubernetes.Interface
	ctx  context.Context
	live RefReader
	now  func() time.Time

	mu        sync.Mutex
	informers map[refKey]*refInformer
	onChange  func(Reference)
}

type refKey struct{ kind, namespace, name string }

type refInformer struct {
	cache.SharedIndexInformer
	stop     context.CancelFunc
	lastRead time.Time // guarded by RefCache.mu
}

// refIdleTTL is how long a reference informer runs unread. A store's references are
// read whenever its client is asked for: at each admission and sync that uses the
// store, and at each validation (--store-validation-interval, 5 minutes by default).
// Stopping one in use costs a live read while it starts again.
const refIdleTTL = 15 * time.Minute

var _ RefReader = (*RefCache)(nil)

// NewRefCache returns a RefCache whose informers run until ctx ends or they go idle.
func NewRefCache(ctx context.Context, kube kubernetes.Interface) *RefCache {
	r := &RefCache{kube: kube, ctx: ctx, live: ClientsetRefReader(kube), now: time.Now, informers: map[refKey]*refInformer{}}
	go wait.UntilWithContext(ctx, func(context.Context) { r.stopIdle() }, refIdleTTL/5)
	return r
}

// OnChange sets who hears that a referenced object changed, appeared or went away
// after its informer's first list: the stores that read it must be resolved again.
// It applies to informers started from now on; set it before the first read.
func (r *RefCache) OnChange(fn func(Reference)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.onChange = fn
}

// stopIdle stops the informers unread for refIdleTTL.
func (r *RefCache) stopIdle() {
	r.mu.Lock()
	defer r.mu.Unlock()
	idleSince := r.now().Add(-refIdleTTL)
	for k, inf := range r.informers {
		if inf.lastRead.Before(idleSince) {
			inf.stop()
			delete(r.informers, k)
		}
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
		inf.lastRead = r.now()
		return inf
	}
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
	_ = inf.SetTransform(stripManagedFields)
	if fn := r.onChange; fn != nil {
		ref := Reference{Kind: k.kind, Namespace: k.namespace, Name: k.name}
		changed := func(any) { fn(ref) }
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
			DeleteFunc: changed,
		})
	}
	inf.lastRead = r.now()
	go inf.RunWithContext(ctx)
	r.informers[k] = inf
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

// stripManagedFields drops managed fields before an object is cached: they are large
// and secret-relay never reads them.
func stripManagedFields(obj any) (any, error) {
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
	}
	return obj, nil
}
