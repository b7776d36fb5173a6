package remote

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// CheckStep is one step of checking a store (`secret-relay check`): what was
// checked, whether it holds, what was found, and on a failure the fix in one line.
// No step ever holds a credential.
type CheckStep struct {
	Name   string
	OK     bool
	Detail string
	Fix    string
}

// CheckResult is how a check ended: the upstream's user when every step held.
type CheckResult struct {
	User string
	OK   bool
}

// checkTimeout bounds each network step.
const checkTimeout = 10 * time.Second

// Check walks store s from its references to the upstream's answer, one step at a
// time, and stops at the first that fails: the references resolve; for
// serviceAccount auth, a token is minted (its issuer and audiences); the upstream is
// reachable; the CA verifies it; it accepts the credentials, and as which user; that
// user may get, list and watch Secrets in the remote namespace. Each step is given
// to emit as it ends.
func Check(ctx context.Context, s *Store, refs RefReader, tokens *Tokens, emit func(CheckStep)) CheckResult {
	c := checker{s: s, emit: emit}
	ep, ok := c.resolve(ctx, refs, tokens)
	if !ok {
		return CheckResult{}
	}
	u, err := url.Parse(ep.URL)
	if err != nil {
		return c.fail("upstream reachable", "server url is not a valid URL", "fix server.url")
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "443")
	}
	if !c.reachable(ctx, addr) || !c.verifies(ctx, addr, u.Hostname(), ep.CA) {
		return CheckResult{}
	}
	client, err := checkClient(ep)
	if err != nil {
		return c.fail("credentials accepted", err.Error(), "fix the store's auth")
	}
	user, ok := c.accepted(ctx, client, ep)
	if !ok {
		return CheckResult{}
	}
	if !c.mayRead(ctx, client, user) {
		return CheckResult{}
	}
	return CheckResult{User: user, OK: true}
}

type checker struct {
	s    *Store
	emit func(CheckStep)
}

func (c checker) pass(name, detail string) { c.emit(CheckStep{Name: name, OK: true, Detail: detail}) }

func (c checker) fail(name, detail, fix string) CheckResult {
	c.emit(CheckStep{Name: name, Detail: detail, Fix: fix})
	return CheckResult{}
}

// resolve is the first step, and for serviceAccount auth the token's.
func (c checker) resolve(ctx context.Context, refs RefReader, tokens *Tokens) (Endpoint, bool) {
	ep, err := ResolveEndpoint(ctx, refs, c.s)
	if err != nil {
		c.fail("references resolve", ConfigMessage(err), "fix the store, or create what it references")
		return Endpoint{}, false
	}
	c.pass("references resolve", fmt.Sprintf("server %s, remote namespace %q, %s", ep.URL, c.s.RemoteNamespace(), describeAuth(ep)))
	if ep.ServiceAccount == nil {
		return ep, true
	}
	ep.TokenSource = tokens.Source(*ep.ServiceAccount)
	tok, err := tokens.first(ctx, *ep.ServiceAccount)
	if err != nil {
		c.fail("token minted", err.Error(), "create the ServiceAccount, or install secret-relay with serviceAccountAuth.enabled=true")
		return Endpoint{}, false
	}
	claims := tokenClaims(tok.AccessToken)
	c.pass("token minted", fmt.Sprintf("for ServiceAccount %s: issuer %s, audiences %q, expires %s",
		ep.ServiceAccount, claims.Issuer, claims.Audiences, claims.Expires.UTC().Format(time.RFC3339)))
	return ep, true
}

func describeAuth(ep Endpoint) string {
	switch {
	case ep.ServiceAccount != nil:
		return fmt.Sprintf("tokens of ServiceAccount %s for audiences %q", ep.ServiceAccount, ep.ServiceAccount.Audiences)
	case ep.Token != "":
		return "a bearer token"
	default:
		return "a client certificate"
	}
}

func (c checker) reachable(ctx context.Context, addr string) bool {
	d := net.Dialer{Timeout: checkTimeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		c.fail("upstream reachable", fmt.Sprintf("could not connect to %s: %s", addr, describeDial(err)),
			"check server.url, and that this network (the relay's pods) can reach that address")
		return false
	}
	conn.Close()
	c.pass("upstream reachable", addr)
	return true
}

func describeDial(err error) string {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err.Error()
	}
	return err.Error()
}

