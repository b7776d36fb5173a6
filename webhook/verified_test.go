package webhook_test

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/secret-relay/secret-relay/relay"
	"github.com/secret-relay/secret-relay/webhook"
)

// versionedSecrets is a downstream that versions what it stores, as an API server
// does (the fake clientset does not).
type versionedSecrets struct {
	mu      sync.Mutex
	version int
	objs    map[string]*corev1.Secret
	writes  int
}

func (v *versionedSecrets) Get(_ context.Context, ns, name string) (*corev1.Secret, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.objs[ns+"/"+name], nil
}

func (v *versionedSecrets) Latest(ctx context.Context, ns, name string) (*corev1.Secret, error) {
	return v.Get(ctx, ns, name)
}

func (v *versionedSecrets) Apply(_ context.Context, _, desired *corev1.Secret, dryRun bool) error {
	if !dryRun {
		v.put(desired.DeepCopy())
		v.mu.Lock()
		v.writes++
		v.mu.Unlock()
	}
	return nil
}

func (v *versionedSecrets) put(s *corev1.Secret) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.version++
	s.ResourceVersion = strconv.Itoa(v.version)
	if v.objs == nil {
		v.objs = map[string]*corev1.Secret{}
	}
	v.objs[s.Namespace+"/"+s.Name] = s
}

// countingTokens counts the tokens it makes.
type countingTokens struct {
	relay.Tokenizer
	n atomic.Int32
}

func (c *countingTokens) Token(data map[string][]byte) string {
	c.n.Add(1)
	return c.Tokenizer.Token(data)
}

func TestWarmAdmissionMemo(t *testing.T) {
	newWorld := func(t *testing.T) (*webhook.Mutator, *versionedSecrets, *countingTokens, fakeStores) {
		stores := fakeStores{"remote-k8s-store": {"user-credentials": {
			ObjectMeta: metav1.ObjectMeta{Name: "user-credentials", Namespace: "default", UID: "u1", ResourceVersion: "10"},
			Data:       map[string][]byte{"username": []byte("peter")},
		}}}
		local := &versionedSecrets{}
		tokens := &countingTokens{Tokenizer: testTokens}
		m, err := webhook.NewMutator(webhook.MutatorConfig{Stores: stores, Local: local, Tokens: tokens})
		require.NoError(t, err)
		return m, local, tokens, stores
	}
	admit := func(t *testing.T, m *webhook.Mutator) (*corev1.Pod, error) {
		pod := seedWith(seedSecrets)
		_, err := m.Relay(context.Background(), "default", pod, false)
		return pod, err
	}

	// remembered admits the seed pod twice: the first writes its copy, the second
	// finds it current and remembers it.
	remembered := func(t *testing.T, m *webhook.Mutator) {
		for range 2 {
			_, err := admit(t, m)
			require.NoError(t, err)
		}
	}

	t.Run("A warm admission at unchanged versions should not plan the copies again.", func(t *testing.T) {
		m, local, tokens, _ := newWorld(t)
		first, err := admit(t, m) // writes the copy
		require.NoError(t, err)
		_, err = admit(t, m) // verifies it, and remembers
		require.NoError(t, err)
		tokens.n.Store(0)
		warm, err := admit(t, m)
		require.NoError(t, err)
		assert.Equal(t, int32(1), tokens.n.Load(), "one token, of no data: the key's probe")
		assert.Equal(t, first.Annotations, warm.Annotations, "the same pod as planning gives")
		assert.Equal(t, 1, local.writes)
	})

	t.Run("An upstream change should be planned and written.", func(t *testing.T) {
		m, local, _, stores := newWorld(t)
		remembered(t, m)
		changed := stores["remote-k8s-store"]["user-credentials"]
		changed.ResourceVersion, changed.Data = "11", map[string][]byte{"username": []byte("paul")}
		_, err := admit(t, m)
		require.NoError(t, err)
		assert.Equal(t, 2, local.writes)
		s, _ := local.Get(context.Background(), "default", "pulled-secrets")
		assert.Equal(t, "paul", string(s.Data["username"]))
	})

	t.Run("A copy edited by hand should be put back.", func(t *testing.T) {
		m, local, _, _ := newWorld(t)
		remembered(t, m)
		edited, _ := local.Get(context.Background(), "default", "pulled-secrets")
		edited = edited.DeepCopy()
		edited.Data["username"] = []byte("mallory")
		local.put(edited)
		_, err := admit(t, m)
		require.NoError(t, err)
		s, _ := local.Get(context.Background(), "default", "pulled-secrets")
		assert.Equal(t, "peter", string(s.Data["username"]))
	})

	t.Run("A store the namespace may no longer use should deny, remembered or not.", func(t *testing.T) {
		m, _, _, stores := newWorld(t)
		remembered(t, m)
		delete(stores, "remote-k8s-store")
		_, err := admit(t, m)
		require.Error(t, err)
	})
}
