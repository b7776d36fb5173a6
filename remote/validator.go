package remote

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/secret-relay/secret-relay/api/v1alpha1"
)

// DefaultValidationInterval is how often every store is validated again.
const DefaultValidationInterval = 5 * time.Minute

// validationTimeout bounds the upstream calls of one validation.
const validationTimeout = 10 * time.Second

// StoreValidatorConfig configures a StoreValidator.
type StoreValidatorConfig struct {
	Dynamic dynamic.Interface
	Stores  *StoreCache
	Clients *Clients
	Logger  *zap.Logger
	// Recorder writes an event on each status change.
	Recorder record.EventRecorder
}

// StoreValidator sets each store's status: Ready with reason Valid when the upstream
// accepts its credentials and lets them read Secrets, and the capabilities an access
// review upstream grants. Only the leader runs it.
type StoreValidator struct {
	cfg   StoreValidatorConfig
	queue workqueue.TypedRateLimitingInterface[storeKey]
}

// storeKey is a store's kind and cache key (namespace/name or name).
type storeKey struct {
	kind string
	key  string
}

// NewStoreValidator returns a validator.
func NewStoreValidator(cfg StoreValidatorConfig) (*StoreValidator, error) {
	if cfg.Dynamic == nil || cfg.Stores == nil || cfg.Clients == nil || cfg.Recorder == nil {
		return nil, errors.New("invalid configuration: dynamic, stores, clients and recorder are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	v := &StoreValidator{
		cfg:   cfg,
		queue: workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[storeKey]()),
	}
	kinds := []string{v1alpha1.SecretStoreKind, v1alpha1.ClusterSecretStoreKind}
	for i, inf := range cfg.Stores.Informers() {
		kind := kinds[i]
		enqueue := func(obj any) {
			if key, err := cache.MetaNamespaceKeyFunc(obj); err == nil {
				v.queue.Add(storeKey{kind: kind, key: key})
			}
		}
		// The informers resync every validation interval; UpdateFunc sees each resync.
		if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    enqueue,
			UpdateFunc: func(_, obj any) { enqueue(obj) },
		}); err != nil {
			return nil, fmt.Errorf("could not watch stores: %w", err)
		}
	}
	return v, nil
}

// Revalidate asks for a store to be validated again soon, for example after the
// upstream refused its credentials during an admission.
func (v *StoreValidator) Revalidate(s *Store) {
	key := s.Name
	if s.Namespace != "" {
		key = s.Namespace + "/" + s.Name
	}
	v.queue.Add(storeKey{kind: s.Kind, key: key})
}

// Run validates stores until ctx ends.
func (v *StoreValidator) Run(ctx context.Context) error {
	if !cache.WaitForCacheSync(ctx.Done(), v.cfg.Stores.Synced) {
		return nil
	}
	go func() {
		<-ctx.Done()
		v.queue.ShutDown()
	}()
	for v.processNext(ctx) {
	}
	return nil
}

func (v *StoreValidator) processNext(ctx context.Context) bool {
	key, quit := v.queue.Get()
	if quit {
		return false
	}
	defer v.queue.Done(key)
	if err := v.sync(ctx, key); err != nil {
		v.cfg.Logger.Warn("could not validate store", zap.String("kind", key.kind), zap.String("store", key.key), zap.Error(err))
		v.queue.AddRateLimited(key)
		return true
	}
	v.queue.Forget(key)
	return true
}

