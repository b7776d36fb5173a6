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
// +kubebuilder:validation:Enum=ReadOnly;WriteOnly;ReadWrite
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
// +kubebuilder:validation:Enum=ConfigMap;Secret
type CAProviderType string

// The kinds of object a CAProvider can point at.
const (
	// CAProviderTypeConfigMap reads the CA from a ConfigMap's data or binaryData.
	CAProviderTypeConfigMap CAProviderType = "ConfigMap"
	// CAProviderTypeSecret reads the CA from a Secret's data.
	CAProviderTypeSecret CAProviderType = "Secret"
)

// SecretStore tells secret-relay how to reach an upstream Kubernetes cluster. Its
// Secret and ConfigMap references are read from its own namespace, and only pods in
// that namespace may use it.
//
// The printer columns are External Secrets Operator's, so that `kubectl get
// secretstore -A` prints NAMESPACE NAME AGE STATUS CAPABILITIES READY.
//
// +genclient
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,shortName=ss,categories=secret-relay
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Capabilities",type=string,JSONPath=`.status.capabilities`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
type SecretStore struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec says how to reach the upstream cluster.
	// +required
	Spec SecretStoreSpec `json:"spec"`
	// Status is written by secret-relay's controller.
	// +optional
	Status SecretStoreStatus `json:"status,omitempty"`
}

// SecretStoreList is a list of SecretStores.
// +kubebuilder:object:root=true
type SecretStoreList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []SecretStore `json:"items"`
}

// ClusterSecretStore tells secret-relay how to reach an upstream Kubernetes cluster,
// for pods in any namespace that its conditions allow. Each of its Secret and
// ConfigMap references gives its namespace.
//
// +genclient
// +genclient:nonNamespaced
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=css,categories=secret-relay
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Capabilities",type=string,JSONPath=`.status.capabilities`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
type ClusterSecretStore struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec says how to reach the upstream cluster and who may use the store.
	// +required
	Spec ClusterSecretStoreSpec `json:"spec"`
	// Status is written by secret-relay's controller.
	// +optional
	Status SecretStoreStatus `json:"status,omitempty"`
}

// ClusterSecretStoreList is a list of ClusterSecretStores.
// +kubebuilder:object:root=true
type ClusterSecretStoreList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ClusterSecretStore `json:"items"`
}

// SecretStoreSpec is a SecretStore's spec. A SecretStore reads its references from
// its own namespace, so none of them may name one: the rules below refuse it, as
// the relay would, instead of reading from elsewhere.
//
// +kubebuilder:validation:XValidation:rule="!has(self.provider.kubernetes.auth) || !has(self.provider.kubernetes.auth.token) || !has(self.provider.kubernetes.auth.token.bearerToken.__namespace__)",message="a SecretStore reads references from its own namespace",fieldPath=".provider.kubernetes.auth.token.bearerToken.namespace",reason=FieldValueForbidden
// +kubebuilder:validation:XValidation:rule="!has(self.provider.kubernetes.auth) || !has(self.provider.kubernetes.auth.cert) || !has(self.provider.kubernetes.auth.cert.clientCert.__namespace__)",message="a SecretStore reads references from its own namespace",fieldPath=".provider.kubernetes.auth.cert.clientCert.namespace",reason=FieldValueForbidden
// +kubebuilder:validation:XValidation:rule="!has(self.provider.kubernetes.auth) || !has(self.provider.kubernetes.auth.cert) || !has(self.provider.kubernetes.auth.cert.clientKey.__namespace__)",message="a SecretStore reads references from its own namespace",fieldPath=".provider.kubernetes.auth.cert.clientKey.namespace",reason=FieldValueForbidden
// +kubebuilder:validation:XValidation:rule="!has(self.provider.kubernetes.server) || !has(self.provider.kubernetes.server.caProvider) || !has(self.provider.kubernetes.server.caProvider.__namespace__)",message="a SecretStore reads references from its own namespace",fieldPath=".provider.kubernetes.server.caProvider.namespace",reason=FieldValueForbidden
// +kubebuilder:validation:XValidation:rule="!has(self.provider.kubernetes.auth) || !has(self.provider.kubernetes.auth.serviceAccount) || !has(self.provider.kubernetes.auth.serviceAccount.__namespace__)",message="a SecretStore uses a ServiceAccount of its own namespace",fieldPath=".provider.kubernetes.auth.serviceAccount.namespace",reason=FieldValueForbidden
// +kubebuilder:validation:XValidation:rule="!has(self.provider.kubernetes.authRef) || !has(self.provider.kubernetes.authRef.__namespace__)",message="a SecretStore reads references from its own namespace",fieldPath=".provider.kubernetes.authRef.namespace",reason=FieldValueForbidden
type SecretStoreSpec struct {
	// Provider says where the Secrets come from.
	// +required
	Provider Provider `json:"provider"`
}

