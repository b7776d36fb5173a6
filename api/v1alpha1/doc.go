// Package v1alpha1 holds the secret-relay.io/v1alpha1 API: SecretStore and
// ClusterSecretStore, which tell secret-relay how to reach an upstream cluster.
//
// The provider fields follow External Secrets Operator's kubernetes provider, so
// that a store moves over by changing its apiVersion. There is no generated
// clientset: stores are read with the dynamic client and converted with
// SecretStoreFromUnstructured and ClusterSecretStoreFromUnstructured.
//
// +groupName=secret-relay.io
package v1alpha1
