package controllers

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
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/secret-relay/secret-relay/api/v1alpha1"
	"github.com/secret-relay/secret-relay/relay"
	"github.com/secret-relay/secret-relay/remote"
)

// DefaultValidationInterval is how often every store is validated again.
const DefaultValidationInterval = 5 * time.Minute

// validationTimeout bounds the upstream calls of one validation.
const validationTimeout = 10 * time.Second

// Retries of a store whose upstream failed start at a second and double up to the
// validation interval, so that a store that keeps failing costs a request now and
// then, not a loop.
const firstRetry = time.Second

// healthDelay gathers the health changes of one store's upstream (a watch that
// flaps, a refusal seen by several reads) into one validation.
const healthDelay = time.Second

// StoreValidatorConfig configures a StoreValidator.
type StoreValidatorConfig struct {
	Stores  *remote.StoreCache
	Clients *remote.Clients
	Logger  *zap.Logger
	// Recorder writes an event on each status change.
	Recorder record.EventRecorder
	// Interval is how often a store is validated again; retries of a failing one
	// back off up to it. Zero means DefaultValidationInterval.
	Interval time.Duration
}

// StoreValidator sets each store's status: Ready with reason Valid when the upstream
// accepts its credentials and lets them read Secrets, and the capabilities an access
// review upstream grants. Only the leader runs it, once per term: each Run has a
// queue of its own, so that terms can come and go in one process.
//
// The status is written only when the condition's status, reason or message
// changes, and messages hold nothing that changes between attempts, so a failing
// store is written once, then retried with backoff.
type StoreValidator struct {
	cfg StoreValidatorConfig
	// queue is the current term's queue; nil between terms, when changes are
	// dropped: the next term validates every store anyway.
	queue atomic.Pointer[workqueue.TypedRateLimitingInterface[storeKey]]
}

// storeKey is a store's kind and cache key (namespace/name or name).
type storeKey struct {
	kind relay.StoreKind
	key  string
}

// NewStoreValidator returns a validator.
func NewStoreValidator(cfg StoreValidatorConfig) (*StoreValidator, error) {
	if cfg.Stores == nil || cfg.Clients == nil || cfg.Recorder == nil {
		return nil, errors.New("invalid configuration: stores, clients and recorder are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultValidationInterval
	}
	v := &StoreValidator{cfg: cfg}
	kinds := []relay.StoreKind{relay.SecretStoreKind, relay.ClusterSecretStoreKind}
	for i, inf := range cfg.Stores.Informers() {
		kind := kinds[i]
		enqueue := func(obj any) {
			if key, err := cache.MetaNamespaceKeyFunc(obj); err == nil {
				v.add(storeKey{kind: kind, key: key}, 0)
			}
		}
		if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: enqueue,
			UpdateFunc: func(old, obj any) {
				if specChanged(old, obj) {
					enqueue(obj)
				}
			},
		}); err != nil {
			return nil, fmt.Errorf("could not watch stores: %w", err)
		}
	}
	return v, nil
}

// specChanged reports whether an update is one the validator must act on: a new
// generation (the spec changed), or a resync (the same version again, every
// validation interval). Its own status writes are neither, and must not
// re-enqueue the store.
func specChanged(old, obj any) bool {
	o, ok1 := old.(metav1.Object)
	n, ok2 := obj.(metav1.Object)
	if !ok1 || !ok2 {
		return true
	}
	return o.GetGeneration() != n.GetGeneration() || o.GetResourceVersion() == n.GetResourceVersion()
}

func (v *StoreValidator) add(key storeKey, after time.Duration) {
	q := v.queue.Load()
	if q == nil {
		return
	}
	if after > 0 {
		(*q).AddAfter(key, after)
		return
	}
	(*q).Add(key)
}

func keyOf(s *remote.Store) storeKey {
	key := s.Name
	if s.Namespace != "" {
		key = s.Namespace + "/" + s.Name
	}
	return storeKey{kind: s.Kind, key: key}
}

