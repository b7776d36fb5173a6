package controllers

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestReaders(t *testing.T) {
	r := newReaders()
	r.set("a/one", nil, []string{"s\x00db", "s\x00all"})
	r.set("b/one", nil, []string{"s\x00all"})
	r.set("b/one", nil, []string{"s\x00all"}) // again: an Add after a relist
	assert.Equal(t, []string{"a/one"}, r.of("s\x00db"))
	assert.ElementsMatch(t, []string{"a/one", "b/one"}, r.of("s\x00all"), "each copy once")

	r.set("a/one", []string{"s\x00db", "s\x00all"}, []string{"s\x00api", "s\x00all"})
	assert.Empty(t, r.of("s\x00db"), "a copy re-sourced reads its old Secret no more")
	assert.Equal(t, []string{"a/one"}, r.of("s\x00api"))
	assert.ElementsMatch(t, []string{"a/one", "b/one"}, r.of("s\x00all"))

	r.set("a/one", []string{"s\x00api", "s\x00all"}, nil)
	r.set("b/one", []string{"s\x00all"}, nil)
	assert.Empty(t, r.remote, "nothing is kept for copies that are gone")

	keys := r.of("s\x00none")
	assert.Empty(t, keys)
	r.set("c/one", nil, []string{"s\x00x"})
	got := r.of("s\x00x")
	got[0] = "changed"
	assert.Equal(t, []string{"c/one"}, r.of("s\x00x"), "what of returns is the caller's")

}

func TestReadersMany(t *testing.T) {
	r := newReaders()
	var all []string
	for i := range 100 {
		key := fmt.Sprintf("ns-%d/copy", i)
		all = append(all, key)
		r.set(key, nil, []string{"s\x00all"})
	}
	r.set("ns-7/copy", nil, []string{"s\x00all"})
	assert.ElementsMatch(t, all, r.of("s\x00all"), "each copy once, past the scan's reach too")

	for i := 0; i < 100; i += 2 {
		r.set(all[i], []string{"s\x00all"}, nil)
	}
	assert.ElementsMatch(t, oddOnes(all), r.of("s\x00all"))
	r.set(all[1], []string{"s\x00all"}, nil)
	r.set(all[1], nil, []string{"s\x00all"})
	assert.ElementsMatch(t, oddOnes(all), r.of("s\x00all"), "taken out and put back")
	for _, key := range oddOnes(all) {
		r.set(key, []string{"s\x00all"}, nil)
	}
	assert.Empty(t, r.remote)
}

func oddOnes(keys []string) []string {
	var out []string
	for i := 1; i < len(keys); i += 2 {
		out = append(out, keys[i])
	}
	return out
}
