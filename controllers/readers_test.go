package controllers

import (
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
