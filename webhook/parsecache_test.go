package webhook

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/secret-relay/secret-relay/relay"
)

// TestAskedOf checks that the memos' key tells apart what parses differently.
func TestAskedOf(t *testing.T) {
	ask := func(kv ...string) asked {
		a := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			a[kv[i]] = kv[i+1]
		}
		return askedOf(a)
	}
	secrets, store := relay.AnnotationSecrets, relay.AnnotationStore
	keys := map[string]asked{
		"no store":                 ask(secrets, "db"),
		"an empty store":           ask(store, "", secrets, "db"),
		"a store":                  ask(store, "s", secrets, "db"),
		"the boundary moved":       ask(store, "sd", secrets, "b"),
		"other secrets":            ask(store, "s", secrets, "dc"),
		"no secrets, a store":      ask(store, "s"),
		"no secrets, an empty one": ask(store, "", secrets, ""),
	}
	seen := map[asked]string{}
	for name, k := range keys {
		if other, ok := seen[k]; ok {
			t.Errorf("%s and %s have the same key", name, other)
		}
		seen[k] = name
	}
	assert.Equal(t, ask(store, "s", secrets, "db"), ask(secrets, "db", store, "s", "other", "x"), "other annotations do not matter")
}
