package remote

import (
	"context"
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

// Source is the token source of ref: tokens cached until their renewal, and
// requested again at once after the upstream answered 401.
func (t *Tokens) Source(ref ServiceAccountRef) transport.ResettableTokenSource {
	t.mu.Lock()
	defer t.mu.Unlock()
	src, ok := t.sources[ref.key()]
	if !ok {
		src = transport.NewCachedTokenSource(tokenRequester{tokens: t, ref: ref})
		t.sources[ref.key()] = src
	}
	return src
}

// tokenRequester makes one TokenRequest each time it is asked.
type tokenRequester struct {
	tokens *Tokens
	ref    ServiceAccountRef
}

// Token requests a token. Its Expiry is when it is to be renewed, before it
// expires, so that the cache above renews it then.
func (r tokenRequester) Token() (*oauth2.Token, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	seconds := int64(r.tokens.lifetime.Seconds())
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences: slices.Clone(r.ref.Audiences), ExpirationSeconds: &seconds,
	}}
	issued := time.Now()
	got, err := r.tokens.client.CoreV1().ServiceAccounts(r.ref.Namespace).CreateToken(ctx, r.ref.Name, req, metav1.CreateOptions{})
	if err != nil {
		return nil, describeTokenError(r.ref, err)
	}
	// The token goes to whatever server.url says. One this cluster's own API
	// server accepts would let whoever wrote the store act as the ServiceAccount
	// here: refused, whatever its audiences are called.
	review, err := r.tokens.client.AuthenticationV1().TokenReviews().Create(ctx,
		&authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: got.Status.Token}}, metav1.CreateOptions{})
	switch {
	case err != nil:
		return nil, fmt.Errorf("could not check that the token of ServiceAccount %s is not valid on this cluster: %s", r.ref, describeReason(err))
	case review.Status.Authenticated:
		return nil, fmt.Errorf("the audiences %q of ServiceAccount %s are accepted by this cluster's own API server: refused, since the token would be sent upstream; name an audience only the upstream accepts",
			r.ref.Audiences, r.ref)
	}
	renew := issued.Add(r.tokens.renewAfter)
	if expires := got.Status.ExpirationTimestamp.Time; !expires.IsZero() && expires.Before(renew) {
		renew = expires // the API server gave less than asked
	}
	return &oauth2.Token{AccessToken: got.Status.Token, TokenType: "Bearer", Expiry: renew}, nil
}

// describeTokenError says why a token could not be requested, in words a user can
// act on, and never with the request's content.
func describeTokenError(ref ServiceAccountRef, err error) error {
	switch {
	case apierrors.IsNotFound(err):
		return fmt.Errorf("ServiceAccount %s not found downstream", ref)
	case apierrors.IsForbidden(err):
		return fmt.Errorf("secret-relay may not request tokens for ServiceAccount %s: install it with serviceAccountAuth.enabled=true (or the kustomize component manifests/components/service-account-auth)", ref)
	default:
		return fmt.Errorf("could not request a token for ServiceAccount %s: %s", ref, describeReason(err))
	}
}

// describeReason is the API server's reason for err, or that it could not be
// reached.
func describeReason(err error) string {
	if reason := apierrors.ReasonForError(err); reason != "" {
		return string(reason)
	}
	return "the downstream API server could not be reached"
}
