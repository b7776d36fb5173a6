package controllers

import (
	"slices"
	"sync"

	"github.com/secret-relay/secret-relay/relay"
)

// readers finds the copies that read an upstream Secret, by store and name
// (storeIndexKey + "\x00" + name). It stands in for an informer index, which keeps
// a set per value: a map of about 200 B even for a Secret one copy reads, and most
// upstream Secrets are read by one copy. Here each is a slice of copy keys, indexed
// by key only once it is long (manyReaders), so that adding or removing one copy of
// a Secret that every copy reads costs no scan of them all.
//
// The informer's handlers keep it, after the cache has changed. A copy whose Add is
// not handled yet is missing from it for a moment; that Add queues the copy, whose
// sync reads the upstream cache as it is by then, so no change is missed.
type readers struct {
	mu     sync.RWMutex
	remote map[string]copyKeys
}

func newReaders() *readers { return &readers{remote: map[string]copyKeys{}} }

// set records that the copy key reads now, having read before.
func (r *readers) set(key string, before, now []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, remote := range before {
		if slices.Contains(now, remote) {
			continue
		}
		keys := r.remote[remote]
		keys.remove(key)
		if len(keys.keys) == 0 {
			delete(r.remote, remote)
		} else {
			r.remote[remote] = keys
		}
	}
	for _, remote := range now {
		keys := r.remote[remote]
		keys.add(key)
		r.remote[remote] = keys
	}
}

// of returns the keys of the copies that read remote.
func (r *readers) of(remote string) []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return slices.Clone(r.remote[remote].keys)
}

// manyReaders is how many copies of one upstream Secret a plain scan serves.
const manyReaders = 16

// copyKeys are the copies that read one upstream Secret, each once.
type copyKeys struct {
	keys []string
	// at is each key's position in keys, once there are more than manyReaders.
	at map[string]int
}

func (c *copyKeys) index(key string) int {
	if c.at == nil {
		return slices.Index(c.keys, key)
	}
	if i, ok := c.at[key]; ok {
		return i
	}
	return -1
}

func (c *copyKeys) add(key string) {
	if c.index(key) >= 0 {
		return
	}
	c.keys = append(c.keys, key)
	switch {
	case c.at != nil:
		c.at[key] = len(c.keys) - 1
	case len(c.keys) > manyReaders:
		c.at = make(map[string]int, len(c.keys))
		for i, k := range c.keys {
			c.at[k] = i
		}
	}
}

func (c *copyKeys) remove(key string) {
	i := c.index(key)
	if i < 0 {
		return
	}
	last := len(c.keys) - 1
	c.keys[i] = c.keys[last]
	c.keys = c.keys[:last]
	if c.at != nil {
		delete(c.at, key)
		if i < last {
			c.at[c.keys[i]] = i
		}
	}
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
