package cluster

import (
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
)

// StealLease takes the Lease ns/name for holder and keeps renewing it every
// interval, as another replica would, until the returned function is called; from
// then on the Lease lapses after duration.
func (cp *ControlPlane) StealLease(t testing.TB, ns, name, holder string, duration, interval time.Duration) (release func()) {
	t.Helper()
	leases := cp.Client.CoordinationV1().Leases(ns)
	take := func() error {
		l, err := leases.Get(Context(t), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		now := metav1.NewMicroTime(time.Now())
		if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != holder {
			l.Spec.AcquireTime = &now
			l.Spec.LeaseTransitions = ptr.To(ptr.Deref(l.Spec.LeaseTransitions, 0) + 1)
		}
		l.Spec.HolderIdentity = &holder
		l.Spec.RenewTime = &now
		l.Spec.LeaseDurationSeconds = ptr.To(int32(duration / time.Second))
		_, err = leases.Update(Context(t), l, metav1.UpdateOptions{})
		return err
	}
	for {
		err := take()
		if err == nil {
			break
		}
		if !apierrors.IsConflict(err) {
			t.Fatalf("could not take Lease %s/%s: %v", ns, name, err)
		}
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		// A conflict is the old holder trying; the next round wins.
		wait.Until(func() { _ = take() }, interval, stop)
	}()
	var stopped bool
	release = func() {
		if !stopped {
			stopped = true
			close(stop)
			<-done
		}
	}
	t.Cleanup(release)
	return release
}

// LeaseHolder is the holder of Lease ns/name, or "" when it has none.
func (cp *ControlPlane) LeaseHolder(t testing.TB, ns, name string) string {
	t.Helper()
	l, err := cp.Client.CoordinationV1().Leases(ns).Get(Context(t), name, metav1.GetOptions{})
	if err != nil {
		return ""
	}
	return ptr.Deref(l.Spec.HolderIdentity, "")
}
