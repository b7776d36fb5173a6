package webhook

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
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
