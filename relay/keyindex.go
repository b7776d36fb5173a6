package relay

import (
	"slices"
	"sync"
)

// KeyIndex finds the objects that name a value: the copies that read an upstream
// Secret, the pods whose status names a copy. It stands in for an informer index,
// which keeps a set per value: a map of about 200 B even for a value one object
// names, and most values are named by one. Here each value has a slice of object
// keys, indexed by key only once it is long (manyKeys), so that adding or removing
// one object of a value that every object names costs no scan of them all.
//
// An informer's handlers keep it, after the cache has changed: an object whose Add
// is not handled yet is missing from it for a moment, one whose Delete is not
// handled yet is still in it. Callers that read the object read it from the cache.
type KeyIndex struct {
	mu     sync.RWMutex
	values map[string]keyList
}

// NewKeyIndex returns an empty index.
func NewKeyIndex() *KeyIndex { return &KeyIndex{values: map[string]keyList{}} }

// Set records that the object key names now, having named before.
func (x *KeyIndex) Set(key string, before, now []string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, value := range before {
		if slices.Contains(now, value) {
			continue
		}
		keys := x.values[value]
		keys.remove(key)
		if len(keys.keys) == 0 {
			delete(x.values, value)
		} else {
			x.values[value] = keys
		}
	}
	for _, value := range now {
		keys := x.values[value]
		keys.add(key)
		x.values[value] = keys
	}
}

// Of returns the keys of the objects that name value.
func (x *KeyIndex) Of(value string) []string {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return slices.Clone(x.values[value].keys)
}

// Len is how many values are named.
func (x *KeyIndex) Len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.values)
}

// manyKeys is how many objects of one value a plain scan serves.
const manyKeys = 16

// keyList are the objects that name one value, each once.
type keyList struct {
	keys []string
	// at is each key's position in keys, once there are more than manyKeys.
	at map[string]int
}

func (c *keyList) index(key string) int {
	if c.at == nil {
		return slices.Index(c.keys, key)
	}
	if i, ok := c.at[key]; ok {
		return i
	}
	return -1
}

func (c *keyList) add(key string) {
	if c.index(key) >= 0 {
		return
	}
	c.keys = append(c.keys, key)
	switch {
	case c.at != nil:
		c.at[key] = len(c.keys) - 1
	case len(c.keys) > manyKeys:
		c.at = make(map[string]int, len(c.keys))
		for i, k := range c.keys {
			c.at[k] = i
		}
	}
}

func (c *keyList) remove(key string) {
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
