package remote

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"syscall"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	utilnet "k8s.io/apimachinery/pkg/util/net"

	"github.com/secret-relay/secret-relay/webhook"
)

// Resolver finds stores for admission and reads upstream Secrets through them.
type Resolver struct {
	stores     *StoreCache
	upstreams  *Upstreams
	namespaces NamespaceLabels
	// refused is told when the upstream refuses a store's credentials, so that the
	// store's status can be checked again at once.
	refused func(*Store)
}

var _ webhook.StoreResolver = (*Resolver)(nil)

// NamespaceLabels returns a downstream namespace's labels, for ClusterSecretStore
// conditions with a namespaceSelector.
type NamespaceLabels func(ctx context.Context, ns string) (map[string]string, error)

// NewResolver returns a Resolver. refused may be nil.
func NewResolver(stores *StoreCache, upstreams *Upstreams, namespaces NamespaceLabels, refused func(*Store)) *Resolver {
	if refused == nil {
		refused = func(*Store) {}
	}
	return &Resolver{stores: stores, upstreams: upstreams, namespaces: namespaces, refused: refused}
}

// Resolve returns a source for the store ref names, as seen from namespace ns.
func (r *Resolver) Resolve(ctx context.Context, ns string, ref webhook.StoreRef) (webhook.SecretSource, error) {
	store, err := r.stores.Get(ctx, ns, ref)
	if err != nil {
		return nil, err
	}
	if err := r.checkAllowed(ctx, ns, store); err != nil {
		return nil, err
	}
	c, err := r.upstreams.For(ctx, store)
	if err != nil {
		return nil, webhook.Denyf("store %s is misconfigured: %v", ref, err)
	}
	return &upstream{cache: c, namespace: store.RemoteNamespace(), ref: ref, refused: func() { r.refused(store) }}, nil
}

func (r *Resolver) checkAllowed(ctx context.Context, ns string, store *Store) error {
	var labels map[string]string
	if store.Kind == string(webhook.ClusterSecretStoreKind) && len(store.Spec.Conditions) > 0 {
		var err error
		if labels, err = r.namespaces(ctx, ns); err != nil {
			return fmt.Errorf("could not read namespace %s: %w", ns, err)
		}
	}
	ok, err := store.AllowsNamespace(ns, labels)
	if err != nil {
		return webhook.Denyf("store %s/%s is misconfigured: %v", store.Kind, store.Name, err)
	}
	if !ok {
		return webhook.Denyf("namespace %q may not use store %s/%s", ns, store.Kind, store.Name)
	}
	return nil
}

// upstream reads Secrets from one store's remote namespace.
type upstream struct {
	cache     *upstreamCache
	namespace string
	ref       webhook.StoreRef
	refused   func()
}

// Get reads one upstream Secret and turns failures into what admission needs: a
// denial naming the Secret, or ErrUpstreamUnreachable.
func (u *upstream) Get(ctx context.Context, name string) (*corev1.Secret, error) {
	s, err := u.cache.Get(ctx, name)
	switch {
	case err == nil:
		return s, nil
	case apierrors.IsNotFound(err):
		return nil, webhook.Denyf("remote Secret %q not found in namespace %q of store %s", name, u.namespace, u.ref.Name)
	case apierrors.IsUnauthorized(err), apierrors.IsForbidden(err):
		u.refused()
		return nil, webhook.Denyf("upstream refused to read Secret %q in namespace %q of store %s (%s): check the store's credentials and the upstream Role",
			name, u.namespace, u.ref.Name, apierrors.ReasonForError(err))
	case Unreachable(err):
		return nil, fmt.Errorf("%w: store %s: %v", webhook.ErrUpstreamUnreachable, u.ref.Name, err)
	default:
		return nil, webhook.Denyf("could not read remote Secret %q in namespace %q of store %s: %v", name, u.namespace, u.ref.Name, err)
	}
}

// Unreachable reports whether err means the upstream did not answer: a timeout, a
// request that got no response (refused, reset or dropped connection, one closed by
// the transport), or a server that says it cannot serve now. A failed certificate
// check either way is not: it is a configuration error.
func Unreachable(err error) bool {
	var (
		netErr net.Error
		urlErr *url.Error
	)
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET):
		return true
	case errors.As(err, &netErr) && netErr.Timeout():
		return true
	case utilnet.IsProbableEOF(err), utilnet.IsHTTP2ConnectionLost(err):
		return true
	case errors.As(err, &urlErr):
		return !certificateProblem(urlErr.Err)
	case apierrors.IsTimeout(err), apierrors.IsServerTimeout(err), apierrors.IsServiceUnavailable(err), apierrors.IsTooManyRequests(err):
		return true
	}
	return false
}

// certificateProblem reports whether a request failed on a certificate: the
// upstream's, which the store does not trust, or the store's own, which the upstream
// refused during the handshake.
func certificateProblem(err error) bool {
	var (
		unknownAuthority x509.UnknownAuthorityError
		hostname         x509.HostnameError
		invalid          x509.CertificateInvalidError
		verification     *tls.CertificateVerificationError
		alert            tls.AlertError
	)
	return errors.As(err, &unknownAuthority) || errors.As(err, &hostname) || errors.As(err, &invalid) ||
		errors.As(err, &verification) || errors.As(err, &alert)
}
