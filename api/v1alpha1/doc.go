// Package v1alpha1 holds the secret-relay.io/v1alpha1 API: SecretStore and
// ClusterSecretStore, which tell secret-relay how to reach an upstream cluster.
//
// The provider fields follow External Secrets Operator's kubernetes provider, so
// that a store moves over by changing its apiVersion. The kubebuilder markers on
// the types are the source of truth: `make generate` writes the DeepCopy methods
// and the typed client under api/client, and `make manifests` the CRDs.
//
// +kubebuilder:object:generate=true
// +groupName=secret-relay.io
// +groupGoName=SecretRelay
package v1alpha1
