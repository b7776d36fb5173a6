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
type OrphanSweeper struct {
	cfg OrphanConfig
	// unused is when each copy was first seen unused, in this term.
	unused map[string]time.Time
}

// NewOrphanSweeper returns a sweeper for one leadership term.
func NewOrphanSweeper(cfg OrphanConfig) (*OrphanSweeper, error) {
	if err := cfg.defaults(); err != nil {
		return nil, fmt.Errorf("invalid configuration: %w", err)
	}
	return &OrphanSweeper{cfg: cfg, unused: map[string]time.Time{}}, nil
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
			continue
		}
		since, ok := s.unused[key]
		if !ok {
			s.unused[key] = now
			continue
		}
		if now.Sub(since) >= s.cfg.Grace {
			s.delete(ctx, copied, now.Sub(since))
		}
	}
	for key := range s.unused {
		if !seen[key] {
			delete(s.unused, key)
		}
	}
}

// delete deletes one orphaned copy, only at the version that was found unused: a
// copy written since, by an admission that is about to create its pod, stays.
func (s *OrphanSweeper) delete(ctx context.Context, copied *corev1.Secret, unused time.Duration) {
	key := copied.Namespace + "/" + copied.Name
	pre := metav1.Preconditions{UID: &copied.UID, ResourceVersion: &copied.ResourceVersion}
	err := s.cfg.Client.CoreV1().Secrets(copied.Namespace).Delete(ctx, copied.Name, metav1.DeleteOptions{Preconditions: &pre})
	switch {
	case err == nil:
		delete(s.unused, key)
		s.cfg.Metrics.orphanDeleted()
		s.cfg.Recorder.Eventf(copied, corev1.EventTypeNormal, "OrphanDeleted",
			"no live pod and no owner has used this copy for %s; deleted", unused.Round(time.Second))
		s.cfg.Logger.Info("deleted an orphaned copy", zap.String("namespace", copied.Namespace), zap.String("secret", copied.Name))
	case apierrors.IsNotFound(err), apierrors.IsConflict(err):
		delete(s.unused, key) // gone, or changed since: looked at afresh
	default:
		s.cfg.Logger.Warn("could not delete an orphaned copy", zap.String("namespace", copied.Namespace),
			zap.String("secret", copied.Name), zap.Error(err))
	}
}
