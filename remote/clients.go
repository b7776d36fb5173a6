package remote

import (
	"context"
	"crypto/sha256"
	"fmt"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	authorizationv1client "k8s.io/client-go/kubernetes/typed/authorization/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/flowcontrol"

	"github.com/secret-relay/secret-relay/relay"
)

// UpstreamClient is the part of the Kubernetes API secret-relay calls upstream: Secrets,
// and reviews of its own access. A kubernetes.Interface is one, a fake clientset in
// tests; the client of a store is only this (see NewUpstreamClient).
type UpstreamClient interface {
	CoreV1() corev1client.CoreV1Interface
	AuthorizationV1() authorizationv1client.AuthorizationV1Interface
}

// upstreamClient is the two API groups of an UpstreamClient, sharing one HTTP client
// and one rate limiter.
type upstreamClient struct {
	core  *corev1client.CoreV1Client
	authz *authorizationv1client.AuthorizationV1Client
}

func (c upstreamClient) CoreV1() corev1client.CoreV1Interface { return c.core }
func (c upstreamClient) AuthorizationV1() authorizationv1client.AuthorizationV1Interface {
	return c.authz
}

// NewUpstreamClient builds the client of a store from cfg, as kubernetes.NewForConfig
// would but for the two groups it uses: a whole clientset builds a REST client for
// each of some fifty API groups, about 45 KB per store, which at 100 stores was more
// than a tenth of the relay's heap.
func NewUpstreamClient(cfg *rest.Config) (UpstreamClient, error) {
	cfg = rest.CopyConfig(cfg)
	if cfg.RateLimiter == nil && cfg.QPS > 0 {
		cfg.RateLimiter = flowcontrol.NewTokenBucketRateLimiter(cfg.QPS, cfg.Burst)
	}
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	core, err := corev1client.NewForConfigAndClient(cfg, httpClient)
	if err != nil {
		return nil, err
	}
	authz, err := authorizationv1client.NewForConfigAndClient(cfg, httpClient)
	if err != nil {
		return nil, err
	}
	return upstreamClient{core: core, authz: authz}, nil
}

// Clients builds upstream clients from stores and keeps one per store, so that
// connections are reused across admissions. A store's client is rebuilt when what it
// was built from changes: the store, its token, its certificate or its CA.
type Clients struct {
	refs    RefReader
	metrics *Metrics
	// tokens mints the tokens of stores with serviceAccount auth; nil refuses them.
	tokens *Tokens
	// build makes a client from a configuration: NewUpstreamClient, or a fake
	// upstream in tests.
	build func(*rest.Config) (UpstreamClient, error)

	mu      sync.Mutex
	byStore map[string]storeClient
}

type storeClient struct {
	fingerprint [sha256.Size]byte
	client      UpstreamClient
	// url is the upstream the client reaches, and account the ServiceAccount whose
	// tokens it sends, if any: for messages.
	url     string
	account *ServiceAccountRef
	// expires is when a bearer token that is a JWT expires; zero otherwise.
	expires time.Time
	// versions are the resource versions of the store and of the objects it
	// references when the client was built: while they stand, nothing needs to be
	// read or parsed again.
	versions string
}

// NewClients returns a client cache that reads store references through refs and
// counts upstream requests in metrics (which may be nil).
func NewClients(refs RefReader, metrics *Metrics) *Clients {
	return &Clients{refs: refs, metrics: metrics, build: NewUpstreamClient, byStore: map[string]storeClient{}}
}

// MintTokensWith lets stores authenticate with ServiceAccount tokens that t
// requests.
func (c *Clients) MintTokensWith(t *Tokens) { c.tokens = t }

// BuildWith makes the clients of stores with build instead of NewUpstreamClient: a
// fake upstream, in tests.
func (c *Clients) BuildWith(build func(*rest.Config) (UpstreamClient, error)) { c.build = build }

// For returns the upstream client of a store. Errors are configuration errors.
func (c *Clients) For(ctx context.Context, s *Store) (UpstreamClient, error) {
	sc, err := c.forStore(ctx, s)
	return sc.client, err
}

