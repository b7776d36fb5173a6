package remote

import (
	"context"
	"crypto/sha256"
	"runtime/debug"
	"strings"
	"sync"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/secret-relay/secret-relay/api/v1alpha1"
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
	// versions are the resource versions of the store and of the objects it
	// references when the client was built: while they stand, nothing needs to be
	// read or parsed again.
	versions string
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
		return storeClient{}, &ConfigError{Store: key, Message: err.Error()}
	}
	cfg.WrapTransport = c.metrics.countRequests(key)
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return storeClient{}, &ConfigError{Store: key, Message: err.Error()}
	}
	sc = storeClient{fingerprint: fp, client: client, versions: versions}
	c.byStore[key] = sc
	return sc, nil
}

// versions lists the resource versions of a store and of the Secrets and ConfigMaps
// it references, read from the reference cache. It reports false when any cannot
// be read: then the endpoint is resolved in full, which says what is wrong.
func (c *Clients) versions(ctx context.Context, s *Store) (string, bool) {
	k := s.Spec.Provider.Kubernetes
	if k == nil {
		return "", false
	}
	ns := func(explicit string) string {
		if s.Namespace != "" {
			return s.Namespace // a SecretStore reads from its own namespace only
		}
		return explicit
	}
	var secrets []v1alpha1.SecretKeySelector
	if t := k.Auth.Token; t != nil {
		secrets = append(secrets, t.BearerToken)
	}
	if cert := k.Auth.Cert; cert != nil {
		secrets = append(secrets, cert.ClientCert, cert.ClientKey)
	}
	out := []string{s.ResourceVersion}
	for _, ref := range secrets {
		obj, err := c.refs.Secret(ctx, ns(ref.Namespace), ref.Name)
		if err != nil {
			return "", false
		}
		out = append(out, string(obj.UID)+"@"+obj.ResourceVersion)
	}
	if p := k.Server.CAProvider; p != nil {
		var uid, rv string
		if p.Type == v1alpha1.CAProviderTypeSecret {
			obj, err := c.refs.Secret(ctx, ns(p.Namespace), p.Name)
			if err != nil {
				return "", false
			}
			uid, rv = string(obj.UID), obj.ResourceVersion
		} else {
			obj, err := c.refs.ConfigMap(ctx, ns(p.Namespace), p.Name)
			if err != nil {
				return "", false
			}
			uid, rv = string(obj.UID), obj.ResourceVersion
		}
		out = append(out, uid+"@"+rv)
	}
	return strings.Join(out, ","), true
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
	// trimmed is set once the sync controller has told every cache what it wants;
	// caches started later trim themselves after their first list.
	trimmed bool
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
	c.run(u.ctx, u.trimmed)
	u.byStore[key] = &upstreamEntry{fingerprint: sc.fingerprint, cache: c}
	return c, nil
}

// Trim tells every cache that what local copies want is now known: data nobody
// wants is dropped, and the memory it held given back to the system.
func (u *Upstreams) Trim() {
	u.mu.Lock()
	u.trimmed = true
	caches := make([]*upstreamCache, 0, len(u.byStore))
	for _, e := range u.byStore {
		caches = append(caches, e.cache)
	}
	u.mu.Unlock()
	for _, c := range caches {
		if !c.informer.HasSynced() {
			go func() {
				if cache.WaitForCacheSync(u.ctx.Done(), c.informer.HasSynced) {
					c.trim()
				}
			}()
			continue
		}
		c.trim()
	}
	// The first lists held every Secret of each namespace; hand that back now
	// rather than whenever the runtime gets round to it.
	debug.FreeOSMemory()
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
