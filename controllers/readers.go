package controllers

import (
	"slices"
	"sync"

	"github.com/secret-relay/secret-relay/relay"
)

// readers finds the copies that read an upstream Secret, by store and name
// (storeIndexKey + "\x00" + name). It stands in for an informer index, which keeps
// a set per value: a map of about 200 B even for a Secret one copy reads, and most
// upstream Secrets are read by one copy. Here each is a slice of copy keys. Taking a
// copy out of a Secret many copies read scans them, which costs little beside the
// delete that caused it.
//
// The informer's handlers keep it, after the cache has changed. A copy whose Add is
// not handled yet is missing from it for a moment; that Add queues the copy, whose
// sync reads the upstream cache as it is by then, so no change is missed.
type readers struct {
	mu     sync.RWMutex
	remote map[string][]string
}

func newReaders() *readers { return &readers{remote: map[string][]string{}} }

// set records that the copy key reads now, having read before.
func (r *readers) set(key string, before, now []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, remote := range before {
		if slices.Contains(now, remote) {
			continue
		}
		keys := r.remote[remote]
		if i := slices.Index(keys, key); i >= 0 {
			keys[i] = keys[len(keys)-1]
			keys = keys[:len(keys)-1]
		}
		if len(keys) == 0 {
			delete(r.remote, remote)
		} else {
			r.remote[remote] = keys
		}
	}
	for _, remote := range now {
		if !slices.Contains(r.remote[remote], key) {
			r.remote[remote] = append(r.remote[remote], key)
		}
	}
}

// of returns the keys of the copies that read remote.
func (r *readers) of(remote string) []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return slices.Clone(r.remote[remote])
}

// remotesOf is what a cached copy reads, as readers names it.
func remotesOf(obj any) []string {
	return bySource(obj, func(store string, req relay.SecretRequest) []string {
		keys := req.RemoteKeys()
		for i, name := range keys {
			keys[i] = store + "\x00" + name
		}
		return keys
	})
}