func (c *Clients) forStore(ctx context.Context, s *Store) (storeClient, error) {
	key := s.String()
	versions, versioned := c.versions(ctx, s)
	c.mu.Lock()
	sc, ok := c.byStore[key]
	c.mu.Unlock()
	if ok && versioned && sc.versions == versions {
		return sc, nil // the warm path: no PEM parsed, no key checked
	}
	ep, err := ResolveEndpoint(ctx, c.refs, s)
	if err != nil {
		return storeClient{}, err
	}
	if ep.ServiceAccount != nil {
		if err := c.tokenSource(ctx, s, &ep); err != nil {
			return storeClient{}, err
		}
	}
	fp := ep.fingerprint()
	c.mu.Lock()
	defer c.mu.Unlock()
	if sc, ok := c.byStore[key]; ok && sc.fingerprint == fp {
		sc.versions = versions
		c.byStore[key] = sc
		return sc, nil
	}
	cfg, err := ep.RESTConfig()
	if err != nil {
		return storeClient{}, s.configErrorf("%v", err)
	}
	cfg.Wrap(c.metrics.countRequests(key))
	client, err := c.build(cfg)
	if err != nil {
		return storeClient{}, s.configErrorf("%v", err)
	}
	sc = storeClient{fingerprint: fp, client: client, versions: versions, url: ep.URL, account: ep.ServiceAccount,
		expires: tokenClaims(ep.Token).Expires}
	c.byStore[key] = sc
	return sc, nil
}

// tokenSource gives ep its ServiceAccount's token source, and requests a token
// once, so that a ServiceAccount that does not exist, or tokens secret-relay may
// not request, are the store's configuration errors.
func (c *Clients) tokenSource(ctx context.Context, s *Store, ep *Endpoint) error {
	if c.tokens == nil {
		return s.configErrorf("serviceAccount auth is not available in this process")
	}
	ep.TokenSource = c.tokens.Source(*ep.ServiceAccount)
	if _, err := c.tokens.first(ctx, *ep.ServiceAccount); err != nil {
		return s.configErrorf("%v", err)
	}
	return nil
}

// versions lists the resource versions of a store and of the Secrets and ConfigMaps
// it references, read from the reference cache. It reports false when any cannot
// be read: then the endpoint is resolved in full, which says what is wrong.
func (c *Clients) versions(ctx context.Context, s *Store) (string, bool) {
	if s.Spec.Provider.Kubernetes == nil {
		return "", false
	}
	out := []string{s.ResourceVersion}
	for _, ref := range s.References() {
		var obj metav1.Object
		var err error
		if ref.Kind == "Secret" {
			obj, err = c.refs.Secret(ctx, ref.Namespace, ref.Name)
		} else {
			obj, err = c.refs.ConfigMap(ctx, ref.Namespace, ref.Name)
		}
		if err != nil {
			return "", false
		}
		out = append(out, string(obj.GetUID())+"@"+obj.GetResourceVersion())
	}
	return strings.Join(out, ","), true
}

// Refused says, for a message, which upstream the store's client reaches and why
// it may have answered 401: a ServiceAccount's token the upstream does not trust.
func (c *Clients) Refused(s *Store) (url, why string) {
	c.mu.Lock()
	sc := c.byStore[s.String()]
	c.mu.Unlock()
	if expired(sc.expires) {
		why = fmt.Sprintf("; the token expired at %s", sc.expires.UTC().Format(time.RFC3339))
	}
	if sc.account != nil {
		why = fmt.Sprintf("; the upstream does not accept tokens of ServiceAccount %s for audiences %q: does it trust this cluster's issuer, for those audiences?",
			sc.account, sc.account.Audiences)
	}
	return sc.url, why
}

// Forget drops a deleted store's client.
func (c *Clients) Forget(storeKey string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	gone := c.byStore[storeKey].account
	delete(c.byStore, storeKey)
	if gone == nil || c.tokens == nil {
		return
	}
	for _, sc := range c.byStore {
		if sc.account != nil && sc.account.key() == gone.key() {
			return // another store still sends its tokens
		}
	}
	c.tokens.forget(*gone)
}