func (c checker) verifies(ctx context.Context, addr, host string, ca []byte) bool {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: checkTimeout}, Config: &tls.Config{RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS12}}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		c.fail("CA verifies the upstream", err.Error(),
			"caBundle or caProvider must hold the CA that signed the upstream's serving certificate, for the name in server.url")
		return false
	}
	conn.Close()
	c.pass("CA verifies the upstream", "")
	return true
}

// accepted asks the upstream who the credentials are (a SelfSubjectReview).
func (c checker) accepted(ctx context.Context, client kubernetes.Interface, ep Endpoint) (string, bool) {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	review, err := client.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	switch {
	case apierrors.IsUnauthorized(err):
		fix := "the credentials are expired, revoked or for another cluster: give the store valid ones"
		if exp := tokenClaims(ep.Token).Expires; expired(exp) {
			fix = fmt.Sprintf("the token expired at %s: give the store a new one", exp.UTC().Format(time.RFC3339))
		}
		if ep.ServiceAccount != nil {
			fix = fmt.Sprintf("the upstream's AuthenticationConfiguration must trust this cluster's issuer for audiences %q", ep.ServiceAccount.Audiences)
		}
		c.fail("credentials accepted", "the upstream answered 401 Unauthorized", fix)
		return "", false
	case apierrors.IsForbidden(err), apierrors.IsNotFound(err):
		// Accepted, but the upstream does not say as whom: the access reviews
		// below still tell what the credentials may do.
		c.pass("credentials accepted", "the upstream does not say as which user (selfsubjectreviews: "+string(apierrors.ReasonForError(err))+")")
		return "", true
	case err != nil:
		c.fail("credentials accepted", DescribeUpstreamError(err), "check that the upstream is a Kubernetes API server and answers")
		return "", false
	}
	user := review.Status.UserInfo.Username
	c.pass("credentials accepted", "as user "+user)
	return user, true
}

// mayRead reviews get, list and watch on Secrets in the remote namespace.
func (c checker) mayRead(ctx context.Context, client UpstreamClient, user string) bool {
	ns := c.s.RemoteNamespace()
	var missing []string
	for _, verb := range []string{"get", "list", "watch"} {
		ctx, cancel := context.WithTimeout(ctx, checkTimeout)
		allowed, err := CheckAccess(ctx, client, ns, verb)
		cancel()
		switch {
		case err != nil:
			c.fail("may read Secrets", "could not review access: "+DescribeUpstreamError(err), "allow the user to create selfsubjectaccessreviews (system:basic-user does)")
			return false
		case !allowed:
			missing = append(missing, verb)
		}
	}
	who := "the store's credentials"
	if user != "" {
		who = "user " + user
	}
	if len(missing) > 0 {
		c.fail("may read Secrets", fmt.Sprintf("403 Forbidden: %s may not %s Secrets in namespace %q upstream", who, strings.Join(missing, ", "), ns),
			fmt.Sprintf("grant %s get, list and watch on secrets in namespace %q upstream (a Role and a RoleBinding); list and watch keep copies fresh", who, ns))
		return false
	}
	c.pass("may read Secrets", fmt.Sprintf("%s may get, list and watch Secrets in namespace %q", who, ns))
	return true
}

func checkClient(ep Endpoint) (kubernetes.Interface, error) {
	cfg, err := ep.RESTConfig()
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(cfg)
}

// expired reports whether a token's expiry, when it has one, has passed.
func expired(expires time.Time) bool { return !expires.IsZero() && time.Now().After(expires) }

// jwtClaims are what a check shows of a token: never the token.
type jwtClaims struct {
	Issuer    string
	Audiences []string
	Expires   time.Time
}

// tokenClaims reads, without verifying, the claims of a JWT that secret-relay
// itself was just given: what the upstream will verify.
func tokenClaims(token string) jwtClaims {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return jwtClaims{}
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return jwtClaims{}
	}
	var raw struct {
		Iss string          `json:"iss"`
		Aud json.RawMessage `json:"aud"`
		Exp int64           `json:"exp"`
	}
	if json.Unmarshal(payload, &raw) != nil {
		return jwtClaims{}
	}
	out := jwtClaims{Issuer: raw.Iss}
	if raw.Exp > 0 {
		out.Expires = time.Unix(raw.Exp, 0)
	}
	if json.Unmarshal(raw.Aud, &out.Audiences) != nil {
		var one string
		if json.Unmarshal(raw.Aud, &one) == nil {
			out.Audiences = []string{one}
		}
	}
	return out
}
