package v1alpha1

import (
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// SecretStoreFromUnstructured converts a SecretStore read with the dynamic client.
// An object without apiVersion and kind is accepted, since some list paths drop
// them; an object of another kind is an error.
func SecretStoreFromUnstructured(u *unstructured.Unstructured) (*SecretStore, error) {
	s := &SecretStore{}
	if err := fromUnstructured(u, SecretStoreGVK, s); err != nil {
		return nil, err
	}
	return s, nil
}

// ClusterSecretStoreFromUnstructured converts a ClusterSecretStore read with the
// dynamic client, with the same rules as SecretStoreFromUnstructured.
func ClusterSecretStoreFromUnstructured(u *unstructured.Unstructured) (*ClusterSecretStore, error) {
	s := &ClusterSecretStore{}
	if err := fromUnstructured(u, ClusterSecretStoreGVK, s); err != nil {
		return nil, err
	}
	return s, nil
}

// ToUnstructured converts any of this package's objects for the dynamic client,
// setting apiVersion and kind when they are empty.
func ToUnstructured(obj any) (*unstructured.Unstructured, error) {
	var gvk schema.GroupVersionKind
	switch obj.(type) {
	case *SecretStore:
		gvk = SecretStoreGVK
	case *ClusterSecretStore:
		gvk = ClusterSecretStoreGVK
	default:
		return nil, fmt.Errorf("cannot convert %T: not a %s object", obj, GroupVersion)
	}
	content, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, fmt.Errorf("could not convert %s: %w", gvk.Kind, err)
	}
	u := &unstructured.Unstructured{Object: content}
	if u.GetAPIVersion() == "" {
		u.SetAPIVersion(gvk.GroupVersion().String())
	}
	if u.GetKind() == "" {
		u.SetKind(gvk.Kind)
	}
	return u, nil
}

func fromUnstructured(u *unstructured.Unstructured, want schema.GroupVersionKind, into any) error {
	if u == nil {
		return fmt.Errorf("cannot convert a nil object to %s", want.Kind)
	}
	if got := u.GroupVersionKind(); !got.Empty() && got != want {
		return fmt.Errorf("cannot convert %s %s to %s", got, objectName(u), want.Kind)
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.UnstructuredContent(), into); err != nil {
		return fmt.Errorf("could not convert %s %s: %w", want.Kind, objectName(u), err)
	}
	return nil
}

func objectName(u *unstructured.Unstructured) string {
	if ns := u.GetNamespace(); ns != "" {
		return ns + "/" + u.GetName()
	}
	return u.GetName()
}
