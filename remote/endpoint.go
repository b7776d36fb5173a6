package remote

import (
	"crypto/sha256"
	"errors"
	"fmt"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/transport"

	"github.com/secret-relay/secret-relay/relay"
)

// Client rate limits for one upstream store. They are set explicitly: client-go's
// defaults (5 QPS, burst 10) would throttle a burst of admissions. Upstream reads
// come from admissions the downstream API server has already let in, one per
// distinct cold Secret (concurrent misses share a read, warm ones make none), so the
// bucket must hold a burst of pods: 600 pods at once, each wanting its own new
// Secret, found 298 refused at 50/100, the client waiting past the admission
// deadline while the upstream answered each GET in milliseconds. The upstream
// protects itself with priority and fairness: a 429 makes client-go wait its
// Retry-After and retry, and a read that still cannot finish in time is a
// secret-relay: denial the ReplicaSet retries. The limit stays finite so that one
// busy downstream cluster cannot take more than its share of an upstream.
const (
	UpstreamQPS   = 500
	UpstreamBurst = 1000
)

// Endpoint is everything a store tells us about reaching an upstream API server,
// already resolved from the Secrets and ConfigMaps it references.
type Endpoint struct {
	// URL is the API server address; it must be https.
	URL string
	// CA is the PEM bundle that verifies the server.
	CA []byte
	// Token is the bearer token, when the store authenticates with a token.
	Token string
	// ClientCert and ClientKey are the PEM client certificate and key, when the store
	// authenticates with a certificate.
	ClientCert []byte
	ClientKey  []byte
	// ServiceAccount, when the store authenticates with tokens requested for a
	// downstream ServiceAccount, names it; TokenSource then supplies the tokens.
	// Only the former identifies the endpoint: a renewed token is the same one.
	ServiceAccount *ServiceAccountRef
	TokenSource    transport.ResettableTokenSource
}

// RESTConfig builds a client configuration from the endpoint alone: no kubeconfig,
// no in-cluster defaults, nothing a store does not say.
func (e Endpoint) RESTConfig() (*rest.Config, error) {
	if err := checkServerURL(e.URL); err != nil {
		return nil, fmt.Errorf("server url %w", err) // never the URL: it may carry credentials
	}
	if len(e.CA) == 0 {
		return nil, errors.New("no CA bundle for the server")
	}
	hasToken := e.Token != ""
	hasCert := len(e.ClientCert) > 0 || len(e.ClientKey) > 0
	hasAccount := e.TokenSource != nil
	switch methods := btoi(hasToken) + btoi(hasCert) + btoi(hasAccount); {
	case methods > 1:
		return nil, errors.New("more than one of token, client certificate and ServiceAccount given: use exactly one auth method")
	case methods == 0:
		return nil, errors.New("no credentials: give a bearer token, a client certificate or a ServiceAccount")
	case hasCert && (len(e.ClientCert) == 0 || len(e.ClientKey) == 0):
		return nil, errors.New("client certificate auth needs both a certificate and a key")
	}
	cfg := &rest.Config{
		Host:        e.URL,
		BearerToken: e.Token,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   e.CA,
			CertData: e.ClientCert,
			KeyData:  e.ClientKey,
		},
		UserAgent: "secret-relay",
		QPS:       UpstreamQPS,
		Burst:     UpstreamBurst,
	}
	if hasAccount {
		cfg.Wrap(transport.ResettableTokenSourceWrapTransport(e.TokenSource))
	}
	return cfg, nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// fingerprint identifies an endpoint and its credentials, so that a client is
// rebuilt exactly when something it was built from changes.
func (e Endpoint) fingerprint() [sha256.Size]byte {
	h := sha256.New()
	var account []byte
	if e.ServiceAccount != nil {
		account = []byte(e.ServiceAccount.key())
	}
	relay.WriteLengthDelimited(h, []byte(e.URL), e.CA, []byte(e.Token), e.ClientCert, e.ClientKey, account)
	var sum [sha256.Size]byte
	copy(sum[:], h.Sum(nil))
	return sum
}
