package webhook

// Annotation and label keys. Everything secret-relay reads or writes on pods and
// Secrets is here, under one prefix.
const (
	Prefix = "secret-relay.io/"

	// AnnotationStore is the pod's default store: NAME, SecretStore/NAME or
	// ClusterSecretStore/NAME.
	AnnotationStore = Prefix + "store"
	// AnnotationSecrets is the YAML or JSON list of Secrets the pod wants relayed.
	AnnotationSecrets = Prefix + "secrets"
	// AnnotationStatus, on an admitted pod, maps each relayed local Secret to its
	// data token, as its AnnotationDataHash holds it.
	AnnotationStatus = Prefix + "status"

	// AnnotationSource, on a local Secret, says where it came from, as JSON.
	AnnotationSource = Prefix + "source"
	// AnnotationDataHash, on a local Secret, is the keyed token of its data
	// (TokenKey.Token): equal data, equal token, and nothing about a value without
	// the installation's key.
	AnnotationDataHash = Prefix + "data-hash"
	// AnnotationSyncedAt, on a local Secret, is when it was last written, RFC 3339.
	AnnotationSyncedAt = Prefix + "synced-at"

	// LabelManagedBy marks the local Secrets secret-relay owns; it never writes a
	// Secret without it.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// ManagedByValue is LabelManagedBy's value.
	ManagedByValue = "secret-relay"
)

// StoreKind is the kind of a store a reference points at.
type StoreKind string

// The two store kinds.
const (
	SecretStoreKind        StoreKind = "SecretStore"
	ClusterSecretStoreKind StoreKind = "ClusterSecretStore"
)

// StoreRef names a store. A SecretStore lives in the pod's namespace.
type StoreRef struct {
	Kind StoreKind `json:"kind"`
	Name string    `json:"name"`
}

// String renders the reference the way users write it: Kind/name.
func (r StoreRef) String() string { return string(r.Kind) + "/" + r.Name }

// RemoteRef points at an upstream Secret, and optionally at one key of it.
type RemoteRef struct {
	// Key is the name of the upstream Secret.
	Key string `json:"key"`
	// Property is one key of its data; empty means the whole Secret.
	Property string `json:"property,omitempty"`
}

// DataEntry copies one key of an upstream Secret into the local Secret.
type DataEntry struct {
	SecretKey string    `json:"secretKey"`
	RemoteRef RemoteRef `json:"remoteRef"`
}

// DataFromEntry copies all keys of an upstream Secret into the local Secret.
type DataFromEntry struct {
	Extract RemoteRef `json:"extract"`
}

// SecretRequest is one item of the secret-relay.io/secrets annotation, after parsing
// and defaulting: one local Secret and where its data comes from.
type SecretRequest struct {
	// Name is the local Secret's name in the pod's namespace.
	Name string `json:"name"`
	// Store is where the data comes from; the pod's default store when the item names none.
	Store StoreRef `json:"store"`
	// Data are chosen keys.
	Data []DataEntry `json:"data,omitempty"`
	// DataFrom are whole upstream Secrets whose keys are merged.
	DataFrom []DataFromEntry `json:"dataFrom,omitempty"`
	// Env adds an envFrom secretRef to every container and init container.
	Env bool `json:"env,omitempty"`
	// MountPath, when set, mounts the Secret read-only there in every container.
	MountPath string `json:"mountPath,omitempty"`
	// WholeSecret is true for the string form: the local Secret is one upstream
	// Secret, copied whole, keeping its type.
	WholeSecret bool `json:"-"`
}

// RemoteKeys lists the upstream Secrets the request reads, each once, in order.
func (r SecretRequest) RemoteKeys() []string {
	var keys []string
	seen := map[string]bool{}
	add := func(k string) {
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	for _, d := range r.Data {
		add(d.RemoteRef.Key)
	}
	for _, d := range r.DataFrom {
		add(d.Extract.Key)
	}
	return keys
}
