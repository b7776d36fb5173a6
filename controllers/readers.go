package controllers

import "github.com/secret-relay/secret-relay/relay"

// remotesOf is what a cached copy reads, as the readers index names it (store + "\x00" + name).
func remotesOf(obj any) []string {
	return bySource(obj, func(store string, req relay.SecretRequest) []string {
		keys := req.RemoteKeys()
		for i, name := range keys {
			keys[i] = store + "\x00" + name
		}
		return keys
	})
}
