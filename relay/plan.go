package relay

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// RemoteSecrets holds the upstream Secrets read for one request, by name (RemoteRef.Key).
type RemoteSecrets map[string]*Remote

// Source is where a local Secret comes from; it is stored as JSON in the
// secret-relay.io/source annotation. Two requests with equal Sources yield the same
// data from the same upstream, so a local Secret may be shared between pods that ask
// for it the same way, and is never silently taken over by one that asks differently.
type Source struct {
	Store    StoreRef        `json:"store"`
	Data     []DataEntry     `json:"data,omitempty"`
	DataFrom []DataFromEntry `json:"dataFrom,omitempty"`
}

// SourceOf returns the Source of a request, in canonical form: the string form is
// spelled as the single dataFrom it means, and entries are sorted. Entries never
// yield the same key twice, so their order does not change the data; sorting them
// keeps a reordered annotation from counting as a different source.
func SourceOf(req SecretRequest) Source {
	return Source{
		Store:    req.Store,
		Data:     slices.Clone(req.Data),
		DataFrom: dataFromOf(req),
	}.canonical()
}

// dataFromOf returns the request's dataFrom entries, with the string form (WholeSecret)
// spelled out as one extract of the Secret it names, should the parser not have done so.
func dataFromOf(req SecretRequest) []DataFromEntry {
	if req.WholeSecret && len(req.Data) == 0 && len(req.DataFrom) == 0 {
		return []DataFromEntry{{Extract: RemoteRef{Key: req.Name}}}
	}
	return slices.Clone(req.DataFrom)
}

// canonical returns s with its entries sorted and empty lists made nil.
func (s Source) canonical() Source {
	out := Source{Store: s.Store}
	if len(s.Data) > 0 {
		out.Data = slices.Clone(s.Data)
		slices.SortFunc(out.Data, func(a, b DataEntry) int {
			if c := strings.Compare(a.SecretKey, b.SecretKey); c != 0 {
				return c
			}
			return compareRemoteRef(a.RemoteRef, b.RemoteRef)
		})
	}
	if len(s.DataFrom) > 0 {
		out.DataFrom = slices.Clone(s.DataFrom)
		slices.SortFunc(out.DataFrom, func(a, b DataFromEntry) int {
			return compareRemoteRef(a.Extract, b.Extract)
		})
	}
	return out
}

func compareRemoteRef(a, b RemoteRef) int {
	if c := strings.Compare(a.Key, b.Key); c != 0 {
		return c
	}
	return strings.Compare(a.Property, b.Property)
}

// String returns the deterministic JSON written to the secret-relay.io/source
// annotation. It holds only names: store, remote Secrets and keys.
func (s Source) String() string {
	b, err := json.Marshal(s.canonical())
	if err != nil {
		// Source holds only strings; encoding it cannot fail.
		panic(fmt.Sprintf("could not encode source: %v", err))
	}
	return string(b)
}

// ParseSource reads a secret-relay.io/source annotation. Unknown fields are ignored,
// so that a Source written by a newer version still reads; a Source without a store
// is an error.
func ParseSource(annotation string) (Source, error) {
	var s Source
	if err := json.Unmarshal([]byte(annotation), &s); err != nil {
		return Source{}, fmt.Errorf("could not parse %s annotation: %w", AnnotationSource, err)
	}
	if s.Store.Kind == "" || s.Store.Name == "" {
		return Source{}, fmt.Errorf("could not parse %s annotation: %w", AnnotationSource, errors.New("no store"))
	}
	return s.canonical(), nil
}

// Equal reports whether s and o name the same store and the same references, in any
// order.
func (s Source) Equal(o Source) bool {
	a, b := s.canonical(), o.canonical()
	return a.Store == b.Store && slices.Equal(a.Data, b.Data) && slices.Equal(a.DataFrom, b.DataFrom)
}

