package controllers

import (
	"context"
	"net"
	"net/url"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"

	"github.com/secret-relay/secret-relay/api/v1alpha1"
	"github.com/secret-relay/secret-relay/remote"
	"github.com/secret-relay/secret-relay/remote/remotetest"
)

func (h *harness) validator() *StoreValidator {
	h.t.Helper()
	v, err := NewStoreValidator(StoreValidatorConfig{Stores: h.stores, Clients: h.clients, Recorder: h.recorder, Interval: time.Minute})
	require.NoError(h.t, err)
	return v
}

// runTerm runs one leadership term of v; the returned function ends it and waits.
func runTerm(v *StoreValidator) (end func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = v.Run(ctx)
	}()
	return func() { cancel(); <-done }
}

// statusWrites counts the status updates of store name.
func (h *harness) statusWrites(name string) int {
	n := 0
	for _, a := range h.storesAPI.Actions() {
		if u, ok := a.(k8stesting.UpdateAction); ok && a.GetSubresource() == "status" && u.GetObject().(metav1.Object).GetName() == name {
			n++
		}
	}
	return n
}

func (h *harness) readyCondition(name string) (status, reason, message string) {
	s, err := h.storesAPI.SecretRelayV1alpha1().SecretStores("team-a").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		return "", "", ""
	}
	if c := meta.FindStatusCondition(s.Status.Conditions, v1alpha1.ConditionReady); c != nil {
		return string(c.Status), c.Reason, c.Message
	}
	return "", "", ""
}

func validatorWorld(t *testing.T) *harness {
	h := newHarness(t, []runtime.Object{remotetest.Store(t, v1alpha1.SecretStoreKind, "team-a", "own", "")},
		[]runtime.Object{remotetest.Namespace("team-a", nil), remotetest.TokenSecret("team-a")}, nil)
	h.start()
	return h
}