// ClusterSecretStoreSpec is a ClusterSecretStore's spec. Every reference must name
// its namespace, and conditions limit who may use the store.
//
// +kubebuilder:validation:XValidation:rule="!has(self.provider.kubernetes.auth) || !has(self.provider.kubernetes.auth.token) || has(self.provider.kubernetes.auth.token.bearerToken.__namespace__)",message="a ClusterSecretStore's references name their namespace",fieldPath=".provider.kubernetes.auth.token.bearerToken.namespace",reason=FieldValueRequired
// +kubebuilder:validation:XValidation:rule="!has(self.provider.kubernetes.auth) || !has(self.provider.kubernetes.auth.cert) || has(self.provider.kubernetes.auth.cert.clientCert.__namespace__)",message="a ClusterSecretStore's references name their namespace",fieldPath=".provider.kubernetes.auth.cert.clientCert.namespace",reason=FieldValueRequired
// +kubebuilder:validation:XValidation:rule="!has(self.provider.kubernetes.auth) || !has(self.provider.kubernetes.auth.cert) || has(self.provider.kubernetes.auth.cert.clientKey.__namespace__)",message="a ClusterSecretStore's references name their namespace",fieldPath=".provider.kubernetes.auth.cert.clientKey.namespace",reason=FieldValueRequired
// +kubebuilder:validation:XValidation:rule="!has(self.provider.kubernetes.server) || !has(self.provider.kubernetes.server.caProvider) || has(self.provider.kubernetes.server.caProvider.__namespace__)",message="a ClusterSecretStore's references name their namespace",fieldPath=".provider.kubernetes.server.caProvider.namespace",reason=FieldValueRequired
// +kubebuilder:validation:XValidation:rule="!has(self.provider.kubernetes.auth) || !has(self.provider.kubernetes.auth.serviceAccount) || has(self.provider.kubernetes.auth.serviceAccount.__namespace__)",message="a ClusterSecretStore's references name their namespace",fieldPath=".provider.kubernetes.auth.serviceAccount.namespace",reason=FieldValueRequired
// +kubebuilder:validation:XValidation:rule="!has(self.provider.kubernetes.authRef) || has(self.provider.kubernetes.authRef.__namespace__)",message="a ClusterSecretStore's references name their namespace",fieldPath=".provider.kubernetes.authRef.namespace",reason=FieldValueRequired
type ClusterSecretStoreSpec struct {
	// Provider says where the Secrets come from.
	// +required
	Provider Provider `json:"provider"`
	// Conditions limit the namespaces that may use the store. A namespace may use
	// it when it matches any field of any entry; with no conditions, every
	// namespace may.
	// +optional
	Conditions []ClusterSecretStoreCondition `json:"conditions,omitempty"`
}

// Provider is the one backend of a store. Only kubernetes exists.
type Provider struct {
	// Kubernetes reads Secrets from another Kubernetes cluster, as External Secrets
	// Operator's kubernetes provider does.
	// +required
	Kubernetes *KubernetesProvider `json:"kubernetes,omitempty"`
}

// KubernetesProvider reaches an upstream Kubernetes API server, as External
// Secrets Operator's kubernetes provider does.
// +kubebuilder:validation:XValidation:rule="has(self.auth) != has(self.authRef)",message="kubernetes needs exactly one of auth or authRef"
// +kubebuilder:validation:XValidation:rule="has(self.server) || has(self.authRef)",message="server is required unless authRef's kubeconfig gives it",fieldPath=".server",reason=FieldValueRequired
// +kubebuilder:validation:XValidation:rule="!has(self.server) || (has(self.authRef) ? !has(self.server.caBundle) && !has(self.server.caProvider) : has(self.server.caBundle) != has(self.server.caProvider))",message="server needs exactly one of caBundle or caProvider, or neither with authRef, whose kubeconfig gives the CA",fieldPath=".server"
type KubernetesProvider struct {
	// Server is the upstream API server and how to verify it. With authRef it may
	// be omitted, or give only the URL, which must then be the kubeconfig's.
	// +optional
	Server *KubernetesServer `json:"server,omitempty"`
	// RemoteNamespace is the upstream namespace Secrets are read from.
	// +kubebuilder:default=default
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +optional
	RemoteNamespace string `json:"remoteNamespace,omitempty"`
	// Auth is how secret-relay authenticates upstream; exactly one of token, cert or
	// serviceAccount. Exactly one of auth or authRef is set.
	// +optional
	Auth *KubernetesAuth `json:"auth,omitempty"`
	// AuthRef is a kubeconfig held in a Secret: the server, CA and credentials of
	// its current context are used. Only data inline in the kubeconfig counts: a
	// token or a client certificate and key, no file, exec plugin or auth provider.
	// +optional
	AuthRef *SecretKeySelector `json:"authRef,omitempty"`
}

// CAProviderOrNil is the server's caProvider; nil when there is none, or no server.
func (s *KubernetesServer) CAProviderOrNil() *CAProvider {
	if s == nil {
		return nil
	}
	return s.CAProvider
}