// Revalidate asks for a store to be validated again now, for example after a
// Secret it references changed.
func (v *StoreValidator) Revalidate(s *remote.Store) { v.add(keyOf(s), 0) }

// RevalidateSoon asks for a store to be validated again in a moment: its upstream's
// health changed, and more changes may follow.
func (v *StoreValidator) RevalidateSoon(s *remote.Store) { v.add(keyOf(s), healthDelay) }

// Run validates every store, and each again as it changes, until ctx ends: one
// leadership term.
func (v *StoreValidator) Run(ctx context.Context) error {
	q := workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[storeKey](firstRetry, v.cfg.Interval),
		workqueue.TypedRateLimitingQueueConfig[storeKey]{},
	)
	v.queue.Store(&q)
	defer func() {
		v.queue.CompareAndSwap(&q, nil)
		q.ShutDown()
	}()
	if !cache.WaitForCacheSync(ctx.Done(), v.cfg.Stores.Synced) {
		return nil
	}
	kinds := []relay.StoreKind{relay.SecretStoreKind, relay.ClusterSecretStoreKind}
	for i, inf := range v.cfg.Stores.Informers() {
		for _, key := range inf.GetStore().ListKeys() {
			q.Add(storeKey{kind: kinds[i], key: key})
		}
	}
	go func() {
		<-ctx.Done()
		q.ShutDown()
	}()
	const workers = 2
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for v.processNext(ctx, q) {
			}
		})
	}
	wg.Wait()
	return nil
}

func (v *StoreValidator) processNext(ctx context.Context, q workqueue.TypedRateLimitingInterface[storeKey]) bool {
	key, quit := q.Get()
	if quit {
		return false
	}
	defer q.Done(key)
	retry, err := v.sync(ctx, key)
	switch {
	case err != nil:
		v.cfg.Logger.Warn("could not validate store", zap.String("kind", string(key.kind)), zap.String("store", key.key), zap.Error(err))
		q.AddRateLimited(key)
	case retry:
		q.AddRateLimited(key)
	default:
		q.Forget(key)
	}
	return true
}

// sync validates one store and writes its status when it changed. It reports
// retry when the upstream failed, so that the store is tried again with backoff.
func (v *StoreValidator) sync(ctx context.Context, key storeKey) (retry bool, err error) {
	ns, name, err := cache.SplitMetaNamespaceKey(key.key)
	if err != nil {
		return false, err
	}
	api := v.cfg.Stores.Client().SecretRelayV1alpha1()
	var (
		store   *remote.Store
		current v1alpha1.SecretStoreStatus
		write   func(v1alpha1.SecretStoreStatus) (runtime.Object, error)
	)
	opts := metav1.UpdateOptions{FieldManager: "secret-relay"}
	if key.kind == v1alpha1.ClusterSecretStoreKind {
		obj, err := v.cfg.Stores.ClusterSecretStores.Get(name)
		if err != nil {
			return false, ignoreNotFound(err) // deleted: nothing to validate
		}
		store, current = remote.StoreFromClusterSecretStore(obj), obj.Status
		write = func(st v1alpha1.SecretStoreStatus) (runtime.Object, error) {
			u := obj.DeepCopy()
			u.Status = st
			return api.ClusterSecretStores().UpdateStatus(ctx, u, opts)
		}
	} else {
		obj, err := v.cfg.Stores.SecretStores.SecretStores(ns).Get(name)
		if err != nil {
			return false, ignoreNotFound(err)
		}
		store, current = remote.StoreFromSecretStore(obj), obj.Status
		write = func(st v1alpha1.SecretStoreStatus) (runtime.Object, error) {
			u := obj.DeepCopy()
			u.Status = st
			return api.SecretStores(ns).UpdateStatus(ctx, u, opts)
		}
	}
	status := v.validate(ctx, store)
	cond := status.Conditions[0]
	retry = cond.Reason == v1alpha1.ReasonValidationFailed
	if prev := meta.FindStatusCondition(current.Conditions, v1alpha1.ConditionReady); prev != nil &&
		prev.Status == cond.Status && prev.Reason == cond.Reason && prev.Message == cond.Message && prev.ObservedGeneration == cond.ObservedGeneration &&
		current.Capabilities == status.Capabilities {
		return retry, nil // unchanged: write nothing
	}
	next := *current.DeepCopy()
	meta.SetStatusCondition(&next.Conditions, cond)
	next.Capabilities = status.Capabilities
	updated, err := write(next)
	if err != nil {
		return retry, fmt.Errorf("could not update the status of %s: %w", store, err)
	}
	eventType := corev1.EventTypeNormal
	if cond.Status != metav1.ConditionTrue {
		eventType = corev1.EventTypeWarning
	}
	v.cfg.Recorder.Event(updated, eventType, cond.Reason, cond.Message)
	v.cfg.Logger.Info("store validated", zap.String("store", store.String()), zap.String("reason", cond.Reason), zap.String("message", cond.Message))
	return retry, nil
}