func TestStoreValidator(t *testing.T) {
	t.Run("A working store should be Valid and ReadOnly.", func(t *testing.T) {
		h := validatorWorld(t)
		end := runTerm(h.validator())
		defer end()
		assert.Eventually(t, func() bool { s, r, _ := h.readyCondition("own"); return s == "True" && r == "Valid" }, 5*time.Second, 10*time.Millisecond)
	})

	t.Run("A store whose upstream refuses connections should be written once and retried with backoff.", func(t *testing.T) {
		h := validatorWorld(t)
		// Each attempt fails from another ephemeral port, as a real one does.
		port := 35000
		h.access.Fail(func() error {
			port++
			return &url.Error{Op: "Post", URL: "https://upstream.test:6443/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
				Err: &net.OpError{Op: "dial", Net: "tcp", Source: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port},
					Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 6443}, Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}}
		})
		end := runTerm(h.validator())
		defer end()
		require.Eventually(t, func() bool { _, r, _ := h.readyCondition("own"); return r == "ValidationFailed" }, 5*time.Second, 10*time.Millisecond)
		_, _, msg := h.readyCondition("own")
		assert.Equal(t, "upstream https://upstream.test:6443 unreachable: connect: connection refused", msg)
		time.Sleep(3500 * time.Millisecond)
		assert.Equal(t, 1, h.statusWrites("own"), "a status that says the same is not written again, nor re-enqueued by its own write")
		attempts := 0
		for _, a := range h.up.Actions() {
			if a.GetResource().Resource == "selfsubjectaccessreviews" {
				attempts++
			}
		}
		assert.GreaterOrEqual(t, attempts, 2, "retried")
		assert.LessOrEqual(t, attempts, 4, "with backoff: 1 s, 2 s, ... not in a loop")

		h.access.Fail(nil)
		assert.Eventually(t, func() bool { s, _, _ := h.readyCondition("own"); return s == "True" }, 10*time.Second, 50*time.Millisecond,
			"the retry finds it working again")
	})

	t.Run("Revoked credentials should turn the store ValidationFailed.", func(t *testing.T) {
		h := validatorWorld(t)
		v := h.validator()
		end := runTerm(v)
		defer end()
		require.Eventually(t, func() bool { s, _, _ := h.readyCondition("own"); return s == "True" }, 5*time.Second, 10*time.Millisecond)
		h.access.Fail(func() error { return apierrors.NewUnauthorized("Unauthorized") })
		store, err := h.stores.Get(context.Background(), "team-a", ownStore)
		require.NoError(t, err)
		v.RevalidateSoon(store)
		assert.Eventually(t, func() bool {
			_, r, m := h.readyCondition("own")
			return r == "ValidationFailed" && m == "upstream https://upstream.test:6443 refused the store's credentials (401 Unauthorized)"
		}, 5*time.Second, 10*time.Millisecond)
	})

	t.Run("Credentials that may not get Secrets should turn the store ValidationFailed.", func(t *testing.T) {
		h := validatorWorld(t)
		h.access.Allow("get", false)
		end := runTerm(h.validator())
		defer end()
		assert.Eventually(t, func() bool {
			_, r, m := h.readyCondition("own")
			return r == "ValidationFailed" && m == `the store's credentials may not get Secrets in namespace "default" upstream`
		}, 5*time.Second, 10*time.Millisecond)
	})

	t.Run("A second term should validate again, and see new stores.", func(t *testing.T) {
		h := validatorWorld(t)
		v := h.validator()
		end := runTerm(v)
		require.Eventually(t, func() bool { s, _, _ := h.readyCondition("own"); return s == "True" }, 5*time.Second, 10*time.Millisecond)
		end()

		later := remotetest.Store(t, v1alpha1.SecretStoreKind, "team-a", "later", "").(*v1alpha1.SecretStore)
		_, err := h.storesAPI.SecretRelayV1alpha1().SecretStores("team-a").Create(context.Background(), later, metav1.CreateOptions{})
		require.NoError(t, err)
		time.Sleep(200 * time.Millisecond)
		s, _, _ := h.readyCondition("later")
		assert.Empty(t, s, "between terms nothing is validated")

		end = runTerm(v)
		defer end()
		assert.Eventually(t, func() bool { s, _, _ := h.readyCondition("later"); return s == "True" }, 5*time.Second, 10*time.Millisecond)
	})
}

func TestSpecChanged(t *testing.T) {
	obj := func(generation int64, rv string) *v1alpha1.SecretStore {
		return &v1alpha1.SecretStore{ObjectMeta: metav1.ObjectMeta{Generation: generation, ResourceVersion: rv}}
	}
	assert.True(t, specChanged(obj(1, "5"), obj(2, "6")), "a new generation is a spec change")
	assert.True(t, specChanged(obj(1, "5"), obj(1, "5")), "a resync is due for validation")
	assert.False(t, specChanged(obj(1, "5"), obj(1, "6")), "a status write is not")
}

