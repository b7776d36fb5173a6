package relay_test

import (
	"bytes"
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/secret-relay/secret-relay/relay"
)

func runTokens(t *testing.T, kube *fake.Clientset, changed func()) *relay.KeyedTokens {
	t.Helper()
	k := relay.NewKeyedTokens(kube, "secret-relay", nil, changed)
	go k.Run(t.Context())
	require.Eventually(t, k.Loaded, 5*time.Second, 10*time.Millisecond)
	return k
}

// watching returns a channel closed once the first watch of Secrets is open: a fake
// clientset, unlike an API server, loses what happens between a list and its watch.
func watching(kube *fake.Clientset) <-chan struct{} {
	open := make(chan struct{})
	var once sync.Once
	kube.PrependWatchReactor("secrets", func(a k8stesting.Action) (bool, watch.Interface, error) {
		w, err := kube.Tracker().Watch(a.GetResource(), a.GetNamespace(), a.(k8stesting.WatchActionImpl).ListOptions)
		once.Do(func() { close(open) })
		return true, w, err
	})
	return open
}

func keySecret(t *testing.T, kube *fake.Clientset) *corev1.Secret {
	t.Helper()
	s, err := kube.CoreV1().Secrets("secret-relay").Get(context.Background(), relay.TokenKeySecret, metav1.GetOptions{})
	require.NoError(t, err)
	return s
}

func TestKeyedTokens(t *testing.T) {
	// The fake clientset cannot stream a watch-list; real API servers can.
	t.Setenv("KUBE_FEATURE_WatchListClient", "false")
	data := map[string][]byte{"username": []byte("peter")}

	t.Run("The first replica should create the key, and the next should use it.", func(t *testing.T) {
		kube := fake.NewClientset()
		first := runTokens(t, kube, nil)
		s := keySecret(t, kube)
		assert.Len(t, s.Data["key"], 32)
		assert.Empty(t, s.Labels[relay.LabelManagedBy], "not a relayed copy")
		second := runTokens(t, kube, nil)
		assert.Equal(t, first.Token(data), second.Token(data), "every replica makes the same tokens")
	})

	t.Run("A deleted key should be written again with the key in hand.", func(t *testing.T) {
		kube := fake.NewClientset()
		open := watching(kube)
		k := runTokens(t, kube, nil)
		before := k.Token(data)
		<-open
		require.NoError(t, kube.CoreV1().Secrets("secret-relay").Delete(context.Background(), relay.TokenKeySecret, metav1.DeleteOptions{}))
		require.Eventually(t, func() bool {
			_, err := kube.CoreV1().Secrets("secret-relay").Get(context.Background(), relay.TokenKeySecret, metav1.GetOptions{})
			return err == nil
		}, 5*time.Second, 10*time.Millisecond)
		assert.Equal(t, before, k.Token(data))
		again := runTokens(t, kube, nil)
		assert.Equal(t, before, again.Token(data), "a restarted replica reads the same key")
	})

	t.Run("A key deleted before the watch began should be written again.", func(t *testing.T) {
		kube := fake.NewClientset()
		var once atomic.Bool
		// The Secret goes between the first load and the watch's first list: the
		// list finds nothing, so no deletion is ever delivered.
		kube.PrependReactor("list", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
			if once.CompareAndSwap(false, true) {
				require.NoError(t, kube.Tracker().Delete(corev1.SchemeGroupVersion.WithResource("secrets"), "secret-relay", relay.TokenKeySecret))
			}
			return false, nil, nil
		})
		k := runTokens(t, kube, nil)
		before := k.Token(data)
		require.Eventually(t, once.Load, 5*time.Second, 10*time.Millisecond)
		require.Eventually(t, func() bool {
			_, err := kube.CoreV1().Secrets("secret-relay").Get(context.Background(), relay.TokenKeySecret, metav1.GetOptions{})
			return err == nil
		}, 5*time.Second, 10*time.Millisecond, "another replica would otherwise make a key of its own")
		assert.Equal(t, before, runTokens(t, kube, nil).Token(data))
	})

	t.Run("A replaced key should be adopted, and copies re-annotated.", func(t *testing.T) {
		kube := fake.NewClientset()
		var changes atomic.Int32
		open := watching(kube)
		k := runTokens(t, kube, func() { changes.Add(1) })
		before := k.Token(data)
		<-open
		s := keySecret(t, kube)
		s.Data["key"] = bytes.Repeat([]byte("n"), 32)
		_, err := kube.CoreV1().Secrets("secret-relay").Update(context.Background(), s, metav1.UpdateOptions{})
		require.NoError(t, err)
		require.Eventually(t, func() bool { return k.Token(data) != before }, 5*time.Second, 10*time.Millisecond)
		assert.Equal(t, int32(1), changes.Load())
	})

	t.Run("An unusable key should be ignored, keeping the key in hand.", func(t *testing.T) {
		kube := fake.NewClientset()
		open := watching(kube)
		k := runTokens(t, kube, nil)
		before := k.Token(data)
		<-open
		s := keySecret(t, kube)
		s.Data["key"] = []byte("short")
		_, err := kube.CoreV1().Secrets("secret-relay").Update(context.Background(), s, metav1.UpdateOptions{})
		require.NoError(t, err)
		time.Sleep(200 * time.Millisecond)
		assert.Equal(t, before, k.Token(data))
	})

	t.Run("A key written before start should be used.", func(t *testing.T) {
		key := bytes.Repeat([]byte("p"), 32)
		kube := fake.NewClientset(&corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: "secret-relay", Name: relay.TokenKeySecret},
			Data:       map[string][]byte{"key": key},
		})
		k := runTokens(t, kube, nil)
		want, err := relay.NewTokenKey(key)
		require.NoError(t, err)
		assert.Equal(t, want.Token(data), k.Token(data))
	})

}
