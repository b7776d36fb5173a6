// Package controllers holds the background work of secret-relay, which the leader
// runs and every replica keeps warm: the sync controller, which keeps the managed
// copies in step with upstream, and the store validator, which writes each store's
// status. Both read stores and upstreams through remote, and plan copies with relay.
package controllers
