package webhook

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// ErrUpstreamUnreachable marks an upstream that did not answer in time, refused the
// connection, or whose watch is broken: the webhook cannot vouch that a copy is
// current. Implementations of SecretSource wrap it.
var ErrUpstreamUnreachable = errors.New("upstream unreachable")

// StoreResolver finds the store a pod names and checks that the pod's namespace may
// use it. It returns a DenyError when the store does not exist, is not allowed, or
// is misconfigured.
type StoreResolver interface {
	Resolve(ctx context.Context, namespace string, ref StoreRef) (SecretSource, error)
}

// SecretSource reads upstream Secrets through one store; the Secrets it returns may
// be shared with a cache and must not be modified. Get returns a DenyError when
// the Secret is missing or the upstream refuses, and an error wrapping
// ErrUpstreamUnreachable when the upstream cannot be reached.
type SecretSource interface {
	Get(ctx context.Context, name string) (*corev1.Secret, error)
}

// LocalSecrets reads and writes Secrets in the downstream cluster.
type LocalSecrets interface {
	// Get returns the Secret, or nil when it does not exist. It may answer from a
	// cache, with a Secret the caller must not modify; a stale answer only makes
	// Apply fail with a conflict.
	Get(ctx context.Context, namespace, name string) (*corev1.Secret, error)
	// Latest reads the Secret from the API, or returns nil when it does not exist.
	Latest(ctx context.Context, namespace, name string) (*corev1.Secret, error)
	// Apply creates desired, or updates it over existing (nil when it did not exist).
	// It returns a conflict error when existing is stale.
	Apply(ctx context.Context, existing, desired *corev1.Secret) error
}

// MutatorConfig configures a Mutator.
type MutatorConfig struct {
	Stores StoreResolver
	Local  LocalSecrets
	// UpstreamTimeout bounds the upstream calls of one admission.
	UpstreamTimeout time.Duration
	Logger          *zap.Logger
	// Now is the clock; tests fix it.
	Now func() time.Time
}

