package remote

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/transport"
)

// TokenLifetime is how long the ServiceAccount tokens secret-relay requests are
// valid (contract §3, "Other auth methods"): one hour. They are renewed once
// four fifths of it have passed.
const TokenLifetime = time.Hour

// ServiceAccountRef is a downstream ServiceAccount whose tokens a store sends
// upstream, and the audiences they are for.
type ServiceAccountRef struct {
	Namespace, Name string
	Audiences       []string
}

// String is "namespace/name", for messages.
func (r ServiceAccountRef) String() string { return r.Namespace + "/" + r.Name }

func (r ServiceAccountRef) key() string {
	return r.Namespace + "/" + r.Name + "\x00" + strings.Join(r.Audiences, "\x00")
}

// Tokens requests ServiceAccount tokens from the downstream TokenRequest API and
// keeps each in memory only, shared by every store that names the same
// ServiceAccount and audiences, until it is renewed. No token is ever written to
// disk, to a Secret or to a log.
type Tokens struct {
	client kubernetes.Interface
	// lifetime is what is asked for; renewAfter is when a token is renewed.
	lifetime, renewAfter time.Duration

	mu      sync.Mutex
	sources map[string]transport.ResettableTokenSource
}

// NewTokens requests tokens through client, the relay's downstream client, which
// needs create on serviceaccounts/token and on tokenreviews: each new token is
// checked not to be valid on the downstream API server itself.
func NewTokens(client kubernetes.Interface) *Tokens {
	return &Tokens{client: client, lifetime: TokenLifetime, renewAfter: TokenLifetime * 4 / 5,
		sources: map[string]transport.ResettableTokenSource{}}
}

// RenewAfter renews tokens after d (0 keeps four fifths of their lifetime), at
// most their lifetime: tests renew every few seconds, since the API server gives
// no token shorter than ten minutes.
func (t *Tokens) RenewAfter(d time.Duration) {
	if d > 0 {
		t.renewAfter = min(d, t.lifetime)
	}
}

// Source is the token source of ref: tokens cached until their renewal, reviewed
// downstream while in use, and requested again at once after the upstream answered
// 401.
func (t *Tokens) Source(ref ServiceAccountRef) transport.ResettableTokenSource {
	t.mu.Lock()
	defer t.mu.Unlock()
	src, ok := t.sources[ref.key()]
	if !ok {
		src = &accountToken{req: tokenRequester{tokens: t, ref: ref}, now: time.Now}
		t.sources[ref.key()] = src
	}
	return src
}

// first is the token of ref now, within ctx: what a store's client is built with.
func (t *Tokens) first(ctx context.Context, ref ServiceAccountRef) (*oauth2.Token, error) {
	return t.Source(ref).(*accountToken).tokenContext(ctx)
}

// forget drops ref's token: no store names it any more.
func (t *Tokens) forget(ref ServiceAccountRef) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.sources, ref.key())
}

// accountCheckInterval is how often a token in use is reviewed downstream. The
// upstream checks only its signature and expiry, so it would accept the token of a
// ServiceAccount deleted downstream until it expires. The downstream API server
// caches a review's success for 10 s, and the upstream cache asks every 10 s: a
// deletion is noticed within about 20 s (contract §3, "Revoked credentials are
// noticed within 30 s").
const accountCheckInterval = 5 * time.Second

// accountToken is one ServiceAccount's token, cached: renewed when due, dropped
// after the upstream answered 401 (ResetTokenOlderThan), and reviewed downstream
// every accountCheckInterval.
type accountToken struct {
	req tokenRequester
	now func() time.Time

	mu sync.Mutex
	// tok is the token, its Expiry when it is due for renewal; expires is when it
	// really expires, and fetched and checked when it was requested and reviewed.
	tok                       *oauth2.Token
	expires, fetched, checked time.Time
}

// Token is the token for a request about to be sent upstream; oauth2 gives it no
// context, so a renewal is bounded by its own timeout.
func (a *accountToken) Token() (*oauth2.Token, error) { return a.tokenContext(context.Background()) }

// tokenContext is Token within ctx: a review that builds its store's client waits
// for the first token no longer than its own deadline.
func (a *accountToken) tokenContext(ctx context.Context) (*oauth2.Token, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	if a.tok != nil && now.Before(a.tok.Expiry) {
		if now.Sub(a.checked) < accountCheckInterval {
			return a.tok, nil
		}
		valid, err := a.req.valid(ctx, a.tok.AccessToken)
		switch {
		case err != nil: // the downstream did not answer: reviewed next time
			return a.tok, nil
		case !valid:
			a.tok = nil
			return nil, revoked(fmt.Sprintf(
				"the token of ServiceAccount %s is no longer valid downstream (the ServiceAccount was deleted or recreated)", a.req.ref))
		}
		a.checked = now
		return a.tok, nil
	}
	tok, expires, err := a.req.request(ctx, now)
	if err != nil {
		if a.tok != nil && now.Before(a.expires) && !apierrors.IsUnauthorized(err) && !apierrors.IsForbidden(err) {
			return a.tok, nil // a still valid token outlasts a downstream that does not answer
		}
		a.tok = nil
		return nil, err
	}
	a.tok, a.expires, a.fetched, a.checked = tok, expires, now, now
	return tok, nil
}

