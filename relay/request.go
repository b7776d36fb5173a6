package relay

import (
	"context"
	"slices"
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
// Admission asks twice per request and review, so a request of a few keys is
// deduplicated without a map.
func (r SecretRequest) RemoteKeys() []string {
	keys := make([]string, 0, len(r.Data)+len(r.DataFrom))
	var seen map[string]bool
	add := func(k string) {
		switch {
		case seen != nil:
			if seen[k] {
				return
			}
			seen[k] = true
		case slices.Contains(keys, k):
			return
		case len(keys) == remoteKeysScanned:
			seen = make(map[string]bool, cap(keys))
			for _, s := range keys {
				seen[s] = true
			}
			seen[k] = true
		}
		keys = append(keys, k)
	}
	for _, d := range r.Data {
		add(d.RemoteRef.Key)
	}
	for _, d := range r.DataFrom {
		add(d.Extract.Key)
	}
	return keys
}

// remoteKeysScanned is how many distinct keys RemoteKeys compares one by one
// before it keeps a set.
const remoteKeysScanned = 16

// SecretSource reads upstream Secrets through one store, for one namespace that may
// use it; the Secrets it returns may be shared with a cache and must not be
// modified. Get returns an *Error: ErrRemoteNotFound, ErrRefused, ErrUnreachable
// (a managed copy may stand in) or ErrUpstream.
type SecretSource interface {
	Get(ctx context.Context, name string) (*Remote, error)
}
