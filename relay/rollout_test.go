package relay_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	metadatafake "k8s.io/client-go/metadata/fake"

	"github.com/secret-relay/secret-relay/relay"
)

func TestMayFollow(t *testing.T) {
	web := relay.Workload{Ref: ownerOf(controllerRef("apps/v1", "Deployment", "web", "d-web")), Owns: true}
	api := relay.Workload{Ref: ownerOf(controllerRef("apps/v1", "Deployment", "api", "d-api")), Owns: true}
	gone := relay.Workload{Ref: web.Ref} // named, not known to exist
	copyOwnedBy := func(owners ...relay.Workload) *corev1.Secret {
		s := &corev1.Secret{}
		for _, o := range owners {
			s.OwnerReferences = append(s.OwnerReferences, o.Ref)
		}
		return s
	}
	for name, test := range map[string]struct {
		w     relay.Workload
		copy  *corev1.Secret
		users []relay.Workload
		want  bool
	}{
		"A copy owned and used by the workload alone should follow it.":  {w: web, copy: copyOwnedBy(web), users: []relay.Workload{web, web}, want: true},
		"A copy nobody owns or uses should follow any workload.":         {w: web, copy: copyOwnedBy(), want: true},
		"A copy nobody owns or uses should not follow a bare pod.":       {w: relay.Workload{}, copy: copyOwnedBy()},
		"A copy another workload owns should not follow.":                {w: web, copy: copyOwnedBy(web, api), users: []relay.Workload{web}},
		"A copy another workload's pod uses should not follow.":          {w: web, copy: copyOwnedBy(web), users: []relay.Workload{web, api}},
		"A copy a bare pod uses should not follow.":                      {w: web, copy: copyOwnedBy(web), users: []relay.Workload{{}}},
		"A copy a bare pod uses should not follow another bare pod.":     {w: relay.Workload{}, copy: copyOwnedBy(), users: []relay.Workload{{}}},
		"An owned copy should not follow a workload not known to exist.": {w: gone, copy: copyOwnedBy(web), users: []relay.Workload{web}},
		"An owned copy should not follow a bare pod.":                    {w: relay.Workload{}, copy: copyOwnedBy(web)},
	} {
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, test.want, relay.MayFollow(test.w, test.copy, test.users))
		})
	}
}

func TestTemplateReader(t *testing.T) {
	declaring := func(secrets string) corev1.PodTemplateSpec {
		return corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{relay.AnnotationSecrets: secrets}}}
	}
	meta := func(name, uid string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, Namespace: "prod", UID: types.UID(uid)}
	}
	cron := &batchv1.CronJob{ObjectMeta: meta("nightly", "cj-1")}
	cron.Spec.JobTemplate.Spec.Template = declaring("cron")
	r := relay.TemplateReader{Client: fake.NewClientset(
		&appsv1.Deployment{ObjectMeta: meta("web", "d-1"), Spec: appsv1.DeploymentSpec{Template: declaring("deployment")}},
		&appsv1.StatefulSet{ObjectMeta: meta("db", "ss-1"), Spec: appsv1.StatefulSetSpec{Template: declaring("statefulset")}},
		&appsv1.DaemonSet{ObjectMeta: meta("agent", "ds-1"), Spec: appsv1.DaemonSetSpec{Template: declaring("daemonset")}},
		&appsv1.ReplicaSet{ObjectMeta: meta("alone", "rs-1"), Spec: appsv1.ReplicaSetSpec{Template: declaring("replicaset")}},
		&batchv1.Job{ObjectMeta: meta("once", "j-1"), Spec: batchv1.JobSpec{Template: declaring("job")}},
		cron,
	)}
	for _, test := range []struct {
		ref  metav1.OwnerReference
		want string
	}{
		{controllerRef("apps/v1", "Deployment", "web", "d-1"), "deployment"},
		{controllerRef("apps/v1", "StatefulSet", "db", "ss-1"), "statefulset"},
		{controllerRef("apps/v1", "DaemonSet", "agent", "ds-1"), "daemonset"},
		{controllerRef("apps/v1", "ReplicaSet", "alone", "rs-1"), "replicaset"},
		{controllerRef("batch/v1", "Job", "once", "j-1"), "job"},
		{controllerRef("batch/v1", "CronJob", "nightly", "cj-1"), "cron"},
	} {
		got, err := r.TemplateOf(context.Background(), "prod", test.ref)
		require.NoError(t, err)
		require.NotNil(t, got, test.ref.Kind)
		assert.Equal(t, test.want, got.Annotations[relay.AnnotationSecrets])
	}
	t.Run("A workload of the same name and another UID should count as absent.", func(t *testing.T) {
		got, err := r.TemplateOf(context.Background(), "prod", controllerRef("apps/v1", "Deployment", "web", "d-old"))
		require.NoError(t, err)
		assert.Nil(t, got)
	})
	t.Run("A kind secret-relay cannot read should be an error.", func(t *testing.T) {
		_, err := r.TemplateOf(context.Background(), "prod", controllerRef("argoproj.io/v1alpha1", "Rollout", "web", "r-1"))
		assert.Error(t, err)
	})
	t.Run("A pod should declare what its template declares, store and secrets alike.", func(t *testing.T) {
		tpl := declaring("deployment")
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{relay.AnnotationSecrets: "deployment"}}}
		assert.True(t, relay.Declares(&tpl, pod))
		pod.Annotations[relay.AnnotationStore] = "other"
		assert.False(t, relay.Declares(&tpl, pod))
	})
}