func (c *MutatorConfig) defaults() error {
	if c.Stores == nil {
		return errors.New("stores is required")
	}
	if c.Local == nil {
		return errors.New("local is required")
	}
	if c.UpstreamTimeout <= 0 {
		c.UpstreamTimeout = 2 * time.Second
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// Mutator relays the Secrets a pod asks for and mutates the pod to match.
type Mutator struct {
	cfg    MutatorConfig
	parsed parsedAnnotations
	// writes shares one write among concurrent admissions that want the same
	// Secret with the same data: a burst of pods of one workload creates it once
	// instead of racing into conflicts that each cost an API read.
	writes singleflight.Group
}

// NewMutator returns a Mutator.
func NewMutator(cfg MutatorConfig) (*Mutator, error) {
	if err := cfg.defaults(); err != nil {
		return nil, fmt.Errorf("invalid configuration: %w", err)
	}
	return &Mutator{cfg: cfg}, nil
}

// Result is what admission did for one pod.
type Result struct {
	// Warnings are returned to the client with the admission response.
	Warnings []string
	// Written names the local Secrets created or updated.
	Written []string
}

// maxConflictRetries bounds the retries when concurrent admissions write the same
// local Secret.
const maxConflictRetries = 5

// Relay resolves every reference of pod, created in namespace ns, writes the local Secrets (unless
// dryRun) and mutates pod in place. All references are resolved before anything is
// written: if any fails, nothing is written and the error is a DenyError.
func (m *Mutator) Relay(ctx context.Context, ns string, pod *corev1.Pod, dryRun bool) (Result, error) {
	var res Result
	reqs, err := m.parsed.parse(pod.Annotations)
	if err != nil || reqs == nil {
		return res, err
	}
	// The contract answers every review within the upstream timeout plus a second;
	// the last tenth of it is left for the response to travel.
	ctx, done := context.WithTimeout(ctx, m.cfg.UpstreamTimeout+900*time.Millisecond)
	defer done()
	plans := make([]*corev1.Secret, len(reqs))
	existing := make([]*corev1.Secret, len(reqs))
	hashes := make(map[string]string, len(reqs))

	upstreamCtx, cancel := context.WithTimeout(ctx, m.cfg.UpstreamTimeout)
	defer cancel()
	fetch := m.fetcher(ns)
	for i, req := range reqs {
		if existing[i], err = m.cfg.Local.Get(ctx, ns, req.Name); err != nil {
			return res, fmt.Errorf("could not read local Secret %s/%s: %w", ns, req.Name, err)
		}
		remote, err := fetch(upstreamCtx, req)
		if errors.Is(err, ErrUpstreamUnreachable) {
			copyHash, warning, ok := fallbackCopy(existing[i], req)
			if !ok {
				return res, Denyf("upstream of store %s is unreachable and there is no copy of Secret %q in namespace %q to fall back on: %v", req.Store, req.Name, ns, err)
			}
			res.Warnings = append(res.Warnings, warning)
			hashes[req.Name] = copyHash
			continue
		}
		if err != nil {
			return res, err
		}
		if plans[i], err = PlanSecret(ns, req, remote, m.cfg.Now()); err != nil {
			return res, err
		}
		hashes[req.Name] = plans[i].Annotations[AnnotationDataHash]
		write, err := CheckExisting(existing[i], plans[i])
		if err != nil {
			return res, err
		}
		if !write {
			plans[i] = nil // current already: the warm path writes nothing
		}
	}

	for i, desired := range plans {
		if desired == nil {
			continue // current, or served from a copy while upstream is unreachable
		}
		wrote, err := m.sharedWrite(ctx, existing[i], desired, dryRun)
		if err != nil {
			return res, err
		}
		if wrote {
			res.Written = append(res.Written, desired.Name)
		}
	}
	if err := MutatePod(pod, reqs, hashes); err != nil {
		return res, err
	}
	return res, nil
}

// fetcher returns a function that reads the upstream Secrets of one request, reading
// each store and each remote Secret once per admission.
func (m *Mutator) fetcher(ns string) func(context.Context, SecretRequest) (RemoteSecrets, error) {
	sources := map[StoreRef]SecretSource{}
	read := map[StoreRef]RemoteSecrets{}
	return func(ctx context.Context, req SecretRequest) (RemoteSecrets, error) {
		src, ok := sources[req.Store]
		if !ok {
			var err error
			if src, err = m.cfg.Stores.Resolve(ctx, ns, req.Store); err != nil {
				return nil, err
			}
			sources[req.Store] = src
			read[req.Store] = RemoteSecrets{}
		}
		out := RemoteSecrets{}
		for _, key := range req.RemoteKeys() {
			s, ok := read[req.Store][key]
			if !ok {
				var err error
				if s, err = src.Get(ctx, key); err != nil {
					return nil, err
				}
				read[req.Store][key] = s
			}
			out[key] = s
		}
		return out, nil
	}
}

// fallbackCopy decides whether an existing local Secret may stand in while the
// upstream is unreachable: only a managed copy from the same source.
func fallbackCopy(existing *corev1.Secret, req SecretRequest) (hash, warning string, ok bool) {
	if existing == nil || existing.Labels[LabelManagedBy] != ManagedByValue {
		return "", "", false
	}
	src, err := ParseSource(existing.Annotations[AnnotationSource])
	if err != nil || !src.Equal(SourceOf(req)) {
		return "", "", false
	}
	syncedAt := existing.Annotations[AnnotationSyncedAt]
	return existing.Annotations[AnnotationDataHash], DenyPrefix + "upstream unreachable, using copy synced at " + syncedAt, true
}

// sharedWrite is write, done once for all concurrent callers that want the same
// Secret with the same data, under the first caller's deadline; every caller that
// shared it reports the write.
func (m *Mutator) sharedWrite(ctx context.Context, existing, desired *corev1.Secret, dryRun bool) (bool, error) {
	if dryRun {
		return false, nil
	}
	key := desired.Namespace + "/" + desired.Name + "/" + desired.Annotations[AnnotationDataHash]
	v, err, _ := m.writes.Do(key, func() (any, error) {
		return m.write(ctx, existing, desired, false)
	})
	wrote, _ := v.(bool)
	return wrote, err
}

// write creates or updates one local Secret that CheckExisting found wanting, and
// re-reads and re-checks it when a concurrent admission wrote it first. It reports
// whether it wrote.
func (m *Mutator) write(ctx context.Context, existing, desired *corev1.Secret, dryRun bool) (bool, error) {
	if dryRun {
		return false, nil
	}
	for range maxConflictRetries {
		err := m.cfg.Local.Apply(ctx, existing, desired)
		if err == nil {
			return true, nil
		}
		if !isConflict(err) {
			return false, fmt.Errorf("could not write Secret %s/%s: %w", desired.Namespace, desired.Name, err)
		}
		if existing, err = m.cfg.Local.Latest(ctx, desired.Namespace, desired.Name); err != nil {
			return false, fmt.Errorf("could not read Secret %s/%s: %w", desired.Namespace, desired.Name, err)
		}
		write, err := CheckExisting(existing, desired)
		if err != nil || !write {
			return false, err
		}
	}
	return false, fmt.Errorf("could not write Secret %s/%s: still conflicting after %d tries", desired.Namespace, desired.Name, maxConflictRetries)
}

// isConflict reports whether another writer got there first: the Secret was created
// meanwhile, or changed since it was read.
func isConflict(err error) bool {
	return apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err)
}
