package remote

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"syscall"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	utilnet "k8s.io/apimachinery/pkg/util/net"

	"github.com/secret-relay/secret-relay/relay"
)

// Resolver finds stores for admission and reads upstream Secrets through them.
type Resolver struct {
	authz     *Authorizer
	upstreams *Upstreams
}

// NewResolver returns a Resolver that asks authz who may use which store.
func NewResolver(authz *Authorizer, upstreams *Upstreams) *Resolver {
	return &Resolver{authz: authz, upstreams: upstreams}
}

// Resolve returns a source for the store ref names, as seen from namespace ns. The
// namespace must be allowed to use the store before anything upstream is touched.
func (r *Resolver) Resolve(ctx context.Context, ns string, ref relay.StoreRef) (relay.SecretSource, error) {
	grant, err := r.authz.Authorize(ctx, ns, ref)
	if err != nil {
		return nil, err
	}
	c, err := r.upstreams.For(ctx, grant)
	if err != nil {
		return nil, err
	}
	return &upstream{cache: c, namespace: grant.Store().RemoteNamespace(), ref: ref}, nil
}

var _ relay.SecretSource = (*upstream)(nil)

// upstream reads Secrets from one store's remote namespace.
type upstream struct {
	cache     *Cache
	namespace string
	ref       relay.StoreRef
}

// Get reads one upstream Secret and turns failures into what admission needs: a
// relay.Error that names the Secret and says why.
func (u *upstream) Get(ctx context.Context, name string) (*relay.Remote, error) {
	s, err := u.cache.Get(ctx, name)
	if err == nil {
		return s, nil
	}
	e := &relay.Error{Store: u.ref, Remote: name, RemoteNamespace: u.namespace}
	switch {
	case apierrors.IsNotFound(err):
		e.Reason = relay.ErrRemoteNotFound
	case apierrors.IsUnauthorized(err), apierrors.IsForbidden(err):
		u.cache.refused()
		e.Reason, e.Detail = relay.ErrRefused, string(apierrors.ReasonForError(err))
	case Unreachable(err):
		e.Reason, e.Detail = relay.ErrUnreachable, DescribeUpstreamError(err)
	default:
		e.Reason, e.Detail = relay.ErrUpstream, DescribeUpstreamError(err)
	}
	return nil, e
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
	case utilnet.IsProbableEOF(err), utilnet.IsHTTP2ConnectionLost(err), http2ConnectionClosed(err):
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

// DescribeUpstreamError says why an upstream call failed in words that stay the same
// from one attempt to the next: no client port, no request id, no URL of the call.
// A store's status holds it, and is written only when it changes.
func DescribeUpstreamError(err error) string {
	var (
		opErr  *net.OpError
		status apierrors.APIStatus
		urlErr *url.Error
	)
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timed out"
	case errors.As(err, &status):
		st := status.Status()
		return fmt.Sprintf("%d %s: %s", st.Code, st.Reason, st.Message)
	case certificateProblem(err):
		return "TLS: " + innermost(err).Error()
	case errors.As(err, &opErr):
		if opErr.Timeout() {
			return "timed out"
		}
		// "connect: connection refused", "read: connection reset by peer": the
		// addresses the OpError adds are what changes between attempts.
		return innermost(opErr.Err).Error()
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "the connection was closed before an answer"
	case errors.As(err, &urlErr):
		if urlErr.Timeout() {
			return "timed out"
		}
		return innermost(urlErr.Err).Error()
	default:
		return innermost(err).Error()
	}
}

// innermost is the last error of err's Unwrap chain whose text says something: the
// syscall error under an OpError, the x509 error under a TLS one.
func innermost(err error) error {
	for {
		next := errors.Unwrap(err)
		if next == nil || next.Error() == "" {
			return err
		}
		if _, ok := next.(syscall.Errno); ok {
			// "connect: connection refused" says more than "connection refused".
			return err
		}
		err = next
	}
}

// http2ConnectionClosed reports whether an HTTP/2 connection was closed under a
// request, as when the transport drops a broken connection: client-go returns it
// unwrapped when it happens while the response body is read, so that only its text
// tells.
func http2ConnectionClosed(err error) bool {
	return strings.Contains(err.Error(), "http2: client connection force closed")
}
