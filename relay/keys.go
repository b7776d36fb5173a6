package relay

// Annotation and label keys. Everything secret-relay reads or writes on pods and
// Secrets is here, under one prefix.
const (
	Prefix = "secret-relay.io/"

	// AnnotationStore is the pod's default store: NAME, SecretStore/NAME or
	// ClusterSecretStore/NAME.
	AnnotationStore = Prefix + "store"
	// AnnotationSecrets is the YAML or JSON list of Secrets the pod wants relayed.
	AnnotationSecrets = Prefix + "secrets"
	// AnnotationRestartOnChange, "true" on a workload's pod template, has the leader
	// roll the workload when one of its copies changes data.
	AnnotationRestartOnChange = Prefix + "restart-on-change"
	// AnnotationRestartedAt, on a workload's pod template, is when secret-relay last
	// rolled it, RFC 3339: setting it is the restart.
	AnnotationRestartedAt = Prefix + "restarted-at"
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
	// AnnotationOrphanedAt, on a local Secret, is when the leader found it unused
	// for the grace period, RFC 3339: it deletes the copy a while later if the mark
	// still stands. An admission that uses the copy writes it, removing the mark,
	// since the pod it admits is not visible yet; a sync keeps it.
	AnnotationOrphanedAt = Prefix + "orphaned-at"

	// LabelManagedBy marks the local Secrets secret-relay owns; it never writes a
	// Secret without it.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// ManagedByValue is LabelManagedBy's value.
	ManagedByValue = "secret-relay"
	// LabelRelayed, "true", marks the pods admission relayed Secrets to, so that the
	// relay watches just those.
	LabelRelayed = Prefix + "relayed"
)
