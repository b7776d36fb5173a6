// Package relay is secret-relay's model, shared by the admission side (webhook) and
// the upstream side and controllers, and importing neither: the annotation keys, the
// parsed requests, sources and data tokens, the pure planning of a local Secret,
// the downstream store of managed copies, and the typed, wording-free errors that
// say why a relay cannot be done.
package relay
