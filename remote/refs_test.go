package remote

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// TestRefCacheStopsIdleInformers reads two references, keeps reading one, and lets
// the other go idle: only the idle one's informer is stopped, and reading it again
// still works.
func TestRefCacheStopsIdleInformers(t *testing.T) {
	// The fake clientset cannot stream a watch-list; real API servers can.
	t.Setenv("KUBE_FEATURE_WatchListClient", "false")
	kube := fake.NewClientset(
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "token"}, Data: map[string][]byte{"token": []byte("t")}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "ca"}, Data: map[string]string{"ca.crt": "pem"}},
	)
	r := NewRefCache(t.Context(), kube)
	now := time.Now()
	r.now = func() time.Time { return now }

	_, err := r.Secret(t.Context(), "team-a", "token")
	require.NoError(t, err)
	_, err = r.ConfigMap(t.Context(), "team-a", "ca")
	require.NoError(t, err)
	idle := r.informers[refKey{"ConfigMap", "team-a", "ca"}]
	require.Len(t, r.informers, 2)

	now = now.Add(refIdleTTL / 2)
	_, err = r.Secret(t.Context(), "team-a", "token")
	require.NoError(t, err)
	now = now.Add(refIdleTTL/2 + time.Second)
	r.stopIdle()

	assert.Contains(t, r.informers, refKey{"Secret", "team-a", "token"}, "read half a TTL ago: kept")
	assert.NotContains(t, r.informers, refKey{"ConfigMap", "team-a", "ca"}, "unread for a TTL: stopped")
	assert.Eventually(t, idle.IsStopped, 5*time.Second, 10*time.Millisecond, "its watch ends")

	cm, err := r.ConfigMap(t.Context(), "team-a", "ca")
	require.NoError(t, err)
	assert.Equal(t, "pem", cm.Data["ca.crt"], "read again after it was stopped")
	assert.Len(t, r.informers, 2)
}