// Upstreams keeps the watch caches that stores read through: one per upstream
// namespace and identity, shared by every store with both, started the first time a
// store is used, and stopped when no store uses it any more. A store moves to another
// cache when its client or remote namespace changes.
type Upstreams struct {
	clients *Clients
	metrics *Metrics

	mu sync.Mutex
	// ctx is what caches run under: they start on demand, from admissions and syncs
	// whose own contexts end with the request.
	ctx      context.Context
	onEvent  func(SecretEvent)
	onHealth func(*Store)
	byStore  map[string]*Cache
	shared   map[cacheKey]*Cache
	// holding is set until the sync controller has told the caches what the copies
	// that exist want: caches opened meanwhile wait in held, so that their first
	// list keeps exactly that, rather than everything or nothing.
	holding bool
	held    []*Cache
}

// NewUpstreams returns the cache set. Caches live until ctx ends.
func NewUpstreams(ctx context.Context, clients *Clients, metrics *Metrics) *Upstreams {
	return &Upstreams{ctx: ctx, clients: clients, metrics: metrics, byStore: map[string]*Cache{}, shared: map[cacheKey]*Cache{}}
}

// OnEvent sets who hears of changes to wanted upstream Secrets: the sync controller.
func (u *Upstreams) OnEvent(fn func(SecretEvent)) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.onEvent = fn
}

// OnHealth sets who hears that a store's upstream changed health: its watch broke
// or came back, or its credentials were refused or accepted again. The store
// validator checks the store again, so that its status says so.
func (u *Upstreams) OnHealth(fn func(*Store)) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.onHealth = fn
}

func (u *Upstreams) emit(ev SecretEvent) {
	u.mu.Lock()
	fn := u.onEvent
	u.mu.Unlock()
	if fn != nil {
		fn(ev)
	}
}

func (u *Upstreams) health(s *Store) {
	u.mu.Lock()
	fn := u.onHealth
	u.mu.Unlock()
	if fn != nil {
		fn(s)
	}
}

// For returns the cache of the store g grants, starting it, or moving the store to
// another when its client or remote namespace changed. What the old cache wanted, the
// new one wants too. Only a Grant opens a cache: reading upstream for a namespace
// needs Authorize's yes first. A store whose client cannot be built is a
// relay.Error with the reason ErrStoreMisconfigured.
func (u *Upstreams) For(ctx context.Context, g *Grant) (*Cache, error) {
	s := g.Store()
	sc, err := u.clients.forStore(ctx, s)
	if IsConfigError(err) {
		return nil, &relay.Error{Reason: relay.ErrStoreMisconfigured, Namespace: g.Namespace(), Store: s.Ref(), Detail: ConfigMessage(err)}
	}
	if err != nil {
		return nil, &relay.Error{Reason: relay.ErrStoreMisconfigured, Namespace: g.Namespace(), Store: s.Ref(),
			Detail: "its references could not be read: " + DescribeUpstreamError(err)}
	}
	key := cacheKey{fingerprint: sc.fingerprint, namespace: s.RemoteNamespace()}
	storeKey := s.String()
	u.mu.Lock()
	defer u.mu.Unlock()
	old := u.byStore[storeKey]
	if old != nil && old.key == key {
		return old, nil
	}
	c := u.shared[key]
	if c == nil {
		c = newUpstreamCache(key, sc.client, u.emit, u.health, u.metrics)
		if old != nil {
			c.Want(old.wantedNames()...)
		}
		u.shared[key] = c
		if u.holding {
			u.held = append(u.held, c)
		} else {
			c.run(u.ctx)
		}
	}
	if old != nil {
		u.leaveLocked(old, storeKey)
	}
	c.addUser(s)
	u.byStore[storeKey] = c
	return c, nil
}

// leaveLocked takes a store off a cache, and stops the cache if no store is left.
func (u *Upstreams) leaveLocked(c *Cache, storeKey string) {
	if c.removeUser(storeKey) == 0 {
		c.stop()
		delete(u.shared, c.key)
	}
}

// Hold keeps caches opened from now on from starting until Release: the sync
// controller holds them while it finds what the copies that exist want.
func (u *Upstreams) Hold() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.holding = true
}

// Release starts the caches held since Hold, which now know what they want.
func (u *Upstreams) Release() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.holding = false
	for _, c := range u.held {
		if u.shared[c.key] == c {
			c.run(u.ctx)
		}
	}
	u.held = nil
}

// Forget takes a deleted store off its cache.
func (u *Upstreams) Forget(storeKey string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if c := u.byStore[storeKey]; c != nil {
		u.leaveLocked(c, storeKey)
		delete(u.byStore, storeKey)
	}
	u.clients.Forget(storeKey)
}
