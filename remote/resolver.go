package remote

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/secret-relay/secret-relay/webhook"
)

// Clients builds upstream clients from stores and keeps one per store, so that
// connections are reused across admissions. A store's client is rebuilt when what it
// was built from changes: the store, its token, its certificate or its CA.
type Clients struct {
	refs RefReader

	mu      sync.Mutex
	byStore map[string]storeClient
}

type storeClient struct {
	fingerprint [sha256.Size]byte
	client      kubernetes.Interface
}

// NewClients returns a client cache that reads store references through refs.
func NewClients(refs RefReader) *Clients {
	return &Clients{refs: refs, byStore: map[string]storeClient{}}
}

// For returns the upstream client of a store. Errors are configuration errors.
func (c *Clients) For(ctx context.Context, s *Store) (kubernetes.Interface, error) {
	ep, err := ResolveEndpoint(ctx, c.refs, s)
	if err != nil {
		return nil, err
	}
	fp := ep.fingerprint()
	key := s.String()
	c.mu.Lock()
	defer c.mu.Unlock()
	if sc, ok := c.byStore[key]; ok && sc.fingerprint == fp {
		return sc.client, nil
	}
	cfg, err := ep.RESTConfig()
	if err != nil {
		return nil, &ConfigError{Store: s.String(), Message: err.Error()}
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, &ConfigError{Store: s.String(), Message: err.Error()}
	}
	c.byStore[key] = storeClient{fingerprint: fp, client: client}
	return client, nil
}

// Resolver finds stores for admission and reads upstream Secrets through them.
type Resolver struct {
	stores  *StoreCache
	clients *Clients
	kube    kubernetes.Interface
	// refused is told when the upstream refuses a store's credentials, so that the
	// store's status can be checked again at once.
	refused func(*Store)
}

var _ webhook.StoreResolver = (*Resolver)(nil)

// NewResolver returns a Resolver. refused may be nil.
func NewResolver(stores *StoreCache, clients *Clients, kube kubernetes.Interface, refused func(*Store)) *Resolver {
	if refused == nil {
		refused = func(*Store) {}
	}
	return &Resolver{stores: stores, clients: clients, kube: kube, refused: refused}
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
	client, err := r.clients.For(ctx, store)
	if err != nil {
		return nil, webhook.Denyf("store %s is misconfigured: %v", ref, err)
	}
	return &upstream{client: client, namespace: store.RemoteNamespace(), ref: ref, refused: func() { r.refused(store) }}, nil
}

func (r *Resolver) checkAllowed(ctx context.Context, ns string, store *Store) error {
	var labels map[string]string
	if store.Kind == string(webhook.ClusterSecretStoreKind) && len(store.Spec.Conditions) > 0 {
		nsObj, err := r.kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("could not read namespace %s: %w", ns, err)
		}
		labels = nsObj.Labels
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
	client    kubernetes.Interface
	namespace string
	ref       webhook.StoreRef
	refused   func()
}

// Get reads one upstream Secret and turns failures into what admission needs: a
// denial naming the Secret, or ErrUpstreamUnreachable.
func (u *upstream) Get(ctx context.Context, name string) (*corev1.Secret, error) {
	s, err := u.client.CoreV1().Secrets(u.namespace).Get(ctx, name, metav1.GetOptions{})
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
// refused or reset connection, or a server that says it cannot serve now.
func Unreachable(err error) bool {
	var netErr net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET):
		return true
	case errors.As(err, &netErr) && netErr.Timeout():
		return true
	case apierrors.IsTimeout(err), apierrors.IsServerTimeout(err), apierrors.IsServiceUnavailable(err), apierrors.IsTooManyRequests(err):
		return true
	}
	return false
}
