package webhook_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/secret-relay/secret-relay/relay"
	"github.com/secret-relay/secret-relay/webhook"
)

// heldSecrets is a downstream whose writes wait until the test lets each one
// through, and which records the order they were sent in.
type heldSecrets struct {
	versionedSecrets
	release chan struct{}
	mu      sync.Mutex
	sent    []string
}

func (h *heldSecrets) Apply(ctx context.Context, existing, desired *corev1.Secret, dryRun bool) error {
	h.mu.Lock()
	h.sent = append(h.sent, desired.Name)
	h.mu.Unlock()
	select {
	case <-h.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return h.versionedSecrets.Apply(ctx, existing, desired, dryRun)
}

func (h *heldSecrets) sentNames() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.sent...)
}

// TestAdmissionWritesInTurn: with more admissions writing than ConcurrentWrites,
// the rest wait in the order they came, and one whose deadline passes while it
// waits is denied without its write ever reaching the API server.
func TestAdmissionWritesInTurn(t *testing.T) {
	const pods = 4
	secrets := map[string]*corev1.Secret{}
	for i := range pods {
		name := fmt.Sprintf("db-%d", i)
		secrets[name] = &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("u-" + name), ResourceVersion: "1"},
			Data:       map[string][]byte{"password": []byte("s3cr3t-" + name)},
		}
	}
	local := &heldSecrets{release: make(chan struct{})}
	m, err := webhook.NewMutator(webhook.MutatorConfig{
		Stores: fakeStores{"remote-k8s-store": secrets}, Local: local, Tokens: testTokens,
		UpstreamTimeout: time.Hour, ConcurrentWrites: 1,
	})
	require.NoError(t, err)
	pod := func(i int) *corev1.Pod {
		return seedPod(map[string]string{
			relay.AnnotationStore:   "remote-k8s-store",
			relay.AnnotationSecrets: fmt.Sprintf(`[{name: copy-%d, data: [{secretKey: password, remoteRef: {key: db-%d, property: password}}]}]`, i, i),
		})
	}

	// Pod 0 holds the one slot; pods 1-3 queue behind it, one after the other.
	errs := make([]error, pods)
	var wg sync.WaitGroup
	start := func(ctx context.Context, i int) {
		wg.Go(func() { _, errs[i] = m.Relay(ctx, "default", pod(i), false) })
	}
	start(t.Context(), 0)
	require.Eventually(t, func() bool { return len(local.sentNames()) == 1 }, 5*time.Second, time.Millisecond)
	for i := 1; i < pods; i++ {
		ctx := t.Context()
		if i == 2 {
			// Pod 2 gives up while it waits: its write must never be sent.
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, 80*time.Millisecond)
			defer cancel()
		}
		start(ctx, i)
		// Let it reach the queue before the next: what comes before is in memory,
		// microseconds, so this leaves a loaded machine room to schedule it.
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(150 * time.Millisecond) // pod 2's deadline passes while pod 0 holds the slot
	for range pods - 1 {
		local.release <- struct{}{}
	}
	wg.Wait()

	assert.Equal(t, []string{"copy-0", "copy-1", "copy-3"}, local.sentNames(), "writes should be sent in the order the admissions came, without the one that gave up")
	for _, i := range []int{0, 1, 3} {
		assert.NoError(t, errs[i], "pod %d", i)
	}
	require.ErrorIs(t, errs[2], relay.ErrWriteFailed)
	assert.Equal(t, `could not write Secret "copy-2" in namespace "default": the downstream API server did not answer in time: `+
		"this admission waited for the writes of earlier ones until its deadline", webhook.Describe(errs[2]))
}