func ignoreNotFound(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// validate checks one store against the upstream and returns the status it earns.
// Its messages are the same from one attempt to the next for the same fault.
func (v *StoreValidator) validate(ctx context.Context, s *remote.Store) v1alpha1.SecretStoreStatus {
	fail := func(reason, format string, args ...any) v1alpha1.SecretStoreStatus {
		return v1alpha1.SecretStoreStatus{Conditions: []metav1.Condition{{
			Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: reason,
			Message: fmt.Sprintf(format, args...), ObservedGeneration: s.Generation,
		}}}
	}
	client, err := v.cfg.Clients.For(ctx, s)
	switch {
	case remote.IsConfigError(err):
		return fail(v1alpha1.ReasonInvalidStoreConfiguration, "%s", remote.ConfigMessage(err))
	case err != nil:
		return fail(v1alpha1.ReasonValidationFailed, "could not read the store's references: %s", remote.DescribeUpstreamError(err))
	}
	ctx, cancel := context.WithTimeout(ctx, validationTimeout)
	defer cancel()
	ns := s.RemoteNamespace()
	url, why := v.cfg.Clients.Refused(s)
	canRead, err := remote.CheckAccess(ctx, client, ns, "get")
	if err != nil {
		switch {
		case apierrors.IsUnauthorized(err):
			if gone, ok := remote.RevokedDownstream(err); ok {
				return fail(v1alpha1.ReasonValidationFailed, "%s", gone)
			}
			return fail(v1alpha1.ReasonValidationFailed, "upstream %s refused the store's credentials (401 Unauthorized)%s", url, why)
		case remote.Unreachable(err):
			return fail(v1alpha1.ReasonValidationFailed, "upstream %s unreachable: %s", url, remote.DescribeUpstreamError(err))
		default:
			return fail(v1alpha1.ReasonValidationFailed, "could not review access upstream: %s", remote.DescribeUpstreamError(err))
		}
	}
	canWrite, err := remote.CheckAccess(ctx, client, ns, "create")
	if err != nil {
		return fail(v1alpha1.ReasonValidationFailed, "could not review access upstream: %s", remote.DescribeUpstreamError(err))
	}
	var caps v1alpha1.Capabilities
	switch {
	case canRead && canWrite:
		caps = v1alpha1.CapabilitiesReadWrite
	case canRead:
		caps = v1alpha1.CapabilitiesReadOnly
	case canWrite:
		caps = v1alpha1.CapabilitiesWriteOnly
	}
	if !canRead {
		st := fail(v1alpha1.ReasonValidationFailed, "the store's credentials may not get Secrets in namespace %q upstream", ns)
		st.Capabilities = caps
		return st
	}
	return v1alpha1.SecretStoreStatus{Capabilities: caps, Conditions: []metav1.Condition{{
		Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonValid,
		Message: "store validated", ObservedGeneration: s.Generation,
	}}}
}
