package webhook

import (
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"

	"github.com/secret-relay/secret-relay/relay"
)

// This file is the one place that words relay's typed errors for people: the
// denials admission returns and, through Describe, the events the controllers
// write. No message ever holds a secret value: errors carry names only.

// Describe words err for a user, without the "secret-relay: " prefix: a relay.Error
// by its reason and the names it carries, a DenyError as it is, anything else by its
// own text.
func Describe(err error) string {
	var deny *DenyError
	if errors.As(err, &deny) {
		return deny.msg
	}
	e := relay.AsError(err)
	if e == nil {
		return err.Error()
	}
	switch e.Reason {
	case relay.ErrNamespaceNotFound:
		return fmt.Sprintf("namespace %q not found", e.Namespace)
	case relay.ErrNamespaceTerminating:
		return fmt.Sprintf("namespace %q is being deleted", e.Namespace)
	case relay.ErrStoreNotFound:
		switch e.Store.Kind {
		case relay.SecretStoreKind:
			return fmt.Sprintf("store %s not found in namespace %q", e.Store, e.Namespace)
		case relay.ClusterSecretStoreKind:
			return fmt.Sprintf("store %s not found", e.Store)
		default:
			return fmt.Sprintf("unknown store kind %q", e.Store.Kind)
		}
	case relay.ErrNotAllowed:
		return fmt.Sprintf("namespace %q may not use store %s", e.Namespace, e.Store)
	case relay.ErrStoreMisconfigured:
		return fmt.Sprintf("store %s is misconfigured: %s", e.Store, e.Detail)
	case relay.ErrRemoteNotFound:
		if e.RemoteNamespace == "" {
			return fmt.Sprintf("remote Secret %q not found", e.Remote)
		}
		return fmt.Sprintf("remote Secret %q not found in namespace %q of store %s", e.Remote, e.RemoteNamespace, e.Store.Name)
	case relay.ErrRefused:
		return fmt.Sprintf("upstream refused to read Secret %q in namespace %q of store %s (%s): check the store's credentials and the upstream Role",
			e.Remote, e.RemoteNamespace, e.Store.Name, e.Detail)
	case relay.ErrUnreachable:
		if e.Secret == "" {
			return fmt.Sprintf("upstream of store %s is unreachable: %s", e.Store, e.Detail)
		}
		return fmt.Sprintf("upstream of store %s is unreachable and there is no copy of Secret %q in namespace %q to fall back on: %s",
			e.Store, e.Secret, e.Namespace, e.Detail)
	case relay.ErrUpstream:
		return fmt.Sprintf("could not read remote Secret %q in namespace %q of store %s: %s", e.Remote, e.RemoteNamespace, e.Store.Name, e.Detail)
	case relay.ErrPropertyNotFound:
		return fmt.Sprintf("remote Secret %q has no key %q", e.Remote, e.Key)
	case relay.ErrNoProperty:
		return fmt.Sprintf("local Secret %q: key %q names no property of remote Secret %q", e.Secret, e.Key, e.Remote)
	case relay.ErrPropertyOnDataFrom:
		return fmt.Sprintf("local Secret %q: dataFrom of remote Secret %q cannot name a property", e.Secret, e.Remote)
	case relay.ErrNoEntries:
		return fmt.Sprintf("local Secret %q has no data or dataFrom entries", e.Secret)
	case relay.ErrServiceAccountToken:
		return fmt.Sprintf("remote Secret %q is a service-account token; secret-relay does not relay tokens", e.Remote)
	case relay.ErrKeyConflict:
		return fmt.Sprintf("local Secret %q: key %q comes from both remote Secret %q and remote Secret %q", e.Secret, e.Key, e.Remote, e.Other)
	case relay.ErrTooLarge:
		return fmt.Sprintf("local Secret %q would hold %d bytes of data, over the 1 MiB limit of a Secret (%d bytes); relay fewer keys into it",
			e.Secret, e.Size, corev1.MaxSecretSize)
	case relay.ErrNotManaged:
		return fmt.Sprintf("Secret %q already exists in namespace %q and is not managed by secret-relay; it was left untouched", e.Secret, e.Namespace)
	case relay.ErrOtherSource:
		from := e.Other
		if from == "" {
			from = "its " + relay.AnnotationSource + " annotation is unreadable"
		}
		return fmt.Sprintf("Secret %q in namespace %q is relayed from a different source (%s); remove it or rename the item", e.Secret, e.Namespace, from)
	case relay.ErrReadFailed:
		return fmt.Sprintf("could not read Secret %q in namespace %q: %s", e.Secret, e.Namespace, e.Detail)
	case relay.ErrWriteFailed:
		return fmt.Sprintf("could not write Secret %q in namespace %q: %s", e.Secret, e.Namespace, e.Detail)
	case relay.ErrKeyNotLoaded:
		return "this replica is starting: its token key is not loaded yet; retry in a moment"
	default:
		return e.Error()
	}
}

// denial returns the message of a denial, with its "secret-relay: " prefix, when err
// is one: a DenyError, or a relay.Error. Any other error is a fault of secret-relay.
func denial(err error) (string, bool) {
	var deny *DenyError
	if errors.As(err, &deny) || relay.AsError(err) != nil {
		return DenyPrefix + Describe(err), true
	}
	return "", false
}
