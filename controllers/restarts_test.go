package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"

	"github.com/secret-relay/secret-relay/controllers"
	"github.com/secret-relay/secret-relay/relay"
)

// restartBed is a downstream cluster with Deployment web, which asks for restarts
// and owns copies a and b, and a restarter for one term.
type restartBed struct {
	t       *testing.T
	kube    *fake.Clientset
	events  *record.FakeRecorder
	mu      sync.Mutex
	patches int
}

func newRestartBed(t *testing.T, template map[string]string, minInterval time.Duration) *restartBed {
	t.Setenv("KUBE_FEATURE_WatchListClient", "false") // the fake cannot stream a watch-list
	owner := metav1.OwnerReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "web", UID: "d-web", Controller: ptr.To(false)}
	web := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "prod", UID: "d-web"}}
	web.Spec.Template.Annotations = template
	b := &restartBed{t: t, events: record.NewFakeRecorder(20)}
	b.kube = fake.NewClientset(web, withToken(managedCopy("a", owner), "1"), withToken(managedCopy("b", owner), "1"), withToken(managedCopy("unowned"), "1"))
	b.kube.PrependReactor("patch", "deployments", func(k8stesting.Action) (bool, runtime.Object, error) {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.patches++
		return false, nil, nil
	})
	copies := relay.NewManagedSecrets(b.kube)
	r, err := controllers.NewRestarter(controllers.RestartConfig{Copies: copies.Informer(), Client: b.kube, Recorder: b.events,
		Quiet: 200 * time.Millisecond, MinInterval: minInterval})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go copies.Run(ctx)
	require.Eventually(t, copies.Synced, 5*time.Second, 10*time.Millisecond)
	go func() { _ = r.Run(ctx) }()
	return b
}

func withToken(s *corev1.Secret, token string) *corev1.Secret {
	s.Annotations[relay.AnnotationDataHash] = "hmac-sha256:" + token
	return s
}

// change updates copy name through the API, as a write by the leader would.
func (b *restartBed) change(name string, edit func(*corev1.Secret)) {
	secrets := b.kube.CoreV1().Secrets("prod")
	s, err := secrets.Get(context.Background(), name, metav1.GetOptions{})
	require.NoError(b.t, err)
	edit(s)
	_, err = secrets.Update(context.Background(), s, metav1.UpdateOptions{})
	require.NoError(b.t, err)
}

func (b *restartBed) restartedAt() string {
	d, err := b.kube.AppsV1().Deployments("prod").Get(context.Background(), "web", metav1.GetOptions{})
	require.NoError(b.t, err)
	return d.Spec.Template.Annotations[relay.AnnotationRestartedAt]
}

func (b *restartBed) patched() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.patches
}

// newData gives a copy new data, and its token.
func newData(value string) func(*corev1.Secret) {
	return func(s *corev1.Secret) {
		s.Data = map[string][]byte{"k": []byte(value)}
		s.Annotations[relay.AnnotationDataHash] = "hmac-sha256:" + value
	}
}

func TestRestarter(t *testing.T) {
	asks := map[string]string{relay.AnnotationRestartOnChange: "true"}

	t.Run("One change of two copies of a workload that asks should restart it once, with an event naming both.", func(t *testing.T) {
		b := newRestartBed(t, asks, time.Millisecond) // the quiet period alone makes it one
		b.change("a", newData("2"))
		b.change("b", newData("2"))
		require.Eventually(t, func() bool { return b.restartedAt() != "" }, 5*time.Second, 20*time.Millisecond)
		_, err := time.Parse(time.RFC3339, b.restartedAt())
		assert.NoError(t, err)
		time.Sleep(500 * time.Millisecond) // more than the quiet period
		assert.Equal(t, 1, b.patched())
		assert.Contains(t, <-b.events.Events, "Normal Restarted secret-relay restarted Deployment/web: its copies a, b changed")

		t.Run("and a change after the quiet period should restart it again.", func(t *testing.T) {
			b.change("a", newData("3"))
			require.Eventually(t, func() bool { return b.patched() == 2 }, 5*time.Second, 20*time.Millisecond)
		})
	})

	t.Run("Nothing but a change of data should restart: metadata, a new token key, a new source, a copy without owners.", func(t *testing.T) {
		b := newRestartBed(t, asks, time.Hour)
		b.change("a", func(s *corev1.Secret) { s.Labels["team"] = "x"; s.Annotations[relay.AnnotationSyncedAt] = "now" })
		b.change("b", func(s *corev1.Secret) {
			s.Annotations[relay.AnnotationSource] = `{"store":"SecretStore/other"}`
			s.Annotations[relay.AnnotationDataHash] = "hmac-sha256:9"
		})
		b.change("unowned", newData("2"))
		b.change("a", func(s *corev1.Secret) { s.Annotations[relay.AnnotationDataHash] = "hmac-sha256:new-key" })
		time.Sleep(500 * time.Millisecond)
		assert.Zero(t, b.patched())
	})

	t.Run("A workload that does not ask should not be restarted.", func(t *testing.T) {
		b := newRestartBed(t, map[string]string{relay.AnnotationRestartOnChange: "false"}, time.Hour)
		b.change("a", newData("2"))
		time.Sleep(500 * time.Millisecond)
		assert.Zero(t, b.patched())
	})

	t.Run("A workload restarted less than the least interval ago should wait.", func(t *testing.T) {
		b := newRestartBed(t, map[string]string{relay.AnnotationRestartOnChange: "true",
			relay.AnnotationRestartedAt: time.Now().UTC().Format(time.RFC3339)}, time.Hour)
		b.change("a", newData("2"))
		time.Sleep(500 * time.Millisecond)
		assert.Zero(t, b.patched())
	})

	t.Run("Without the RBAC, each changed copy should get a Warning event saying what to enable.", func(t *testing.T) {
		b := newRestartBed(t, asks, time.Hour)
		b.kube.PrependReactor("patch", "deployments", func(k8stesting.Action) (bool, runtime.Object, error) {
			return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "apps", Resource: "deployments"}, "web", fmt.Errorf("no"))
		})
		b.change("a", newData("2"))
		var event string
		require.Eventually(t, func() bool {
			select {
			case event = <-b.events.Events:
				return true
			default:
				return false
			}
		}, 5*time.Second, 20*time.Millisecond)
		assert.True(t, strings.HasPrefix(event, "Warning RestartForbidden Deployment/web asks for restart-on-change"), event)
		assert.Contains(t, event, "restartOnChange.enabled=true")
		assert.Contains(t, event, "manifests/components/restart-on-change")
		assert.Empty(t, b.restartedAt())
	})

	t.Run("A workload of the same name and another UID should not be restarted.", func(t *testing.T) {
		b := newRestartBed(t, asks, time.Hour)
		require.NoError(t, b.kube.AppsV1().Deployments("prod").Delete(context.Background(), "web", metav1.DeleteOptions{}))
		other := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "prod", UID: types.UID("d-new")}}
		other.Spec.Template.Annotations = asks
		_, err := b.kube.AppsV1().Deployments("prod").Create(context.Background(), other, metav1.CreateOptions{})
		require.NoError(t, err)
		b.change("a", newData("2"))
		time.Sleep(500 * time.Millisecond)
		assert.Zero(t, b.patched())
	})
}