func (v *StoreValidator) sync(ctx context.Context, key storeKey) error {
	inf := v.cfg.Stores.Informers()[0]
	gvr := v1alpha1.SecretStoreGVR
	if key.kind == v1alpha1.ClusterSecretStoreKind {
		inf, gvr = v.cfg.Stores.Informers()[1], v1alpha1.ClusterSecretStoreGVR
	}
	obj, ok, err := inf.GetStore().GetByKey(key.key)
	if err != nil || !ok {
		return err // deleted: nothing to validate
	}
	u := obj.(*unstructured.Unstructured)
	store, err := StoreFromUnstructured(u)
	if err != nil {
		return err
	}
	status := v.validate(ctx, store)
	current, err := statusOf(u)
	if err != nil {
		return err
	}
	cond := status.Conditions[0]
	if prev := meta.FindStatusCondition(current.Conditions, v1alpha1.ConditionReady); prev != nil &&
		prev.Status == cond.Status && prev.Reason == cond.Reason && prev.Message == cond.Message && prev.ObservedGeneration == cond.ObservedGeneration &&
		current.Capabilities == status.Capabilities {
		return nil // unchanged: write nothing
	}
	meta.SetStatusCondition(&current.Conditions, cond)
	current.Capabilities = status.Capabilities
	raw, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&current)
	if err != nil {
		return err
	}
	updated := u.DeepCopy()
	if err := unstructured.SetNestedField(updated.Object, raw, "status"); err != nil {
		return err
	}
	res := v.cfg.Dynamic.Resource(gvr)
	if store.Namespace != "" {
		_, err = res.Namespace(store.Namespace).UpdateStatus(ctx, updated, metav1.UpdateOptions{})
	} else {
		_, err = res.UpdateStatus(ctx, updated, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("could not update the status of %s: %w", store, err)
	}
	eventType := corev1.EventTypeNormal
	if cond.Status != metav1.ConditionTrue {
		eventType = corev1.EventTypeWarning
	}
	v.cfg.Recorder.Event(updated, eventType, cond.Reason, cond.Message)
	v.cfg.Logger.Info("store validated", zap.String("store", store.String()), zap.String("reason", cond.Reason), zap.String("message", cond.Message))
	return nil
}

func statusOf(u *unstructured.Unstructured) (v1alpha1.SecretStoreStatus, error) {
	var st v1alpha1.SecretStoreStatus
	raw, ok, err := unstructured.NestedMap(u.Object, "status")
	if err != nil || !ok {
		return st, err
	}
	err = runtime.DefaultUnstructuredConverter.FromUnstructured(raw, &st)
	return st, err
}

// validate checks one store against the upstream and returns the status it earns.
func (v *StoreValidator) validate(ctx context.Context, s *Store) v1alpha1.SecretStoreStatus {
	fail := func(reason, format string, args ...any) v1alpha1.SecretStoreStatus {
		return v1alpha1.SecretStoreStatus{Conditions: []metav1.Condition{{
			Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: reason,
			Message: fmt.Sprintf(format, args...), ObservedGeneration: s.Generation,
		}}}
	}
	client, err := v.cfg.Clients.For(ctx, s)
	var cfgErr *ConfigError
	switch {
	case errors.As(err, &cfgErr):
		return fail(v1alpha1.ReasonInvalidStoreConfiguration, "%s", cfgErr.Message)
	case err != nil:
		return fail(v1alpha1.ReasonValidationFailed, "could not read the store's references: %v", err)
	}
	ctx, cancel := context.WithTimeout(ctx, validationTimeout)
	defer cancel()
	ns := s.RemoteNamespace()
	allowed := func(verb string) (bool, error) {
		review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
			ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: verb, Resource: "secrets"},
		}}
		res, err := client.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, review, metav1.CreateOptions{})
		if err != nil {
			return false, err
		}
		return res.Status.Allowed, nil
	}
	canRead, err := allowed("get")
	if err != nil {
		switch {
		case apierrors.IsUnauthorized(err):
			return fail(v1alpha1.ReasonValidationFailed, "upstream %s refused the store's credentials (401 Unauthorized)", s.Spec.Provider.Kubernetes.Server.URL)
		case Unreachable(err):
			return fail(v1alpha1.ReasonValidationFailed, "upstream %s unreachable: %v", s.Spec.Provider.Kubernetes.Server.URL, err)
		default:
			return fail(v1alpha1.ReasonValidationFailed, "could not review access upstream: %v", err)
		}
	}
	canWrite, err := allowed("create")
	if err != nil {
		return fail(v1alpha1.ReasonValidationFailed, "could not review access upstream: %v", err)
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
