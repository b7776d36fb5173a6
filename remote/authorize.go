package remote

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/secret-relay/secret-relay/webhook"
)

// The reasons Authorize refuses, for errors.Is. Every refusal is also a
// webhook.DenyError that says what is wrong in the user's terms.
var (
	// ErrNamespaceNotFound means the namespace does not exist, or is being deleted.
	ErrNamespaceNotFound = errors.New("namespace not found")
	// ErrStoreNotFound means the store does not exist: no SecretStore of that name
	// in the namespace, or no ClusterSecretStore of that name.
	ErrStoreNotFound = errors.New("store not found")
	// ErrNotAllowed means the store exists and the namespace may not use it.
	ErrNotAllowed = errors.New("namespace may not use the store")
)

// NamespaceLookup returns a downstream Namespace, or an error for which
// apierrors.IsNotFound holds when it does not exist.
type NamespaceLookup func(ctx context.Context, name string) (*corev1.Namespace, error)

// Authorizer decides whether a namespace may read through a store now. It is the
// one place that decides it: admission (Resolver) and every background write (the
// sync controller) ask it, and an upstream cache can only be had with the Grant it
// returns (Upstreams.For), so that no path can read upstream for a namespace
// without asking first.
type Authorizer struct {
	stores     *StoreCache
	namespaces NamespaceLookup
}

// NewAuthorizer returns an Authorizer over the store cache and namespaces.
func NewAuthorizer(stores *StoreCache, namespaces NamespaceLookup) *Authorizer {
	return &Authorizer{stores: stores, namespaces: namespaces}
}

// Grant says that a namespace may read through a store: Authorize found so a moment
// ago. Nothing outside this file makes one. Do not keep it: ask again for the next
// read, since stores, conditions and namespace labels change.
type Grant struct {
	store     *Store
	namespace string
}

// Store is the store the grant is for; it is shared and must not be modified.
func (g *Grant) Store() *Store { return g.store }

// Namespace is the downstream namespace the grant is for.
func (g *Grant) Namespace() string { return g.namespace }

// Authorize returns a Grant when namespace ns may read through the store ref names:
// the namespace exists and is not being deleted, the store exists (a SecretStore in
// ns itself, or a ClusterSecretStore), and a ClusterSecretStore's conditions admit
// ns. A refusal is a webhook.DenyError whose cause is ErrNamespaceNotFound,
// ErrStoreNotFound, ErrNotAllowed or ErrInvalidStoreConfiguration; any other error
// is a failure to find out, such as a downstream read that timed out.
func (a *Authorizer) Authorize(ctx context.Context, ns string, ref webhook.StoreRef) (*Grant, error) {
	nsObj, err := a.namespaces(ctx, ns)
	switch {
	case apierrors.IsNotFound(err):
		return nil, webhook.DenyBecause(ErrNamespaceNotFound, "namespace %q not found", ns)
	case err != nil:
		return nil, fmt.Errorf("could not read namespace %s: %w", ns, err)
	case nsObj.DeletionTimestamp != nil || nsObj.Status.Phase == corev1.NamespaceTerminating:
		return nil, webhook.DenyBecause(ErrNamespaceNotFound, "namespace %q is being deleted", ns)
	}
	store, err := a.stores.Get(ctx, ns, ref)
	if err != nil {
		return nil, err
	}
	ok, err := store.AllowsNamespace(ns, nsObj.Labels)
	if err != nil {
		return nil, webhook.DenyBecause(ErrInvalidStoreConfiguration, "store %s is misconfigured: %s", ref, configMessage(err))
	}
	if !ok {
		return nil, webhook.DenyBecause(ErrNotAllowed, "namespace %q may not use store %s", ns, ref)
	}
	return &Grant{store: store, namespace: ns}, nil
}

// Refused reports whether err is Authorize's refusal, as opposed to a failure to
// decide.
func Refused(err error) bool {
	return errors.Is(err, ErrNamespaceNotFound) || errors.Is(err, ErrStoreNotFound) ||
		errors.Is(err, ErrNotAllowed) || errors.Is(err, ErrInvalidStoreConfiguration)
}

// configMessage is what a ConfigError says is wrong, without the store's name, or
// err's text for any other error.
func configMessage(err error) string {
	var cfgErr *ConfigError
	if errors.As(err, &cfgErr) {
		return cfgErr.Message
	}
	return err.Error()
}