// PlanSecret computes the local Secret that one request wants in namespace ns, its
// data-hash a token of tokens. It returns an *Error, naming Secrets and keys but
// never values, when a remote Secret or key is missing, when a remote Secret is a
// service-account token, when two entries yield the same key, or when the data would
// not fit in a Secret.
func PlanSecret(ns string, req SecretRequest, remote RemoteSecrets, syncedAt time.Time, tokens Tokenizer) (*corev1.Secret, error) {
	dataFrom := dataFromOf(req)
	if len(req.Data) == 0 && len(dataFrom) == 0 {
		return nil, &Error{Reason: ErrNoEntries, Namespace: ns, Secret: req.Name}
	}
	get := func(key string) (*Remote, error) {
		s := remote[key]
		if s == nil {
			return nil, &Error{Reason: ErrRemoteNotFound, Namespace: ns, Secret: req.Name, Store: req.Store, Remote: key}
		}
		if s.Type == corev1.SecretTypeServiceAccountToken {
			return nil, &Error{Reason: ErrServiceAccountToken, Namespace: ns, Secret: req.Name, Store: req.Store, Remote: key}
		}
		return s, nil
	}

	data := map[string][]byte{}
	from := map[string]string{} // local key -> remote Secret it came from
	put := func(key, remoteName string, value []byte) error {
		if prev, ok := from[key]; ok {
			return &Error{Reason: ErrKeyConflict, Namespace: ns, Secret: req.Name, Store: req.Store, Key: key, Remote: prev, Other: remoteName}
		}
		from[key] = remoteName
		data[key] = append([]byte{}, value...) // never alias the remote's bytes
		return nil
	}

	for _, d := range req.Data {
		s, err := get(d.RemoteRef.Key)
		if err != nil {
			return nil, err
		}
		if d.RemoteRef.Property == "" {
			return nil, &Error{Reason: ErrNoProperty, Namespace: ns, Secret: req.Name, Store: req.Store, Key: d.SecretKey, Remote: d.RemoteRef.Key}
		}
		v, ok := s.Value(d.RemoteRef.Property)
		if !ok {
			return nil, &Error{Reason: ErrPropertyNotFound, Namespace: ns, Secret: req.Name, Store: req.Store, Remote: d.RemoteRef.Key, Key: d.RemoteRef.Property}
		}
		if err := put(d.SecretKey, d.RemoteRef.Key, v); err != nil {
			return nil, err
		}
	}
	var whole *Remote
	for _, d := range dataFrom {
		s, err := get(d.Extract.Key)
		if err != nil {
			return nil, err
		}
		if d.Extract.Property != "" {
			return nil, &Error{Reason: ErrPropertyOnDataFrom, Namespace: ns, Secret: req.Name, Store: req.Store, Remote: d.Extract.Key}
		}
		for k, v := range s.All() {
			if err := put(k, d.Extract.Key, v); err != nil {
				return nil, err
			}
		}
		whole = s
	}

	size := 0
	for _, v := range data {
		size += len(v)
	}
	if size > corev1.MaxSecretSize {
		// The API server counts the values alone against the limit, as here.
		return nil, &Error{Reason: ErrTooLarge, Namespace: ns, Secret: req.Name, Store: req.Store, Size: size}
	}

	secretType := corev1.SecretTypeOpaque
	if len(req.Data) == 0 && len(dataFrom) == 1 && whole.Type != "" {
		// One whole remote Secret keeps its type, so that a TLS or docker-config
		// Secret stays usable as one.
		secretType = whole.Type
	}
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name:      req.Name,
			Namespace: ns,
			Labels:    map[string]string{LabelManagedBy: ManagedByValue},
			Annotations: map[string]string{
				AnnotationSource:   SourceOf(req).String(),
				AnnotationDataHash: tokens.Token(data),
				AnnotationSyncedAt: syncedAt.UTC().Format(time.RFC3339),
			},
		},
		Type: secretType,
		Data: data,
	}, nil
}

// CheckExisting decides what to do with the local Secret that already has the desired
// Secret's name. existing == nil means write. It returns write=false when existing is
// managed, from the same Source, and has the same type, data and token and every
// owner desired names, and an *Error (ErrNotManaged, ErrOtherSource) when existing
// is not secret-relay's to change. existing may be a copy from the cache, which
// keeps only a digest of data.
func CheckExisting(existing, desired *corev1.Secret) (write bool, err error) {
	if existing == nil {
		return true, nil
	}
	if existing.Labels[LabelManagedBy] != ManagedByValue {
		return false, &Error{Reason: ErrNotManaged, Namespace: desired.Namespace, Secret: desired.Name}
	}
	// Sources are written in one canonical form, so equal text is the same source and
	// the warm path skips parsing; other text may still be the same source, written
	// by an older version.
	if existing.Annotations[AnnotationSource] != desired.Annotations[AnnotationSource] {
		want, err := ParseSource(desired.Annotations[AnnotationSource])
		if err != nil {
			return false, fmt.Errorf("desired Secret %s/%s: %w", desired.Namespace, desired.Name, err)
		}
		have, err := ParseSource(existing.Annotations[AnnotationSource])
		if err != nil {
			return false, &Error{Reason: ErrOtherSource, Namespace: desired.Namespace, Secret: desired.Name}
		}
		if !have.Equal(want) {
			return false, &Error{Reason: ErrOtherSource, Namespace: desired.Namespace, Secret: desired.Name, Other: have.Store.String()}
		}
	}
	// The data is compared again rather than trusting the annotation, so that a copy
	// someone edited by hand is put back; a copy whose annotation an older version
	// wrote, or another key made, is re-annotated.
	// A workload that now uses the copy is added to its owners; none is removed here
	// (the garbage collector drops the references to owners that are gone).
	same := existing.Type == desired.Type &&
		existing.Annotations[AnnotationDataHash] == desired.Annotations[AnnotationDataHash] &&
		HoldsData(existing, desired.Data) &&
		len(missingOwners(existing.OwnerReferences, desired.OwnerReferences)) == 0
	return !same, nil
}

// MarkedOrphan reports whether the leader marked existing for deletion
// (AnnotationOrphanedAt). An admission that uses it writes it, which clears the
// mark; CheckExisting ignores the mark, so that a background sync does not.
func MarkedOrphan(existing *corev1.Secret) bool {
	_, ok := existing.Annotations[AnnotationOrphanedAt]
	return ok
}

// KeepOrphanMark carries the leader's mark from existing to desired, for a write
// that is no pod's admission: a sync of new upstream data does not save a copy
// from deletion, or one whose source changes more often than the mark's wait
// would never be deleted.
func KeepOrphanMark(existing, desired *corev1.Secret) {
	at, ok := existing.Annotations[AnnotationOrphanedAt]
	if !ok {
		return
	}
	if desired.Annotations == nil {
		desired.Annotations = map[string]string{}
	}
	desired.Annotations[AnnotationOrphanedAt] = at
}
