package relay

import (
	"errors"
	"fmt"
	"strings"
)

// The reasons a relay cannot be done, for errors.Is. They carry no wording for
// users: an *Error names what they concern, and the admission side (webhook.Describe)
// words them, once, for denials and events alike.
var (
	// ErrNamespaceNotFound: the downstream namespace does not exist.
	ErrNamespaceNotFound = errors.New("namespace not found")
	// ErrNamespaceTerminating: the downstream namespace is being deleted.
	ErrNamespaceTerminating = errors.New("namespace terminating")
	// ErrStoreNotFound: no such SecretStore in the namespace, or ClusterSecretStore.
	ErrStoreNotFound = errors.New("store not found")
	// ErrNotAllowed: the store exists and the namespace may not use it.
	ErrNotAllowed = errors.New("namespace may not use store")
	// ErrStoreMisconfigured: the store cannot work as written (Detail says why).
	ErrStoreMisconfigured = errors.New("store misconfigured")
	// ErrRemoteNotFound: the upstream Secret does not exist.
	ErrRemoteNotFound = errors.New("remote Secret not found")
	// ErrPropertyNotFound: the upstream Secret has no such key.
	ErrPropertyNotFound = errors.New("remote property not found")
	// ErrNoProperty: a data entry names no property of its remote Secret.
	ErrNoProperty = errors.New("no property")
	// ErrPropertyOnDataFrom: a dataFrom entry names a property.
	ErrPropertyOnDataFrom = errors.New("property on dataFrom")
	// ErrNoEntries: a request has no data or dataFrom entries.
	ErrNoEntries = errors.New("no entries")
	// ErrServiceAccountToken: the upstream Secret is a service-account token.
	ErrServiceAccountToken = errors.New("service-account token")
	// ErrKeyConflict: two entries yield the same local key.
	ErrKeyConflict = errors.New("key conflict")
	// ErrTooLarge: the local Secret would exceed a Secret's size limit.
	ErrTooLarge = errors.New("too large")
	// ErrRefused: the upstream refused the store's credentials (401 or 403).
	ErrRefused = errors.New("upstream refused")
	// ErrUnreachable: the upstream did not answer, or its watch is broken: nothing
	// can vouch that a copy is current.
	ErrUnreachable = errors.New("upstream unreachable")
	// ErrUpstream: the upstream answered with another failure.
	ErrUpstream = errors.New("upstream failed")
	// ErrNotManaged: a Secret of that name exists and secret-relay does not manage it.
	ErrNotManaged = errors.New("not managed")
	// ErrOtherSource: the managed copy is relayed from another source.
	ErrOtherSource = errors.New("other source")
	// ErrReadFailed, ErrWriteFailed: the downstream API server failed a read or
	// refused a write of the local Secret.
	ErrReadFailed  = errors.New("local read failed")
	ErrWriteFailed = errors.New("local write failed")
	// ErrKeyNotLoaded: this replica has no token key yet.
	ErrKeyNotLoaded = errors.New("token key not loaded")
)

// Error is why a relay cannot be done: a Reason (one of the Err* values) and the
// names it concerns. It holds names and descriptions, never a secret value.
type Error struct {
	Reason error
	// Namespace is the downstream namespace.
	Namespace string
	// Store is the store, when the error concerns one.
	Store StoreRef
	// Secret is the local Secret.
	Secret string
	// Remote and RemoteNamespace are the upstream Secret and where it was read.
	Remote, RemoteNamespace string
	// Key is a key of the local Secret, or a property of the remote one.
	Key string
	// Other is a second remote Secret (ErrKeyConflict), or the other source's store
	// (ErrOtherSource; empty when that source is unreadable).
	Other string
	// Size is the data size (ErrTooLarge).
	Size int
	// Detail is what another component said, already free of values: the API
	// server's message, a store's configuration problem, the kind of network failure.
	Detail string
}

// Error renders the reason and the names, for logs; users read webhook.Describe.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Reason.Error())
	add := func(k, v string) {
		if v != "" {
			fmt.Fprintf(&b, " %s=%q", k, v)
		}
	}
	add("namespace", e.Namespace)
	if e.Store.Name != "" {
		add("store", e.Store.String())
	}
	add("secret", e.Secret)
	add("remote", e.Remote)
	add("remoteNamespace", e.RemoteNamespace)
	add("key", e.Key)
	add("other", e.Other)
	if e.Detail != "" {
		b.WriteString(": " + e.Detail)
	}
	return b.String()
}

// Is makes errors.Is(err, ErrX) true for an *Error whose Reason is ErrX.
func (e *Error) Is(target error) bool { return target == e.Reason }

// AsError returns err's *Error, or nil.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}
