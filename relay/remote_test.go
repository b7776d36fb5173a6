package relay_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/secret-relay/secret-relay/relay"
)

func TestRemote(t *testing.T) {
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "db", UID: "uid-1", ResourceVersion: "7", Labels: map[string]string{"team": "a"}},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{"tls.key": []byte("KEY"), "tls.crt": []byte("CERT"), "ca.crt": {}},
	}
	r := relay.RemoteOf(s)

	t.Run("A Remote should keep the Secret's identity, version and type.", func(t *testing.T) {
		assert.Equal(t, s.UID, r.UID)
		assert.Equal(t, "7", r.ResourceVersion)
		assert.Equal(t, corev1.SecretTypeTLS, r.Type)
	})
	t.Run("Value should find every key, an empty value too, and no other.", func(t *testing.T) {
		for k, want := range s.Data {
			got, ok := r.Value(k)
			assert.True(t, ok, k)
			assert.Equal(t, want, got, k)
		}
		_, ok := r.Value("tls")
		assert.False(t, ok)
		_, ok = relay.RemoteOf(&corev1.Secret{}).Value("")
		assert.False(t, ok, "a Secret without data has no key")
	})
	t.Run("All should yield every key once, in key order, and stop when asked.", func(t *testing.T) {
		var keys []string
		for k := range r.All() {
			keys = append(keys, k)
		}
		assert.Equal(t, []string{"ca.crt", "tls.crt", "tls.key"}, keys)
		n := 0
		for range r.All() {
			n++
			break
		}
		assert.Equal(t, 1, n)
	})
}
