package relay

import (
	"cmp"
	"iter"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Remote is what secret-relay keeps of an upstream Secret: who it is, its version,
// its type and its values. The upstream cache holds one for every wanted Secret, so
// it is compact: kept with its cache entry, a decoded corev1.Secret costs about
// 880 B beside its values (its struct, and a map of 400 B even for one key), a
// Remote about 270 B.
type Remote struct {
	UID             types.UID
	ResourceVersion string
	Type            corev1.SecretType
	// values are the Secret's keys and values, sorted by key.
	values []remoteValue
}

type remoteValue struct {
	key   string
	value []byte
}

// RemoteOf keeps what secret-relay reads of upstream Secret s. The values are
// shared with s, not copied.
func RemoteOf(s *corev1.Secret) *Remote {
	r := &Remote{UID: s.UID, ResourceVersion: s.ResourceVersion, Type: s.Type, values: make([]remoteValue, 0, len(s.Data))}
	if s.Type == corev1.SecretTypeOpaque {
		r.Type = corev1.SecretTypeOpaque // one string for every Opaque Secret
	}
	for k, v := range s.Data {
		r.values = append(r.values, remoteValue{key: k, value: v})
	}
	slices.SortFunc(r.values, func(a, b remoteValue) int { return cmp.Compare(a.key, b.key) })
	return r
}

// Value returns the value of key, and whether the Secret has it.
func (r *Remote) Value(key string) ([]byte, bool) {
	i, ok := slices.BinarySearchFunc(r.values, key, func(v remoteValue, key string) int { return cmp.Compare(v.key, key) })
	if !ok {
		return nil, false
	}
	return r.values[i].value, true
}

// All yields every key and value, in key order.
func (r *Remote) All() iter.Seq2[string, []byte] {
	return func(yield func(string, []byte) bool) {
		for _, v := range r.values {
			if !yield(v.key, v.value) {
				return
			}
		}
	}
}
