package remote

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"

	"github.com/secret-relay/secret-relay/relay"
)

// NamespaceLookup returns a downstream Namespace, or an error for which
// apierrors.IsNotFound holds when it does not exist.
type NamespaceLookup func(ctx context.Context, name string) (*corev1.Namespace, error)

// NamespacesFrom looks namespaces up in lister, and one created a moment ago, which
// the lister's informer has not seen yet, in the API.
func NamespacesFrom(lister corelisters.NamespaceLister, kube kubernetes.Interface) NamespaceLookup {
	return func(ctx context.Context, name string) (*corev1.Namespace, error) {
		ns, err := lister.Get(name)
		if apierrors.IsNotFound(err) {
			return kube.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
		}
		return ns, err
	}
}

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
// ns. A refusal is a relay.Error with the reason ErrNamespaceNotFound,
// ErrNamespaceTerminating, ErrStoreNotFound, ErrNotAllowed or ErrStoreMisconfigured;
// any other error is a failure to find out, such as a downstream read that timed out.
func (a *Authorizer) Authorize(ctx context.Context, ns string, ref relay.StoreRef) (*Grant, error) {
	refuse := func(reason error, detail string) error {
		return &relay.Error{Reason: reason, Namespace: ns, Store: ref, Detail: detail}
	}
	nsObj, err := a.namespaces(ctx, ns)
	switch {
	case apierrors.IsNotFound(err):
		return nil, refuse(relay.ErrNamespaceNotFound, "")
	case err != nil:
		return nil, fmt.Errorf("could not read namespace %s: %w", ns, err)
	case nsObj.DeletionTimestamp != nil || nsObj.Status.Phase == corev1.NamespaceTerminating:
		return nil, refuse(relay.ErrNamespaceTerminating, "")
	}
	store, err := a.stores.Get(ctx, ns, ref)
	if err != nil {
		return nil, err
	}
	ok, err := store.AllowsNamespace(ns, nsObj.Labels)
	if err != nil {
		return nil, refuse(relay.ErrStoreMisconfigured, ConfigMessage(err))
	}
	if !ok {
		return nil, refuse(relay.ErrNotAllowed, "")
	}
	return &Grant{store: store, namespace: ns}, nil
}

// Refused reports whether err is Authorize's refusal, as opposed to a failure to
// decide.
func Refused(err error) bool {
	e := relay.AsError(err)
	if e == nil {
		return false
	}
	switch e.Reason {
	case relay.ErrNamespaceNotFound, relay.ErrNamespaceTerminating, relay.ErrStoreNotFound, relay.ErrNotAllowed, relay.ErrStoreMisconfigured:
		return true
	}
	return false
}
