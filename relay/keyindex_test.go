package relay_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/secret-relay/secret-relay/relay"
)

func TestKeyIndex(t *testing.T) {
	r := relay.NewKeyIndex()
	r.Set("a/one", nil, []string{"s\x00db", "s\x00all"})
	r.Set("b/one", nil, []string{"s\x00all"})
	r.Set("b/one", nil, []string{"s\x00all"}) // again: an Add after a relist
	assert.Equal(t, []string{"a/one"}, r.Of("s\x00db"))
	assert.ElementsMatch(t, []string{"a/one", "b/one"}, r.Of("s\x00all"), "each copy once")

	r.Set("a/one", []string{"s\x00db", "s\x00all"}, []string{"s\x00api", "s\x00all"})
	assert.Empty(t, r.Of("s\x00db"), "a copy re-sourced reads its old Secret no more")
	assert.Equal(t, []string{"a/one"}, r.Of("s\x00api"))
	assert.ElementsMatch(t, []string{"a/one", "b/one"}, r.Of("s\x00all"))

	r.Set("a/one", []string{"s\x00api", "s\x00all"}, nil)
	r.Set("b/one", []string{"s\x00all"}, nil)
	assert.Zero(t, r.Len(), "nothing is kept for copies that are gone")

	keys := r.Of("s\x00none")
	assert.Empty(t, keys)
	r.Set("c/one", nil, []string{"s\x00x"})
	got := r.Of("s\x00x")
	got[0] = "changed"
	assert.Equal(t, []string{"c/one"}, r.Of("s\x00x"), "what Of returns is the caller's")

}

func TestKeyIndexMany(t *testing.T) {
	r := relay.NewKeyIndex()
	var all []string
	for i := range 100 {
		key := fmt.Sprintf("ns-%d/copy", i)
		all = append(all, key)
		r.Set(key, nil, []string{"s\x00all"})
	}
	r.Set("ns-7/copy", nil, []string{"s\x00all"})
	assert.ElementsMatch(t, all, r.Of("s\x00all"), "each copy once, past the scan's reach too")

	for i := 0; i < 100; i += 2 {
		r.Set(all[i], []string{"s\x00all"}, nil)
	}
	assert.ElementsMatch(t, oddOnes(all), r.Of("s\x00all"))
	r.Set(all[1], []string{"s\x00all"}, nil)
	r.Set(all[1], nil, []string{"s\x00all"})
	assert.ElementsMatch(t, oddOnes(all), r.Of("s\x00all"), "taken out and put back")
	for _, key := range oddOnes(all) {
		r.Set(key, []string{"s\x00all"}, nil)
	}
	assert.Zero(t, r.Len())
}

func oddOnes(keys []string) []string {
	var out []string
	for i := 1; i < len(keys); i += 2 {
		out = append(out, keys[i])
	}
	return out
}
