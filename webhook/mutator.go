package webhook

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/semaphore"
	"golang.org/x/sync/singleflight"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/retry"

	"github.com/secret-relay/secret-relay/relay"
)

// StoreResolver finds the store a pod names and checks that the pod's namespace may
// use it. It returns a relay.Error when the store does not exist, is not allowed, or
// is misconfigured.
type StoreResolver interface {
	Resolve(ctx context.Context, namespace string, ref relay.StoreRef) (relay.SecretSource, error)
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
	// It returns a conflict error when existing is stale. With dryRun, the API server
	// checks the write as it would make it, and stores nothing.
	Apply(ctx context.Context, existing, desired *corev1.Secret, dryRun bool) error
}

// CopyUsers finds the pods that use a copy.
type CopyUsers interface {
	// Users returns the controller reference of each pod that uses the copy
	// namespace/name (nil for a pod without one), or false when it cannot say.
	Users(namespace, name string) ([]*metav1.OwnerReference, bool)
}

// MutatorConfig configures a Mutator.
type MutatorConfig struct {
	Stores StoreResolver
	Local  LocalSecrets
	// Tokens keys the data tokens of copies and of the pod's status annotation.
	Tokens relay.Tokenizer
	// UnservedNamespaces are never relayed into, as the shipped webhook
	// configuration never sends their pods: a review for one was posted by someone
	// other than the API server.
	UnservedNamespaces []string
	// Workloads finds the controllers above a pod, so that the copies it uses name
	// its workload among their owners. Without it, copies get no owners.
	Workloads relay.Controllers
	// Users and Templates let a copy follow its workload's new declaration
	// (contract §5, "Rollouts"): Users names the pods that use a copy, Templates
	// reads a workload's pod template. Without both, and Workloads, a copy never
	// changes source.
	Users     CopyUsers
	Templates relay.Templates
	// Recorder, when set, records on a pod's controller that a copy followed its new
	// declaration: the pod's warning reaches no one when a controller created it.
	Recorder record.EventRecorder
	// UpstreamTimeout bounds the upstream calls of one admission.
	UpstreamTimeout time.Duration
	// ConcurrentWrites bounds the downstream writes admissions have in flight; the
	// rest wait their turn in the order they came (see defaultConcurrentWrites).
	ConcurrentWrites int
	Logger           *zap.Logger
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
	if c.Tokens == nil {
		return errors.New("tokens is required")
	}
	if c.UpstreamTimeout <= 0 {
		c.UpstreamTimeout = 2 * time.Second
	}
	if c.ConcurrentWrites <= 0 {
		c.ConcurrentWrites = defaultConcurrentWrites
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
	cfg      MutatorConfig
	parsed   parsedAnnotations
	verified verifiedPods
	// writes shares one write among concurrent admissions that want the same
	// Secret with the same data: a burst of pods of one workload creates it once
	// instead of racing into conflicts that each cost an API read.
	writes singleflight.Group
	// writeSlots are the downstream writes admissions may have in flight.
	writeSlots *semaphore.Weighted
}

// defaultConcurrentWrites is how many downstream writes admissions have in flight at
// most. kube-apiserver grants 100 concurrent streams on an HTTP/2 connection
// (--http2-max-streams-per-connection); past them, client-go's transport holds a
// request until a stream frees, in no particular order, so that in a burst the first
// admissions wait as long as the last and all of them miss their deadline together.
// Waiting here instead is first come, first served: in a burst larger than the API
// server can take within the review deadline, the earliest admissions are written
// and the latest denied (the ReplicaSet retries them), and a write that would come
// too late is never sent. 64 leaves streams of the admission client's connection to
// the reads a review makes. Fewer slots cost throughput: the API server's Secret
// creates wait on etcd more than on its CPU, so it completes more of them at once
// (make bench: 600 pods, docs/performance.md).
const defaultConcurrentWrites = 64

// NewMutator returns a Mutator.
func NewMutator(cfg MutatorConfig) (*Mutator, error) {
	if err := cfg.defaults(); err != nil {
		return nil, fmt.Errorf("invalid configuration: %w", err)
	}
	return &Mutator{cfg: cfg, writeSlots: semaphore.NewWeighted(int64(cfg.ConcurrentWrites))}, nil
}

// Result is what admission did for one pod.
type Result struct {
	// Warnings are returned to the client with the admission response.
	Warnings []string
	// Written names the local Secrets created or updated.
	Written []string
}

// conflictBackoff bounds the tries when concurrent admissions write the same local
// Secret: each retry reads it again first, and stops when it finds it current.
var conflictBackoff = wait.Backoff{Steps: 5, Duration: 5 * time.Millisecond, Factor: 2, Jitter: 0.5}

// Relay resolves every reference of pod, created in namespace ns, writes the local
// Secrets (with dryRun, has the API server check the writes and store nothing) and
// mutates pod in place. All references are resolved before anything is written: if
// any fails, nothing is written and the error is a denial (a relay.Error or a
// DenyError). A write that fails is a relay.Error too, naming the Secret and the reason.
func (m *Mutator) Relay(ctx context.Context, ns string, pod *corev1.Pod, dryRun bool) (Result, error) {
	var res Result
	reqs, asked, err := m.parsed.parse(pod.Annotations)
	if err != nil || reqs == nil {
		return res, err
	}
	if err := m.checkNamespace(ns, pod); err != nil {
		return res, err
	}
	if l, ok := m.cfg.Tokens.(interface{ Loaded() bool }); ok && !l.Loaded() {
		return res, &relay.Error{Reason: relay.ErrKeyNotLoaded, Namespace: ns}
	}
	// The contract answers every review within the upstream timeout plus a second;
	// the last tenth of it is left for the response to travel.
	ctx, done := context.WithTimeout(ctx, m.cfg.UpstreamTimeout+900*time.Millisecond)
	defer done()
	plans := make([]*corev1.Secret, len(reqs))
	existing := make([]*corev1.Secret, len(reqs))
	tokens := make(map[string]string, len(reqs))

	upstreamCtx, cancel := context.WithTimeout(ctx, m.cfg.UpstreamTimeout)
	defer cancel()
	workload := m.workloadOf(upstreamCtx, ns, pod)
	fetch := m.fetcher(ns)
	remotes := make([]relay.RemoteSecrets, len(reqs))
	for i, req := range reqs {
		if existing[i], err = m.cfg.Local.Get(ctx, ns, req.Name); err != nil {
			return res, &relay.Error{Reason: relay.ErrReadFailed, Namespace: ns, Secret: req.Name, Detail: relay.DescribeWriteError(err, nil)}
		}
		remotes[i], err = fetch(upstreamCtx, req)
		if errors.Is(err, relay.ErrUnreachable) {
			copyToken, warning, ok := fallbackCopy(existing[i], req)
			if !ok {
				detail := err.Error()
				if e := relay.AsError(err); e != nil {
					detail = e.Detail
				}
				return res, &relay.Error{Reason: relay.ErrUnreachable, Namespace: ns, Secret: req.Name, Store: req.Store, Detail: detail}
			}
			res.Warnings = append(res.Warnings, warning)
			tokens[req.Name] = copyToken
			continue
		}
		if err != nil {
			return res, err
		}
	}

	// No versions, and so nothing remembered, when an item was served from its copy.
	key := verifiedKey{namespace: ns, asked: asked}
	if workload.Owns {
		key.owner = workload.Ref.UID
	}
	versions := versionsOf(existing, remotes, reqs, m.cfg.Tokens)
	if m.verified.verified(key, versions) {
		for i, req := range reqs {
			tokens[req.Name] = existing[i].Annotations[relay.AnnotationDataHash]
		}
		return res, MutatePod(pod, reqs, tokens)
	}
	current := true
	takeovers := make([]*takeover, len(reqs))
	for i, req := range reqs {
		if remotes[i] == nil {
			continue // served from a copy while upstream is unreachable
		}
		if plans[i], err = relay.PlanSecret(ns, req, remotes[i], m.cfg.Now(), m.cfg.Tokens); err != nil {
			return res, err
		}
		workload.Own(plans[i])
		tokens[req.Name] = plans[i].Annotations[relay.AnnotationDataHash]
		write, err := checkExisting(existing[i], plans[i])
		if errors.Is(err, relay.ErrOtherSource) {
			if takeovers[i] = m.takeover(upstreamCtx, ns, pod, workload, existing[i]); takeovers[i] != nil {
				write, err = true, nil
				res.Warnings = append(res.Warnings, relay.FollowWarning(req.Name, takeovers[i].old))
			}
		}
		if err != nil {
			return res, err
		}
		if !write {
			plans[i] = nil // current already: the warm path writes nothing
		}
		current = current && !write
	}
	if current {
		m.verified.put(key, versions)
	}

	for i, desired := range plans {
		if desired == nil {
			continue // current, or served from a copy while upstream is unreachable
		}
		wrote, err := m.sharedWrite(ctx, existing[i], desired, takeovers[i], dryRun)
		if err != nil {
			return res, err
		}
		if wrote && !dryRun {
			res.Written = append(res.Written, desired.Name)
			m.recordTakeover(ns, pod, desired.Name, takeovers[i])
		}
	}
	if err := MutatePod(pod, reqs, tokens); err != nil {
		return res, err
	}
	return res, nil
}

// workloadOf works out the pod's workload. One that cannot be read in time is
// named but owns nothing: its copies are then kept by the pods that use them.
func (m *Mutator) workloadOf(ctx context.Context, ns string, pod *corev1.Pod) relay.Workload {
	if m.cfg.Workloads == nil {
		return relay.Workload{}
	}
	w, err := relay.WorkloadOf(ctx, ns, pod, m.cfg.Workloads)
	if err != nil {
		m.cfg.Logger.Warn("could not read the pod's controller; its copies get no owner this time",
			zap.String("namespace", ns), zap.String("controller", w.Ref.Kind+"/"+w.Ref.Name), zap.Error(err))
	}
	return w
}

// checkNamespace refuses a review that no pod creation through the API server
// would have sent: one for a namespace the shipped webhook configuration leaves
// out, one without a namespace, or one whose pod names another namespace.
func (m *Mutator) checkNamespace(ns string, pod *corev1.Pod) error {
	switch {
	case ns == "":
		return Denyf("the review names no namespace")
	case pod.Namespace != "" && pod.Namespace != ns:
		return Denyf("the pod's namespace %q is not the review's namespace %q", pod.Namespace, ns)
	case slices.Contains(m.cfg.UnservedNamespaces, ns):
		return Denyf("namespace %q is not served by secret-relay: its webhook configuration leaves it out", ns)
	}
	return nil
}

// fetcher returns a function that reads the upstream Secrets of one request, reading
// each store and each remote Secret once per admission.
func (m *Mutator) fetcher(ns string) func(context.Context, relay.SecretRequest) (relay.RemoteSecrets, error) {
	sources := map[relay.StoreRef]relay.SecretSource{}
	read := map[relay.StoreRef]relay.RemoteSecrets{}
	return func(ctx context.Context, req relay.SecretRequest) (relay.RemoteSecrets, error) {
		src, ok := sources[req.Store]
		if !ok {
			var err error
			if src, err = m.cfg.Stores.Resolve(ctx, ns, req.Store); err != nil {
				return nil, err
			}
			sources[req.Store] = src
			read[req.Store] = relay.RemoteSecrets{}
		}
		keys := req.RemoteKeys()
		out := make(relay.RemoteSecrets, len(keys))
		for _, key := range keys {
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
func fallbackCopy(existing *corev1.Secret, req relay.SecretRequest) (token, warning string, ok bool) {
	if existing == nil || existing.Labels[relay.LabelManagedBy] != relay.ManagedByValue {
		return "", "", false
	}
	src, err := relay.ParseSource(existing.Annotations[relay.AnnotationSource])
	if err != nil || !src.Equal(relay.SourceOf(req)) {
		return "", "", false
	}
	syncedAt := existing.Annotations[relay.AnnotationSyncedAt]
	return existing.Annotations[relay.AnnotationDataHash], DenyPrefix + "upstream unreachable, using copy synced at " + syncedAt, true
}

// sharedWrite is write, done once for all concurrent callers that want the same
// write: the same Secret, source, type and data, dry or not. It runs under the first
// caller's deadline, and every caller that shared it reports the write. Anything
// less in the key would let a pod be admitted on a copy written for another source.
func (m *Mutator) sharedWrite(ctx context.Context, existing, desired *corev1.Secret, t *takeover, dryRun bool) (bool, error) {
	key := strings.Join([]string{
		desired.Namespace, desired.Name, string(desired.Type),
		desired.Annotations[relay.AnnotationSource], desired.Annotations[relay.AnnotationDataHash], strconv.FormatBool(dryRun),
		t.String(),
	}, "\x00")
	v, err, _ := m.writes.Do(key, func() (any, error) {
		return m.write(ctx, existing, desired, t, dryRun)
	})
	wrote, _ := v.(bool)
	return wrote, err
}

// write creates or updates one local Secret that relay.CheckExisting found wanting, and
// re-reads and re-checks it when a concurrent admission wrote it first. It reports
// whether it wrote. A write the API server refuses is a relay.Error naming the Secret
// and the reason. t, when set, lets the write take the copy over from its old
// source, as long as the copy is still as t found it.
func (m *Mutator) write(ctx context.Context, existing, desired *corev1.Secret, t *takeover, dryRun bool) (bool, error) {
	wrote, retrying := false, false
	err := retry.OnError(conflictBackoff, isConflict, func() error {
		if retrying { // a concurrent write got there first: look again
			latest, err := m.cfg.Local.Latest(ctx, desired.Namespace, desired.Name)
			if err != nil {
				return &relay.Error{Reason: relay.ErrReadFailed, Namespace: desired.Namespace, Secret: desired.Name, Detail: relay.DescribeWriteError(err, nil)}
			}
			write, err := checkExisting(latest, desired)
			if errors.Is(err, relay.ErrOtherSource) && t.stillAdmits(latest) {
				write, err = true, nil
			}
			if err != nil || !write {
				return err // someone else's, or current already
			}
			existing = latest
		}
		retrying = true
		if err := m.writeSlots.Acquire(ctx, 1); err != nil {
			return &relay.Error{Reason: relay.ErrWriteFailed, Namespace: desired.Namespace, Secret: desired.Name, Detail: errWritesQueued}
		}
		err := m.cfg.Local.Apply(ctx, existing, desired, dryRun)
		m.writeSlots.Release(1)
		if err != nil {
			return err
		}
		wrote = true
		return nil
	})
	switch {
	case isConflict(err):
		return false, &relay.Error{Reason: relay.ErrWriteFailed, Namespace: desired.Namespace, Secret: desired.Name,
			Detail: fmt.Sprintf("it was changed by someone else %d times in a row; retry", conflictBackoff.Steps)}
	case relay.AsError(err) != nil:
		return false, err
	case err != nil:
		return false, &relay.Error{Reason: relay.ErrWriteFailed, Namespace: desired.Namespace, Secret: desired.Name, Detail: relay.DescribeWriteError(err, desired.Data)}
	}
	return wrote, nil
}

// errWritesQueued is why a write that waited for its turn until the review's
// deadline was never sent.
const errWritesQueued = "the downstream API server did not answer in time: this admission waited for the writes of earlier ones until its deadline"

// checkExisting is relay.CheckExisting for admission, which also writes a copy the
// leader marked for deletion: the pod it admits uses the copy, and the leader cannot
// see that pod yet. The write clears the mark and changes the copy's version, on
// which the leader's deletion is conditional.
func checkExisting(existing, desired *corev1.Secret) (bool, error) {
	write, err := relay.CheckExisting(existing, desired)
	if err == nil && !write && relay.MarkedOrphan(existing) {
		return true, nil
	}
	return write, err
}

// isConflict reports whether another writer got there first: the Secret was created
// meanwhile, or changed since it was read.
func isConflict(err error) bool {
	return apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err)
}
