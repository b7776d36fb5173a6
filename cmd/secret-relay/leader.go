package main

import (
	"context"
	"fmt"
	"os"

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
	errc := make(chan error, 1)
	for ctx.Err() == nil {
		leaderelection.RunOrDie(ctx, leaderelection.LeaderElectionConfig{
			Lock:            lock,
			LeaseDuration:   f.Lease.Duration,
			RenewDeadline:   f.Lease.RenewDeadline,
			RetryPeriod:     f.Lease.RetryPeriod,
			ReleaseOnCancel: true,
			Name:            leaseName,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(ctx context.Context) {
					logger.Info("became leader", zap.String("identity", id))
					if err := fn(ctx); err != nil {
						select {
						case errc <- err:
						default:
						}
					}
				},
				OnStoppedLeading: func() { logger.Info("stopped leading", zap.String("identity", id)) },
			},
		})
		select {
		case err := <-errc:
			return err
		default:
		}
	}
	return nil
}
