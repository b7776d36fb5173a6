package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/secret-relay/secret-relay/relay"
)

// OrphanConfig configures an OrphanSweeper.
type OrphanConfig struct {
	// Copies is the informer of managed copies, and Pods the relayed pods.
	Copies cache.SharedIndexInformer
	Pods   *relay.PodUsage
	// Client deletes orphaned copies.
	Client kubernetes.Interface
	// Grace is how long a copy must go unused before it is deleted
	// (--orphan-grace-period).
	Grace    time.Duration
	Recorder record.EventRecorder
	Metrics  *Metrics
	Logger   *zap.Logger
	// Now is the clock; tests move it.
	Now func() time.Time
}

func (c *OrphanConfig) defaults() error {
	switch {
	case c.Copies == nil || c.Pods == nil || c.Client == nil:
		return errors.New("copies, pods and client are required")
	case c.Grace <= 0:
		return fmt.Errorf("the grace period must be positive, got %s", c.Grace)
	}
	if c.Recorder == nil {
		c.Recorder = &record.FakeRecorder{}
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// OrphanSweeper deletes the copies that nothing uses (contract §6, "Owners and
// cleanup"): a copy without owners, which the garbage collector therefore leaves,
// that no live pod's status has named for the grace period. It runs on the leader,
// one term at a time: what it has seen unused is forgotten with the term, so that a
// new leader waits a whole grace period before it deletes anything.
//
// A copy unused for the grace period is first marked (AnnotationOrphanedAt), and
// deleted only MarkWait later, if the mark still stands: an admission can find a
// copy current and admit its pod before the pod reaches the relayed pods cache,
// and it writes a copy it finds marked, which removes the mark. A sync of new
// upstream data keeps it. The deletion is conditional on the version last seen,
// so a write that lands meanwhile makes it fail, and the next sweep looks again.
type OrphanSweeper struct {
	cfg OrphanConfig
	// unused is when each copy was first seen unused, in this term.
	unused map[string]time.Time
	// marked holds, for each copy marked, the mark and when it was first seen in
	// this term.
	marked map[string]orphanMark
}

type orphanMark struct {
	value string
	at    time.Time
}

// NewOrphanSweeper returns a sweeper for one leadership term.
func NewOrphanSweeper(cfg OrphanConfig) (*OrphanSweeper, error) {
	if err := cfg.defaults(); err != nil {
		return nil, fmt.Errorf("invalid configuration: %w", err)
	}
	return &OrphanSweeper{cfg: cfg, unused: map[string]time.Time{}, marked: map[string]orphanMark{}}, nil
}

// MarkWait is how long a marked copy waits before it is deleted, for a grace
// period: the grace period, up to 30 s, which bounds how long a pod create that
// secret-relay admitted can take to reach the API server's storage and the cache
// (other webhooks, a slow etcd), and at least 1 s.
func MarkWait(grace time.Duration) time.Duration {
	return max(min(grace, 30*time.Second), time.Second)
}

// SweepInterval is how often Run sweeps for a grace period: a tenth of it, between
// 1 s and 1 min.
func SweepInterval(grace time.Duration) time.Duration {
	return min(max(grace/10, time.Second), time.Minute)
}

// Run sweeps every SweepInterval until ctx ends.
func (s *OrphanSweeper) Run(ctx context.Context) error {
	t := time.NewTicker(SweepInterval(s.cfg.Grace))
	defer t.Stop()
	for {
		s.Sweep(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Sweep looks at every copy once and deletes those unused for the grace period. It
// does nothing before both caches are in: a pod not listed yet would make its
// copies look unused.
func (s *OrphanSweeper) Sweep(ctx context.Context) {
	if !s.cfg.Copies.HasSynced() || !s.cfg.Pods.Synced() {
		return
	}
	now := s.cfg.Now()
	seen := map[string]bool{}
	for _, obj := range s.cfg.Copies.GetStore().List() {
		copied, ok := relay.SecretOf(obj)
		if !ok {
			continue
		}
		key := copied.Namespace + "/" + copied.Name
		seen[key] = true
		// A copy with owners is the garbage collector's, and one in use is kept.
		if len(copied.OwnerReferences) > 0 || s.cfg.Pods.Used(copied.Namespace, copied.Name) {
			delete(s.unused, key)
			delete(s.marked, key)
			if relay.MarkedOrphan(copied) {
				s.writeMark(ctx, copied, "")
			}
			continue
		}
		since, ok := s.unused[key]
		if !ok {
			s.unused[key] = now
			continue
		}
		if now.Sub(since) < s.cfg.Grace {
			continue
		}
		m, ok := s.marked[key]
		mark := copied.Annotations[relay.AnnotationOrphanedAt]
		switch {
		case !relay.MarkedOrphan(copied):
			value := now.UTC().Format(time.RFC3339Nano)
			if s.writeMark(ctx, copied, value) {
				s.marked[key] = orphanMark{value: value, at: now}
			}
		case !ok || m.value != mark:
			// Marked in an earlier term, or again: wait from now.
			s.marked[key] = orphanMark{value: mark, at: now}
		case now.Sub(m.at) >= MarkWait(s.cfg.Grace):
			s.delete(ctx, copied, now.Sub(since))
		}
	}
	for key := range s.unused {
		if !seen[key] {
			delete(s.unused, key)
			delete(s.marked, key)
		}
	}
}

// writeMark sets the copy's AnnotationOrphanedAt to at, or removes it when at is
// empty, if the copy is still at the version the cache holds, and reports whether
// it wrote. The cache keeps no data, so the copy is read first.
func (s *OrphanSweeper) writeMark(ctx context.Context, copied *corev1.Secret, at string) bool {
	secrets := s.cfg.Client.CoreV1().Secrets(copied.Namespace)
	live, err := secrets.Get(ctx, copied.Name, metav1.GetOptions{})
	if err != nil || live.UID != copied.UID || live.ResourceVersion != copied.ResourceVersion {
		return false // gone, changed since, or unreadable: looked at again next sweep
	}
	if at == "" {
		delete(live.Annotations, relay.AnnotationOrphanedAt)
	} else {
		if live.Annotations == nil {
			live.Annotations = map[string]string{}
		}
		live.Annotations[relay.AnnotationOrphanedAt] = at
	}
	_, err = secrets.Update(ctx, live, metav1.UpdateOptions{FieldManager: relay.ManagedByValue})
	if err != nil && !apierrors.IsConflict(err) {
		s.cfg.Logger.Warn("could not mark an unused copy", zap.String("namespace", copied.Namespace),
			zap.String("secret", copied.Name), zap.String("reason", relay.DescribeWriteError(err, live.Data)))
	}
	return err == nil
}

// delete deletes one orphaned copy, only at the version last seen marked: a copy
// written since, by an admission that is about to create its pod or by a sync,
// stays, and the next sweep looks at it again.
func (s *OrphanSweeper) delete(ctx context.Context, copied *corev1.Secret, unused time.Duration) {
	key := copied.Namespace + "/" + copied.Name
	pre := metav1.Preconditions{UID: &copied.UID, ResourceVersion: &copied.ResourceVersion}
	err := s.cfg.Client.CoreV1().Secrets(copied.Namespace).Delete(ctx, copied.Name, metav1.DeleteOptions{Preconditions: &pre})
	switch {
	case err == nil:
		delete(s.unused, key)
		delete(s.marked, key)
		s.cfg.Metrics.orphanDeleted()
		s.cfg.Recorder.Eventf(copied, corev1.EventTypeNormal, "OrphanDeleted",
			"no live pod and no owner has used this copy for %s; deleted", unused.Round(time.Second))
		s.cfg.Logger.Info("deleted an orphaned copy", zap.String("namespace", copied.Namespace), zap.String("secret", copied.Name))
	case apierrors.IsNotFound(err):
		delete(s.unused, key)
		delete(s.marked, key)
	case apierrors.IsConflict(err): // written since: the next sweep sees whether the mark stands
	default:
		s.cfg.Logger.Warn("could not delete an orphaned copy", zap.String("namespace", copied.Namespace),
			zap.String("secret", copied.Name), zap.String("reason", relay.DescribeWriteError(err, copied.Data)))
	}
}