// KubernetesServer is the upstream API server's address and trust anchor.
type KubernetesServer struct {
	// URL is the API server address; it must be https.
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:Pattern=`^https://[^\s/?#]+(/\S*)?$`
	// +required
	URL string `json:"url"`
	// CABundle is a base64-encoded PEM bundle that verifies the server.
	// +kubebuilder:validation:MinLength=1
	// +optional
	CABundle []byte `json:"caBundle,omitempty"`
	// CAProvider reads the PEM bundle from a ConfigMap or Secret.
	// +optional
	CAProvider *CAProvider `json:"caProvider,omitempty"`
}

// CAProvider points at a ConfigMap or Secret key that holds a PEM CA bundle.
type CAProvider struct {
	// Type is ConfigMap or Secret.
	// +required
	Type CAProviderType `json:"type"`
	// Name is the ConfigMap's or Secret's name.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	// +required
	Name string `json:"name"`
	// Key is the key of its data that holds the bundle.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	// +required
	Key string `json:"key"`
	// Namespace is where the object lives: required in a ClusterSecretStore,
	// forbidden in a SecretStore, which reads from its own namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +optional
	Namespace string `json:"namespace,omitempty"`
}

// KubernetesAuth is how secret-relay authenticates upstream. Exactly one of its
// fields is set.
// +kubebuilder:validation:XValidation:rule="[has(self.token), has(self.cert), has(self.serviceAccount)].filter(x, x).size() == 1",message="auth needs exactly one of token, cert or serviceAccount"
type KubernetesAuth struct {
	// Token authenticates with a bearer token, such as a ServiceAccount token.
	// +optional
	Token *TokenAuth `json:"token,omitempty"`
	// Cert authenticates with a PEM client certificate and key.
	// +optional
	Cert *CertAuth `json:"cert,omitempty"`
	// ServiceAccount authenticates with a short-lived token that secret-relay
	// requests for a downstream ServiceAccount (the TokenRequest API), for an
	// upstream that trusts the downstream cluster's service-account issuer. No
	// long-lived credential exists anywhere.
	// +optional
	ServiceAccount *ServiceAccountAuth `json:"serviceAccount,omitempty"`
}

// ServiceAccountAuth names the downstream ServiceAccount whose tokens secret-relay
// sends upstream, as External Secrets Operator's serviceAccount auth does.
type ServiceAccountAuth struct {
	// Name is the ServiceAccount's name.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	// +required
	Name string `json:"name"`
	// Namespace is the ServiceAccount's namespace: required in a
	// ClusterSecretStore, forbidden in a SecretStore, which uses its own.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +optional
	Namespace string `json:"namespace,omitempty"`
	// Audiences are the audiences of the token, those the upstream's JWT
	// authenticator accepts. secret-relay refuses a store without them: the token
	// would then be one this cluster's own API server accepts.
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=253
	// +optional
	Audiences []string `json:"audiences,omitempty"`
}

// TokenAuth reads a bearer token from a Secret.
type TokenAuth struct {
	// BearerToken is the key of a Secret that holds the token.
	// +required
	BearerToken SecretKeySelector `json:"bearerToken"`
}

// CertAuth reads a PEM client certificate and key from Secrets.
type CertAuth struct {
	// ClientCert is the key of a Secret that holds the certificate.
	// +required
	ClientCert SecretKeySelector `json:"clientCert"`
	// ClientKey is the key of a Secret that holds the private key.
	// +required
	ClientKey SecretKeySelector `json:"clientKey"`
}

// SecretKeySelector points at one key of a downstream Secret.
type SecretKeySelector struct {
	// Name is the Secret's name.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	// +required
	Name string `json:"name"`
	// Key is the key of its data.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	// +required
	Key string `json:"key"`
	// Namespace is where the Secret lives: required in a ClusterSecretStore,
	// forbidden in a SecretStore, which reads from its own namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +optional
	Namespace string `json:"namespace,omitempty"`
}

// ClusterSecretStoreCondition is one entry of a ClusterSecretStore's
// spec.conditions. A namespace matches it when it matches any of its fields.
type ClusterSecretStoreCondition struct {
	// Namespaces are namespace names, matched exactly.
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +optional
	Namespaces []string `json:"namespaces,omitempty"`
	// NamespaceSelector matches the labels of the Namespace object.
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	// NamespaceRegexes are regular expressions that must match the whole namespace
	// name; they are anchored, unlike External Secrets Operator's.
	// +kubebuilder:validation:items:MinLength=1
	// +optional
	NamespaceRegexes []string `json:"namespaceRegexes,omitempty"`
}

// SecretStoreStatus is the status of both store kinds.
type SecretStoreStatus struct {
	// Capabilities says what the store's credentials may do upstream.
	// +optional
	Capabilities Capabilities `json:"capabilities,omitempty"`
	// Conditions hold the Ready condition.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}
