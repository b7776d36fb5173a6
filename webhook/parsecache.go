package webhook

import (
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"sync"

	"github.com/secret-relay/secret-relay/relay"
)

// parsedCacheSize bounds the memo of parsed annotations. Pods of one workload carry
// the same annotations, so a few hundred distinct values cover a large cluster.
const parsedCacheSize = 512

// parsedAnnotations memoizes ParseAnnotations, which is pure: parsing YAML is most of
// the cost of a warm admission, and every replica of a Deployment asks the same.
// Results are shared and must not be modified.
//
// Entries are keyed by the digest of the annotations (see askedOf), not by their
// text: a pod of ten copies asks in about 2 KB, which the memo would otherwise keep
// alive for each of its entries.
type parsedAnnotations struct {
	mu      sync.Mutex
	entries map[asked]parsedResult
}

type parsedResult struct {
	reqs []relay.SecretRequest
	err  error
}

// parse returns ParseAnnotations(annotations), and the digest it memoizes them by
// (askedOf), for the verified-pods memo. A pod that asks for nothing costs no digest.
func (c *parsedAnnotations) parse(annotations map[string]string) ([]relay.SecretRequest, asked, error) {
	if _, ok := annotations[relay.AnnotationSecrets]; !ok {
		return nil, asked{}, nil
	}
	key := askedOf(annotations)
	c.mu.Lock()
	r, ok := c.entries[key]
	c.mu.Unlock()
	if ok {
		return r.reqs, key, r.err
	}
	reqs, err := ParseAnnotations(annotations)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil || len(c.entries) >= parsedCacheSize {
		// Start over rather than track recency: a full memo means churn, and the
		// cost of a miss is one parse.
		c.entries = map[asked]parsedResult{}
	}
	c.entries[key] = parsedResult{reqs: reqs, err: err}
	return reqs, key, err
}

// asked is the digest of what a pod asks for, its store and secrets annotations:
// the key of both memos of warm admissions.
type asked [sha256.Size]byte

func askedOf(annotations map[string]string) asked {
	store, hasStore := annotations[relay.AnnotationStore]
	// A missing store annotation is not an empty one: its length is written as 0,
	// an empty one's as 1.
	n := uint64(0)
	if hasStore {
		n = uint64(len(store)) + 1
	}
	d := digesters.Get().(*digester)
	defer digesters.Put(d)
	d.h.Reset()
	d.buf = binary.BigEndian.AppendUint64(d.buf[:0], n)
	d.buf = append(d.buf, store...)
	d.buf = append(d.buf, annotations[relay.AnnotationSecrets]...)
	d.h.Write(d.buf)
	var a asked
	d.h.Sum(a[:0])
	return a
}

// digester is a hash and a buffer for askedOf, pooled: a warm review otherwise
// allocates a copy of its annotation's text, kilobytes for a pod of ten copies.
type digester struct {
	h   hash.Hash
	buf []byte
}

var digesters = sync.Pool{New: func() any { return &digester{h: sha256.New()} }}
