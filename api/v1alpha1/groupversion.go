package v1alpha1

import "k8s.io/apimachinery/pkg/runtime/schema"

// GroupName is the API group of secret-relay's resources.
const GroupName = "secret-relay.io"

// Version is the only version of the API so far.
const Version = "v1alpha1"

// The kinds of the API.
const (
	// SecretStoreKind is a namespaced store; its references are read from its own
	// namespace and only pods in that namespace may use it.
	SecretStoreKind = "SecretStore"
	// ClusterSecretStoreKind is a cluster-scoped store; its references name their
	// namespace and spec.conditions say which namespaces may use it.
	ClusterSecretStoreKind = "ClusterSecretStore"
)

// GroupVersion is secret-relay.io/v1alpha1.
var GroupVersion = schema.GroupVersion{Group: GroupName, Version: Version}

// SecretStoreGVR is the resource the dynamic client reads SecretStores from.
var SecretStoreGVR = GroupVersion.WithResource("secretstores")

// ClusterSecretStoreGVR is the resource the dynamic client reads ClusterSecretStores
// from.
var ClusterSecretStoreGVR = GroupVersion.WithResource("clustersecretstores")

// SecretStoreGVK is the group, version and kind of a SecretStore.
var SecretStoreGVK = GroupVersion.WithKind(SecretStoreKind)

// ClusterSecretStoreGVK is the group, version and kind of a ClusterSecretStore.
var ClusterSecretStoreGVK = GroupVersion.WithKind(ClusterSecretStoreKind)
