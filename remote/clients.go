package remote

import (
	"context"
	"crypto/sha256"
	"sync"

	"k8s.io/client-go/kubernetes"
)

// Clients builds upstream clients from stores and keeps one per store, so that
// connections are reused across admissions. A store's client is rebuilt when what it
// was built from changes: the store, its token, its certificate or its CA.
type Clients struct {
	refs    RefReader
	metrics *Metrics

	mu      sync.Mutex
	byStore map[string]storeClient
}

type storeClient struct {
	fingerprint [sha256.Size]byte
	client      kubernetes.Interface
}

// NewClients returns a client cache that reads store references through refs and
// counts upstream requests in metrics (which may be nil).
func NewClients(refs RefReader, metrics *Metrics) *Clients {
	return &Clients{refs: refs, metrics: metrics, byStore: map[string]storeClient{}}
}

// For returns the upstream client of a store. Errors are configuration errors.
func (c *Clients) For(ctx context.Context, s *Store) (kubernetes.Interface, error) {
	sc, err := c.forStore(ctx, s)
	return sc.client, err
}

func (c *Clients) forStore(ctx context.Context, s *Store) (storeClient, error) {
	ep, err := ResolveEndpoint(ctx, c.refs, s)
	if err != nil {
		return storeClient{}, err
	}
	fp := ep.fingerprint()
	key := s.String()
	c.mu.Lock()
	defer c.mu.Unlock()
	if sc, ok := c.byStore[key]; ok && sc.fingerprint == fp {
		return sc, nil
	}
	cfg, err := ep.RESTConfig()
	if err != nil {
		return storeClient{}, &ConfigError{Store: key, Message: err.Error()}
	}
	cfg.WrapTransport = c.metrics.countRequests(key)
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return storeClient{}, &ConfigError{Store: key, Message: err.Error()}
	}
	sc := storeClient{fingerprint: fp, client: client}
	c.byStore[key] = sc
	return sc, nil
}

// Forget drops a deleted store's client.
func (c *Clients) Forget(storeKey string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.byStore, storeKey)
}

// Upstreams keeps one watch cache per store, started the first time a store is
// used, rebuilt when its client is, and stopped when the store goes away.
type Upstreams struct {
	clients *Clients
	metrics *Metrics

	mu      sync.Mutex
	ctx     context.Context
	onEvent func(SecretEvent)
	byStore map[string]*upstreamEntry
}

type upstreamEntry struct {
	fingerprint [sha256.Size]byte
	cache       *upstreamCache
}

// NewUpstreams returns the cache set. Caches live until ctx ends.
func NewUpstreams(ctx context.Context, clients *Clients, metrics *Metrics) *Upstreams {
	return &Upstreams{ctx: ctx, clients: clients, metrics: metrics, byStore: map[string]*upstreamEntry{}}
}

// OnEvent sets who hears of changes to wanted upstream Secrets: the sync controller.
func (u *Upstreams) OnEvent(fn func(SecretEvent)) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.onEvent = fn
}

func (u *Upstreams) emit(ev SecretEvent) {
	u.mu.Lock()
	fn := u.onEvent
	u.mu.Unlock()
	if fn != nil {
		fn(ev)
	}
}

// For returns the store's cache, starting it, or restarting it when the store's
// client changed. What the old cache wanted, the new one wants too.
func (u *Upstreams) For(ctx context.Context, s *Store) (*upstreamCache, error) {
	sc, err := u.clients.forStore(ctx, s)
	if err != nil {
		return nil, err
	}
	key := s.String()
	u.mu.Lock()
	defer u.mu.Unlock()
	e, ok := u.byStore[key]
	if ok && e.fingerprint == sc.fingerprint {
		return e.cache, nil
	}
	c := newUpstreamCache(key, s.RemoteNamespace(), sc.client, u.emit, u.metrics)
	if ok {
		e.cache.stop()
		c.want(e.cache.wantedNames()...)
	}
	c.run(u.ctx)
	u.byStore[key] = &upstreamEntry{fingerprint: sc.fingerprint, cache: c}
	return c, nil
}

// Forget stops a deleted store's cache.
func (u *Upstreams) Forget(storeKey string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if e, ok := u.byStore[storeKey]; ok {
		e.cache.stop()
		delete(u.byStore, storeKey)
	}
	u.clients.Forget(storeKey)
}

// Synced reports whether every cache started so far has its first list.
func (u *Upstreams) Synced() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, e := range u.byStore {
		if !e.cache.synced() {
			return false
		}
	}
	return true
}