// ResetTokenOlderThan drops a token requested before t: the upstream answered 401
// to a request that began at t.
func (a *accountToken) ResetTokenOlderThan(t time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.tok != nil && a.fetched.Before(t) {
		a.tok = nil
	}
}

// tokenRequester makes one TokenRequest each time it is asked.
type tokenRequester struct {
	tokens *Tokens
	ref    ServiceAccountRef
}

// tokenTimeout bounds each downstream call for a token.
const tokenTimeout = 10 * time.Second

// request requests a token, at now. Its Expiry is when it is to be renewed, before
// it expires (the second value), so that accountToken renews it then.
func (r tokenRequester) request(ctx context.Context, now time.Time) (*oauth2.Token, time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, tokenTimeout)
	defer cancel()
	seconds := int64(r.tokens.lifetime.Seconds())
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences: slices.Clone(r.ref.Audiences), ExpirationSeconds: &seconds,
	}}
	issued := now
	got, err := r.tokens.client.CoreV1().ServiceAccounts(r.ref.Namespace).CreateToken(ctx, r.ref.Name, req, metav1.CreateOptions{})
	if err != nil {
		return nil, time.Time{}, describeTokenError(r.ref, err)
	}
	// The token goes to whatever server.url says. One this cluster's own API
	// server accepts would let whoever wrote the store act as the ServiceAccount
	// here: refused, whatever its audiences are called.
	ownAPIServer, err := r.authenticated(ctx, got.Status.Token, nil)
	switch {
	case err != nil:
		return nil, time.Time{}, fmt.Errorf("could not check that the token of ServiceAccount %s is not valid on this cluster: %s", r.ref, describeReason(err))
	case ownAPIServer:
		return nil, time.Time{}, fmt.Errorf("the audiences %q of ServiceAccount %s are accepted by this cluster's own API server: refused, since the token would be sent upstream; name an audience only the upstream accepts",
			r.ref.Audiences, r.ref)
	}
	expires := got.Status.ExpirationTimestamp.Time
	if expires.IsZero() {
		expires = issued.Add(r.tokens.lifetime)
	}
	renew := issued.Add(r.tokens.renewAfter)
	if expires.Before(renew) {
		renew = expires // the API server gave less than asked
	}
	return &oauth2.Token{AccessToken: got.Status.Token, TokenType: "Bearer", Expiry: renew}, expires, nil
}

// valid reviews token downstream, for its audiences: false once its ServiceAccount
// is gone.
func (r tokenRequester) valid(ctx context.Context, token string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, tokenTimeout)
	defer cancel()
	return r.authenticated(ctx, token, r.ref.Audiences)
}

// authenticated reviews token downstream for audiences; none means the downstream
// API server's own.
func (r tokenRequester) authenticated(ctx context.Context, token string, audiences []string) (bool, error) {
	review, err := r.tokens.client.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: slices.Clone(audiences)},
	}, metav1.CreateOptions{})
	if err != nil {
		return false, err
	}
	return review.Status.Authenticated, nil
}

// describeTokenError says why a token could not be requested, in words a user can
// act on, and never with the request's content.
func describeTokenError(ref ServiceAccountRef, err error) error {
	switch {
	case apierrors.IsNotFound(err): // its credentials are gone: a refusal, as a 401 is
		return revoked(fmt.Sprintf("ServiceAccount %s not found downstream", ref))
	case apierrors.IsForbidden(err):
		return fmt.Errorf("secret-relay may not request tokens for ServiceAccount %s: install it with serviceAccountAuth.enabled=true (or the kustomize component manifests/components/service-account-auth)", ref)
	default:
		return fmt.Errorf("could not request a token for ServiceAccount %s: %s", ref, describeReason(err))
	}
}

// revokedToken is a ServiceAccount's credentials found gone downstream. It is a
// 401 to whatever asks (apierrors.IsUnauthorized), so that the upstream cache
// treats it as the upstream's refusal, and says itself why.
type revokedToken struct{ *apierrors.StatusError }

func revoked(msg string) error { return revokedToken{apierrors.NewUnauthorized(msg)} }

// RevokedDownstream is why err refused a store's ServiceAccount token before it
// reached the upstream: the ServiceAccount is gone downstream.
func RevokedDownstream(err error) (string, bool) {
	var r revokedToken
	if errors.As(err, &r) {
		return r.ErrStatus.Message, true
	}
	return "", false
}

// describeReason is the API server's reason for err, or that it could not be
// reached.
func describeReason(err error) string {
	if reason := apierrors.ReasonForError(err); reason != "" {
		return string(reason)
	}
	return "the downstream API server could not be reached"
}
