// Package remote is the upstream side of secret-relay: it resolves stores, builds
// clients from what a store holds, and reads the Secrets that pods reference.
package remote
