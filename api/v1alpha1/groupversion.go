package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

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

// SchemeGroupVersion is secret-relay.io/v1alpha1, under the name the generated
// clients expect.
var SchemeGroupVersion = schema.GroupVersion{Group: GroupName, Version: Version}

// GroupVersion is secret-relay.io/v1alpha1.
var GroupVersion = SchemeGroupVersion

// SecretStoreGVR is the resource SecretStores are served as.
var SecretStoreGVR = GroupVersion.WithResource("secretstores")

// ClusterSecretStoreGVR is the resource ClusterSecretStores are served as.
var ClusterSecretStoreGVR = GroupVersion.WithResource("clustersecretstores")

// Resource qualifies a resource of this group, for the generated listers' errors.
func Resource(resource string) schema.GroupResource {
	return SchemeGroupVersion.WithResource(resource).GroupResource()
}

var (
	// SchemeBuilder registers the API's types with a scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)
	// AddToScheme adds the API's types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(scheme *runtime.Scheme) error {
	scheme.AddKnownTypes(SchemeGroupVersion,
		&SecretStore{}, &SecretStoreList{},
		&ClusterSecretStore{}, &ClusterSecretStoreList{},
	)
	metav1.AddToGroupVersion(scheme, SchemeGroupVersion)
	return nil
}