func TestPodUsageUsers(t *testing.T) {
	t.Setenv("KUBE_FEATURE_WatchListClient", "false") // the fake cannot stream a watch-list
	scheme := runtime.NewScheme()
	require.NoError(t, metav1.AddMetaToScheme(scheme))
	pod := func(name string, refs ...metav1.OwnerReference) *metav1.PartialObjectMetadata {
		return &metav1.PartialObjectMetadata{
			TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "prod", OwnerReferences: refs,
				Labels:      map[string]string{relay.LabelRelayed: "true"},
				Annotations: map[string]string{relay.AnnotationStatus: `{"db":"hmac-sha256:1"}`}},
		}
	}
	rs := controllerRef("apps/v1", "ReplicaSet", "web-1", "rs-1")
	notController := ownerOf(controllerRef("v1", "ConfigMap", "x", "cm-1"))
	u := relay.NewPodUsage(metadatafake.NewSimpleMetadataClient(scheme, pod("web-1-a", rs), pod("bare", notController)))
	_, ok := u.Users("prod", "db")
	assert.False(t, ok, "not before the first list")
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go u.Run(ctx)
	require.Eventually(t, u.Synced, 5*time.Second, 10*time.Millisecond)
	users, ok := u.Users("prod", "db")
	require.True(t, ok)
	require.Len(t, users, 2)
	var names []string
	for _, r := range users {
		if r == nil {
			names = append(names, "bare")
			continue
		}
		names = append(names, r.Kind+"/"+r.Name+"/"+string(r.UID))
	}
	assert.ElementsMatch(t, []string{"ReplicaSet/web-1/rs-1", "bare"}, names)
	users, ok = u.Users("prod", "unused")
	assert.True(t, ok)
	assert.Empty(t, users)
}

// TestPodUsageFollowsPods: a pod's copies are found as it is created, changes what
// its status names, starts terminating and is deleted.
func TestPodUsageFollowsPods(t *testing.T) {
	t.Setenv("KUBE_FEATURE_WatchListClient", "false") // the fake cannot stream a watch-list
	scheme := runtime.NewScheme()
	require.NoError(t, metav1.AddMetaToScheme(scheme))
	client := metadatafake.NewSimpleMetadataClient(scheme)
	u := relay.NewPodUsage(client)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go u.Run(ctx)
	require.Eventually(t, u.Synced, 5*time.Second, 10*time.Millisecond)

	pods := client.Tracker()
	pod := &metav1.PartialObjectMetadata{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "web-a", Namespace: "prod",
			Labels:      map[string]string{relay.LabelRelayed: "true"},
			Annotations: map[string]string{relay.AnnotationStatus: `{"db":"hmac-sha256:1","api":"hmac-sha256:2"}`}},
	}
	require.NoError(t, pods.Create(relay.Pods, pod.DeepCopy(), "prod"))
	require.Eventually(t, func() bool { return u.UsedByLive("prod", "db") && u.UsedByLive("prod", "api") }, 5*time.Second, 10*time.Millisecond)
	assert.False(t, u.Used("other", "db"), "copies are per namespace")

	pod.Annotations[relay.AnnotationStatus] = `{"db":"hmac-sha256:1"}`
	require.NoError(t, pods.Update(relay.Pods, pod.DeepCopy(), "prod"))
	require.Eventually(t, func() bool { return !u.Used("prod", "api") }, 5*time.Second, 10*time.Millisecond, "a copy the pod names no more")
	assert.True(t, u.Used("prod", "db"))

	now := metav1.Now()
	pod.DeletionTimestamp = &now
	require.NoError(t, pods.Update(relay.Pods, pod.DeepCopy(), "prod"))
	require.Eventually(t, func() bool { return !u.UsedByLive("prod", "db") }, 5*time.Second, 10*time.Millisecond, "a terminating pod is not live")
	assert.True(t, u.Used("prod", "db"), "a terminating pod still uses its copies")

	require.NoError(t, pods.Delete(relay.Pods, "prod", "web-a"))
	require.Eventually(t, func() bool { return !u.Used("prod", "db") }, 5*time.Second, 10*time.Millisecond, "a deleted pod uses nothing")
	users, ok := u.Users("prod", "db")
	assert.True(t, ok)
	assert.Empty(t, users)
}
