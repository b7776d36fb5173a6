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

// TestRefCacheFollowsStores has two stores share a reference and one own another:
// informers run while some store references their object, stop when none does, and
// an object no store references is still read, live.
func TestRefCacheFollowsStores(t *testing.T) {
	// The fake clientset cannot stream a watch-list; real API servers can.
	t.Setenv("KUBE_FEATURE_WatchListClient", "false")
	kube := fake.NewClientset(
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "token"}, Data: map[string][]byte{"token": []byte("t")}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "ca"}, Data: map[string]string{"ca.crt": "pem"}},
	)
	r := NewRefCache(t.Context(), kube)
	token, ca := Reference{"Secret", "team-a", "token"}, Reference{"ConfigMap", "team-a", "ca"}
	r.Track("SecretStore team-a/one", []Reference{token, ca})
	r.Track("SecretStore team-a/two", []Reference{token})
	require.Len(t, r.informers, 2)
	caInformer := r.informers[refKey{"ConfigMap", "team-a", "ca"}]
	require.Eventually(t, caInformer.HasSynced, 5*time.Second, 10*time.Millisecond)
	before := len(kube.Actions())
	cm, err := r.ConfigMap(t.Context(), "team-a", "ca")
	require.NoError(t, err)
	assert.Equal(t, "pem", cm.Data["ca.crt"])
	assert.Len(t, kube.Actions(), before, "read from the cache, not the API")

	r.Track("SecretStore team-a/one", []Reference{token})
	assert.NotContains(t, r.informers, refKey{"ConfigMap", "team-a", "ca"}, "no store references the CA any more")
	assert.Eventually(t, caInformer.IsStopped, 5*time.Second, 10*time.Millisecond, "its watch ends")
	r.Track("SecretStore team-a/one", nil)
	assert.Contains(t, r.informers, refKey{"Secret", "team-a", "token"}, "the other store still references the token")
	r.Track("SecretStore team-a/two", nil)
	assert.Empty(t, r.informers)

	cm, err = r.ConfigMap(t.Context(), "team-a", "ca")
	require.NoError(t, err)
	assert.Equal(t, "pem", cm.Data["ca.crt"], "read live when no informer holds it")
}
