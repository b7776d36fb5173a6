package webhook

import (
	"crypto/sha256"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/secret-relay/secret-relay/relay"
)

// verifiedCacheSize bounds the memo of verified pods, as parsedCacheSize bounds the
// parsed annotations: one entry per workload and namespace.
const verifiedCacheSize = 4096

// verifiedPods memoizes the outcome of warm admissions: a pod's copies were all
// current when the local copies and the upstream Secrets they read were at these
// versions. While every version stands, planning the copies again (their data,
// source and token) would give what it gave then; it was most of the cost of a warm
// admission of a pod with ten copies. The tokens it gave are the copies' own
// data-hash annotations, which the versions pin: they are read there, not kept.
type verifiedPods struct {
	mu      sync.Mutex
	entries map[verifiedKey]versions
}

// verifiedKey is what a pod asks for: its namespace and a digest of its annotations'
// text. Digests, here and of the versions, keep an entry to about 100 B: for a pod
// with ten copies, the text, the versions and the tokens were about 5 KB.
type verifiedKey struct {
	namespace string
	asked     asked
	// owner is the workload whose pods the copies were verified for: another's
	// must still be added to their owners.
	owner types.UID
}

// versions is the digest of what a verification depends on (see versionsOf); zero
// when a version is unknown.
type versions [sha256.Size]byte

// verified reports whether the copies of key were verified at versions.
func (v *verifiedPods) verified(key verifiedKey, at versions) bool {
	if at == (versions{}) {
		return false
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.entries[key] == at
}

// put records that every copy of key was current at versions.
func (v *verifiedPods) put(key verifiedKey, at versions) {
	if at == (versions{}) {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.entries == nil || len(v.entries) >= verifiedCacheSize {
		// Not sized for a full memo: that is about 1 MB from the first pod on, for
		// clusters that remember a few hundred.
		v.entries = map[verifiedKey]versions{}
	}
	v.entries[key] = at
}

// versionsOf digests the versions a verification depends on: each local copy's and
// each upstream Secret's UID and resource version, and the token key, through the
// token of no data. It is zero when a version is unknown (an object without a
// resource version, or an upstream Secret not read because the item was served from
// its copy): such a verification is not memoized.
func versionsOf(existing []*corev1.Secret, remotes []relay.RemoteSecrets, reqs []relay.SecretRequest, tokens relay.Tokenizer) versions {
	b := make([]byte, 0, 1024) // on the stack for a pod of a few copies
	b = append(b, tokens.Token(nil)...)
	version := func(uid types.UID, rv string) {
		b = append(append(append(append(b, 0), uid...), '@'), rv...)
	}
	for i, req := range reqs {
		if existing[i] == nil || existing[i].ResourceVersion == "" {
			return versions{}
		}
		version(existing[i].UID, existing[i].ResourceVersion)
		for _, name := range req.RemoteKeys() {
			s := remotes[i][name]
			if s == nil || s.ResourceVersion == "" {
				return versions{}
			}
			version(s.UID, s.ResourceVersion)
		}
	}
	return sha256.Sum256(b)
}
