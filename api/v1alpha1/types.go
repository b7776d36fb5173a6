package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DefaultRemoteNamespace is the upstream namespace a store reads from when
// spec.provider.kubernetes.remoteNamespace is empty, as in External Secrets Operator.
const DefaultRemoteNamespace = "default"

// ConditionReady is the condition type that says whether a store works.
const ConditionReady = "Ready"

// Reasons of the Ready condition. They show in the STATUS column of
// `kubectl get secretstore`.
const (
	// ReasonValid means the store was resolved and upstream accepted its credentials.
	ReasonValid = "Valid"
	// ReasonInvalidStoreConfiguration means the store cannot work as written: a bad
	// spec, or a Secret, ConfigMap or key it references is missing.
	ReasonInvalidStoreConfiguration = "InvalidStoreConfiguration"
	// ReasonValidationFailed means the store is well formed but upstream refused it
	// or could not be reached.
	ReasonValidationFailed = "ValidationFailed"
)

// Capabilities says what a store may do upstream, as found by an access review.
type Capabilities string

// The capabilities a store can have, as External Secrets Operator names them.
const (
	// CapabilitiesReadOnly means the store can read upstream Secrets but not write them.
	CapabilitiesReadOnly Capabilities = "ReadOnly"
	// CapabilitiesWriteOnly means the store can write upstream Secrets but not read them.
	CapabilitiesWriteOnly Capabilities = "WriteOnly"
	// CapabilitiesReadWrite means the store can read and write upstream Secrets.
	CapabilitiesReadWrite Capabilities = "ReadWrite"
)

// CAProviderType says which kind of object holds a CA bundle.
type CAProviderType string

// The kinds of object a CAProvider can point at.
const (
	// CAProviderTypeConfigMap reads the CA from a ConfigMap's data or binaryData.
	CAProviderTypeConfigMap CAProviderType = "ConfigMap"
	// CAProviderTypeSecret reads the CA from a Secret's data.
	CAProviderTypeSecret CAProviderType = "Secret"
)

// SecretStore is a namespaced store. Its Secret and ConfigMap references are read
// from its own namespace, and only pods in that namespace may use it.
type SecretStore struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec says how to reach the upstream cluster.
	Spec SecretStoreSpec `json:"spec"`
	// Status is written by secret-relay's controller.
	Status SecretStoreStatus `json:"status,omitempty"`
}

// ClusterSecretStore is a cluster-scoped store. Each of its references names its
// namespace, and spec.conditions limit which namespaces may use it.
type ClusterSecretStore struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec says how to reach the upstream cluster and who may use the store.
	Spec SecretStoreSpec `json:"spec"`
	// Status is written by secret-relay's controller.
	Status SecretStoreStatus `json:"status,omitempty"`
}

// SecretStoreSpec is the spec of both store kinds.
type SecretStoreSpec struct {
	// Provider says where the Secrets come from.
	Provider Provider `json:"provider"`
	// Conditions limit the namespaces that may use a ClusterSecretStore; a namespace
	// may use it when it matches any entry, and every namespace may when there are
	// none. A SecretStore has no conditions: its schema has no such field.
	Conditions []ClusterSecretStoreCondition `json:"conditions,omitempty"`
}

// Provider is the one backend of a store. Only kubernetes exists.
type Provider struct {
	// Kubernetes reads Secrets from another Kubernetes cluster.
	Kubernetes *KubernetesProvider `json:"kubernetes,omitempty"`
}

// KubernetesProvider reaches an upstream Kubernetes API server, as External
// Secrets Operator's kubernetes provider does.
type KubernetesProvider struct {
	// Server is the upstream API server and how to verify it.
	Server KubernetesServer `json:"server"`
	// RemoteNamespace is the upstream namespace Secrets are read from; empty means
	// DefaultRemoteNamespace.
	RemoteNamespace string `json:"remoteNamespace,omitempty"`
	// Auth is how secret-relay authenticates upstream: exactly one method.
	Auth KubernetesAuth `json:"auth"`
}

// KubernetesServer is the upstream API server's address and trust anchor.
type KubernetesServer struct {
	// URL is the API server address; it must be https.
	URL string `json:"url"`
	// CABundle is a PEM bundle that verifies the server; base64 in YAML.
	CABundle []byte `json:"caBundle,omitempty"`
	// CAProvider reads the PEM bundle from a ConfigMap or Secret instead.
	CAProvider *CAProvider `json:"caProvider,omitempty"`
}

// CAProvider points at a ConfigMap or Secret key that holds a PEM CA bundle.
type CAProvider struct {
	// Type is ConfigMap or Secret.
	Type CAProviderType `json:"type"`
	// Name is the ConfigMap's or Secret's name.
	Name string `json:"name"`
	// Key is the key of its data that holds the bundle.
	Key string `json:"key"`
	// Namespace is required in a ClusterSecretStore and forbidden in a SecretStore,
	// which reads from its own namespace.
	Namespace string `json:"namespace,omitempty"`
}

// KubernetesAuth is how secret-relay authenticates upstream. Exactly one of its
// fields is set.
type KubernetesAuth struct {
	// Token authenticates with a bearer token, such as a ServiceAccount token.
	Token *TokenAuth `json:"token,omitempty"`
	// Cert authenticates with a client certificate.
	Cert *CertAuth `json:"cert,omitempty"`
}

// TokenAuth reads a bearer token from a Secret.
type TokenAuth struct {
	// BearerToken is the Secret key that holds the token.
	BearerToken SecretKeySelector `json:"bearerToken"`
}

// CertAuth reads a PEM client certificate and key from Secrets.
type CertAuth struct {
	// ClientCert is the Secret key that holds the PEM certificate.
	ClientCert SecretKeySelector `json:"clientCert"`
	// ClientKey is the Secret key that holds the PEM private key.
	ClientKey SecretKeySelector `json:"clientKey"`
}

// SecretKeySelector points at one key of a downstream Secret.
type SecretKeySelector struct {
	// Name is the Secret's name.
	Name string `json:"name"`
	// Key is the key of its data.
	Key string `json:"key"`
	// Namespace is required in a ClusterSecretStore and forbidden in a SecretStore,
	// which reads from its own namespace.
	Namespace string `json:"namespace,omitempty"`
}

// ClusterSecretStoreCondition is one entry of a ClusterSecretStore's
// spec.conditions. A namespace matches it when it matches any of its fields.
type ClusterSecretStoreCondition struct {
	// Namespaces are namespace names, matched exactly.
	Namespaces []string `json:"namespaces,omitempty"`
	// NamespaceSelector matches the labels of the Namespace object.
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	// NamespaceRegexes are regular expressions that must match the whole namespace
	// name; they are anchored, unlike External Secrets Operator's.
	NamespaceRegexes []string `json:"namespaceRegexes,omitempty"`
}

// SecretStoreStatus is the status of both store kinds.
type SecretStoreStatus struct {
	// Capabilities says what the store's credentials may do upstream.
	Capabilities Capabilities `json:"capabilities,omitempty"`
	// Conditions hold the Ready condition.
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}
