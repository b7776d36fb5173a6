package main

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// leaseName is the Lease in --namespace that the replica doing background writes holds.
const leaseName = "secret-relay"

// runLeading runs fn while this replica holds the leader lease, and again each time it
// wins it back, until ctx ends. Without --leader-elect it just runs fn.
//
// controller-runtime's manager exits when it loses its lease and lets a restart
// campaign again. This process also serves admission, which must not stop with a
// lost renew deadline; so a lost term only ends fn's context, and the replica
// campaigns again. Terms never overlap: a new one waits for the last one's fn to
// return, since client-go starts the leading callback on a goroutine of its own and
// does not wait for it. When fn returns while the lease is still held, the lease is
// given up rather than held with nothing running.
func runLeading(ctx context.Context, f Flags, kube kubernetes.Interface, logger *zap.Logger, fn func(context.Context) error) error {
	if !f.LeaderElect {
		return fn(ctx)
	}
	host, _ := os.Hostname()
	id := fmt.Sprintf("%s_%s", host, uuid.NewUUID())
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Name: leaseName, Namespace: f.Namespace},
		Client:     kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: id},
	}
	var term sync.Mutex // held while a term's fn runs
	for ctx.Err() == nil {
		campaign, endCampaign := context.WithCancel(ctx)
		leaderelection.RunOrDie(campaign, leaderelection.LeaderElectionConfig{
			Lock:            lock,
			LeaseDuration:   f.Lease.Duration,
			RenewDeadline:   f.Lease.RenewDeadline,
			RetryPeriod:     f.Lease.RetryPeriod,
			ReleaseOnCancel: true,
			Name:            leaseName,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(leading context.Context) {
					term.Lock()
					defer term.Unlock()
					logger.Info("became leader", zap.String("identity", id))
					if err := fn(leading); err != nil {
						logger.Error("leader work stopped; giving up the lease", zap.Error(err))
					}
					endCampaign()
				},
				OnStoppedLeading: func() { logger.Info("stopped leading", zap.String("identity", id)) },
			},
		})
		endCampaign()
		select {
		case <-ctx.Done():
		case <-time.After(f.Lease.RetryPeriod):
		}
	}
	// Wait for the last term's work to stop before anything it uses goes away.
	term.Lock()
	defer term.Unlock()
	return nil
}
