package webhook

import (
	"sync"

	"github.com/secret-relay/secret-relay/relay"
)

// parsedCacheSize bounds the memo of parsed annotations. Pods of one workload carry
// the same annotations, so a few hundred distinct values cover a large cluster.
const parsedCacheSize = 512

// parsedAnnotations memoizes ParseAnnotations, which is pure: parsing YAML is most of
// the cost of a warm admission, and every replica of a Deployment asks the same.
// Results are shared and must not be modified.
type parsedAnnotations struct {
	mu      sync.Mutex
	entries map[parsedKey]parsedResult
}

type parsedKey struct{ store, secrets string }

type parsedResult struct {
	reqs []relay.SecretRequest
	err  error
}

func (c *parsedAnnotations) parse(annotations map[string]string) ([]relay.SecretRequest, error) {
	secrets, ok := annotations[relay.AnnotationSecrets]
	if !ok {
		return nil, nil
	}
	store, hasStore := annotations[relay.AnnotationStore]
	if !hasStore {
		// Distinguish "no store annotation" from an empty one.
		store = "\x00"
	}
	key := parsedKey{store: store, secrets: secrets}
	c.mu.Lock()
	r, ok := c.entries[key]
	c.mu.Unlock()
	if ok {
		return r.reqs, r.err
	}
	reqs, err := ParseAnnotations(annotations)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil || len(c.entries) >= parsedCacheSize {
		// Start over rather than track recency: a full memo means churn, and the
		// cost of a miss is one parse.
		c.entries = make(map[parsedKey]parsedResult, parsedCacheSize)
	}
	c.entries[key] = parsedResult{reqs: reqs, err: err}
	return reqs, err
}