func TestStoreValidatorCases(t *testing.T) {
	t.Run("A ClusterSecretStore whose credentials may read and write should be Valid and ReadWrite, with a Normal event.", func(t *testing.T) {
		h := newHarness(t, []runtime.Object{remotetest.Store(t, v1alpha1.ClusterSecretStoreKind, "", "shared", "[{namespaces: [team-a]}]")},
			[]runtime.Object{remotetest.Namespace("store-config", nil), remotetest.TokenSecret("store-config")}, nil)
		h.start()
		h.access.Allow("create", true)
		end := runTerm(h.validator())
		defer end()
		var got *v1alpha1.ClusterSecretStore
		require.Eventually(t, func() bool {
			s, err := h.storesAPI.SecretRelayV1alpha1().ClusterSecretStores().Get(context.Background(), "shared", metav1.GetOptions{})
			got = s
			return err == nil && meta.IsStatusConditionTrue(s.Status.Conditions, v1alpha1.ConditionReady)
		}, 5*time.Second, 10*time.Millisecond)
		assert.Equal(t, v1alpha1.CapabilitiesReadWrite, got.Status.Capabilities)
		assert.Equal(t, []string{"Normal Valid store validated"}, h.events())
	})

	t.Run("A misconfigured store should say what is wrong without asking upstream, and be Valid once fixed.", func(t *testing.T) {
		h := newHarness(t, []runtime.Object{remotetest.Store(t, v1alpha1.SecretStoreKind, "team-a", "own", "")},
			[]runtime.Object{remotetest.Namespace("team-a", nil)}, nil)
		h.start()
		v := h.validator()
		end := runTerm(v)
		defer end()
		require.Eventually(t, func() bool { _, r, _ := h.readyCondition("own"); return r == v1alpha1.ReasonInvalidStoreConfiguration }, 5*time.Second, 10*time.Millisecond)
		_, _, msg := h.readyCondition("own")
		assert.Equal(t, "Secret team-a/token not found", msg)
		assert.Equal(t, []string{"Warning InvalidStoreConfiguration Secret team-a/token not found"}, h.events())
		time.Sleep(1500 * time.Millisecond)
		assert.Empty(t, h.up.Actions(), "nothing asked upstream")
		assert.Equal(t, 1, h.statusWrites("own"), "a configuration error is not retried: the fix is an edit, which is an event")

		_, err := h.down.CoreV1().Secrets("team-a").Create(context.Background(), remotetest.TokenSecret("team-a"), metav1.CreateOptions{})
		require.NoError(t, err)
		store, err := h.stores.Get(context.Background(), "team-a", ownStore)
		require.NoError(t, err)
		v.Revalidate(store)
		assert.Eventually(t, func() bool { s, _, _ := h.readyCondition("own"); return s == "True" }, 5*time.Second, 10*time.Millisecond)
	})

	t.Run("A new generation should be validated again and observed.", func(t *testing.T) {
		h := validatorWorld(t)
		end := runTerm(h.validator())
		defer end()
		stores := h.storesAPI.SecretRelayV1alpha1().SecretStores("team-a")
		require.Eventually(t, func() bool { s, _, _ := h.readyCondition("own"); return s == "True" }, 5*time.Second, 10*time.Millisecond)
		s, err := stores.Get(context.Background(), "own", metav1.GetOptions{})
		require.NoError(t, err)
		s.Generation = 2
		s.Spec.Provider.Kubernetes.RemoteNamespace = "elsewhere"
		_, err = stores.Update(context.Background(), s, metav1.UpdateOptions{})
		require.NoError(t, err)
		assert.Eventually(t, func() bool {
			s, err := stores.Get(context.Background(), "own", metav1.GetOptions{})
			c := meta.FindStatusCondition(s.Status.Conditions, v1alpha1.ConditionReady)
			return err == nil && c != nil && c.ObservedGeneration == 2
		}, 5*time.Second, 10*time.Millisecond)
	})

	t.Run("A status write that fails should be retried; a store gone meanwhile should be let go.", func(t *testing.T) {
		h := validatorWorld(t)
		var fails atomic.Int32
		fails.Store(2)
		h.storesAPI.PrependReactor("update", "secretstores", func(a k8stesting.Action) (bool, runtime.Object, error) {
			if a.GetSubresource() == "status" && fails.Add(-1) >= 0 {
				return true, nil, apierrors.NewServiceUnavailable("etcd leader changed")
			}
			return false, nil, nil
		})
		v := h.validator()
		end := runTerm(v)
		defer end()
		assert.Eventually(t, func() bool { s, _, _ := h.readyCondition("own"); return s == "True" }, 5*time.Second, 10*time.Millisecond)
		assert.Equal(t, 3, h.statusWrites("own"), "two refused, the third written")

		gone := &remote.Store{Kind: v1alpha1.SecretStoreKind, Namespace: "team-a", Name: "gone"}
		v.Revalidate(gone)
		time.Sleep(200 * time.Millisecond)
		assert.Zero(t, h.statusWrites("gone"))
	})
}
