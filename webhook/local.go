package webhook

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// ClientsetLocalSecrets reads and writes downstream Secrets through the API.
type ClientsetLocalSecrets struct {
	Client kubernetes.Interface
}

var _ LocalSecrets = ClientsetLocalSecrets{}

// Get returns the Secret, or nil when it does not exist.
func (c ClientsetLocalSecrets) Get(ctx context.Context, namespace, name string) (*corev1.Secret, error) {
	s, err := c.Client.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	return s, err
}

// Latest is Get: a clientset always reads from the API.
func (c ClientsetLocalSecrets) Latest(ctx context.Context, namespace, name string) (*corev1.Secret, error) {
	return c.Get(ctx, namespace, name)
}

// Apply creates desired, or updates existing to match it. The update carries
// existing's resourceVersion, so a concurrent write makes it fail with a conflict
// instead of being overwritten.
func (c ClientsetLocalSecrets) Apply(ctx context.Context, existing, desired *corev1.Secret) error {
	secrets := c.Client.CoreV1().Secrets(desired.Namespace)
	if existing == nil {
		_, err := secrets.Create(ctx, desired, metav1.CreateOptions{FieldManager: ManagedByValue})
		return err
	}
	if existing.Type != desired.Type {
		return c.replace(ctx, existing, desired)
	}
	update := existing.DeepCopy()
	update.Type = desired.Type
	update.Data = desired.Data
	update.StringData = nil
	if update.Labels == nil {
		update.Labels = map[string]string{}
	}
	if update.Annotations == nil {
		update.Annotations = map[string]string{}
	}
	for k, v := range desired.Labels {
		update.Labels[k] = v
	}
	for k, v := range desired.Annotations {
		update.Annotations[k] = v
	}
	_, err := secrets.Update(ctx, update, metav1.UpdateOptions{FieldManager: ManagedByValue})
	return err
}

// replace deletes and recreates a Secret whose type must change, since a Secret's
// type is immutable. The delete is conditional on the version we checked, so a
// Secret someone else changed meanwhile is never removed.
func (c ClientsetLocalSecrets) replace(ctx context.Context, existing, desired *corev1.Secret) error {
	secrets := c.Client.CoreV1().Secrets(desired.Namespace)
	pre := metav1.Preconditions{UID: &existing.UID, ResourceVersion: &existing.ResourceVersion}
	if err := secrets.Delete(ctx, existing.Name, metav1.DeleteOptions{Preconditions: &pre}); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	_, err := secrets.Create(ctx, desired, metav1.CreateOptions{FieldManager: ManagedByValue})
	return err
}

// ManagedSecrets is a watch cache of the Secrets secret-relay manages downstream
// (those with its managed-by label), so that a warm admission and the sync
// controller read local copies without an API call. Writes go to the API.
type ManagedSecrets struct {
	ClientsetLocalSecrets
	informer cache.SharedIndexInformer
}

var _ LocalSecrets = (*ManagedSecrets)(nil)

// NewManagedSecrets returns the cache; Run starts it.
func NewManagedSecrets(kube kubernetes.Interface) *ManagedSecrets {
	lw := cache.NewFilteredListWatchFromClient(kube.CoreV1().RESTClient(), "secrets", metav1.NamespaceAll, func(o *metav1.ListOptions) {
		o.LabelSelector = LabelManagedBy + "=" + ManagedByValue
	})
	inf := cache.NewSharedIndexInformer(lw, &corev1.Secret{}, 0, cache.Indexers{})
	_ = inf.SetTransform(func(obj any) (any, error) {
		if s, ok := obj.(*corev1.Secret); ok {
			s.ManagedFields = nil
		}
		return obj, nil
	})
	return &ManagedSecrets{ClientsetLocalSecrets: ClientsetLocalSecrets{Client: kube}, informer: inf}
}

// WritingWith returns the same cache writing through kube, a client with its own rate
// limits: admission writes then never queue behind background ones.
func (m *ManagedSecrets) WritingWith(kube kubernetes.Interface) *ManagedSecrets {
	return &ManagedSecrets{ClientsetLocalSecrets: ClientsetLocalSecrets{Client: kube}, informer: m.informer}
}

// Run fills and follows the cache until ctx ends.
func (m *ManagedSecrets) Run(ctx context.Context) { m.informer.RunWithContext(ctx) }

// Synced reports whether the first list is in.
func (m *ManagedSecrets) Synced() bool { return m.informer.HasSynced() }

// Informer is the underlying informer, for the sync controller's event handlers.
func (m *ManagedSecrets) Informer() cache.SharedIndexInformer { return m.informer }

// Get returns the managed Secret from the cache, shared: it must not be modified. A
// name the cache does not hold is reported as absent even if an unmanaged Secret has
// it: creating it then fails with AlreadyExists, and the mutator reads it with Latest
// and refuses to touch it.
func (m *ManagedSecrets) Get(ctx context.Context, namespace, name string) (*corev1.Secret, error) {
	if !m.informer.HasSynced() {
		return m.ClientsetLocalSecrets.Get(ctx, namespace, name)
	}
	obj, ok, err := m.informer.GetStore().GetByKey(namespace + "/" + name)
	if err != nil || !ok {
		return nil, err
	}
	return obj.(*corev1.Secret), nil
}
