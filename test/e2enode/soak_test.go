package e2enode_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/secret-relay/secret-relay/relay"
	"github.com/secret-relay/secret-relay/test/node"
)

// Names the soak's bare pods share, so that one pod's admission often meets a copy
// the sweep has just marked, or is about to delete.
var soakShared = []string{"shared-0", "shared-1", "shared-2", "shared-3", "shared-4", "shared-5"}

// soak runs, in ns, for d: bare pods that come and go (each wanting a shared copy
// or one of its own), a Deployment scaled between zero and two, and upstream
// changes to the password they all relay. Every 200 ms it checks, through the API,
// that every copy a pod names in its status annotation (terminating pods too)
// exists, and that the Deployment's copy does. The relay's grace period is short
// (set by the caller), so the sweep deletes copies all along.
func (w *world) soak(t *testing.T, ns string, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w.seedStore(t, ns)
	c := w.node.Client
	web := soakDeployment(ns)
	_, err := c.AppsV1().Deployments(ns).Create(ctx, web, metav1.CreateOptions{})
	require.NoError(t, err)
	waitFor(t, 2*time.Minute, "the Deployment's copy", func() bool {
		_, err := c.CoreV1().Secrets(ns).Get(ctx, "web-copy", metav1.GetOptions{})
		return err == nil
	})

	var (
		mu         sync.Mutex
		violations []string
		createErrs []string
		created    int
		checks     int
		marks      = map[string]bool{}   // marks seen, by copy and time
		rescued    = map[string]bool{}   // of those, cleared with the copy still there
		lastMark   = map[string]string{} // by copy, at the last check
		wg         sync.WaitGroup
	)
	record := func(list *[]string, format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(*list) < 20 {
			*list = append(*list, fmt.Sprintf(format, args...))
		}
	}
	run := func(every time.Duration, f func(i int)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(every)
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
					f(i)
				}
			}
		}()
	}

	// Bare pods: one a second, each living 1–6 s.
	run(time.Second, func(i int) {
		copyName := fmt.Sprintf("once-%d", i)
		if i%4 != 0 {
			copyName = soakShared[rand.IntN(len(soakShared))]
		}
		name := fmt.Sprintf("bare-%d", i)
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"soak": "bare"},
				Annotations: soakAnnotations(copyName)},
			Spec: node.ReaderPodSpec(copyName, "password"),
		}
		if _, err := c.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			if ctx.Err() == nil {
				record(&createErrs, "%s: %v", name, err)
			}
			return
		}
		mu.Lock()
		created++
		mu.Unlock()
		lives := time.Second + rand.N(5*time.Second)
		time.AfterFunc(lives, func() {
			_ = c.CoreV1().Pods(ns).Delete(context.Background(), name, metav1.DeleteOptions{})
		})
	})
	// The Deployment: none, then two replicas, every 10 s.
	run(10*time.Second, func(i int) {
		replicas := 2 * (i % 2)
		_, err := c.AppsV1().Deployments(ns).Patch(ctx, web.Name, types.MergePatchType,
			fmt.Appendf(nil, `{"spec":{"replicas":%d}}`, replicas), metav1.PatchOptions{})
		if err != nil && ctx.Err() == nil {
			record(&createErrs, "scaling %s: %v", web.Name, err)
		}
	})
	// Upstream changes every 3 s, which the sync writes to every copy.
	run(3*time.Second, func(i int) {
		secrets := w.up.Client.CoreV1().Secrets("default")
		s, err := secrets.Get(ctx, "user-credentials", metav1.GetOptions{})
		if err == nil {
			s.Data["password"] = fmt.Appendf(nil, "soak-%d", i)
			_, err = secrets.Update(ctx, s, metav1.UpdateOptions{})
		}
		if err != nil && ctx.Err() == nil {
			record(&createErrs, "upstream change %d: %v", i, err)
		}
	})
	// The check: pods first, then copies. A copy is deleted only after the grace
	// period unused, far longer than the time between the two lists.
	run(200*time.Millisecond, func(int) {
		pods, err := c.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return
		}
		secrets, err := c.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return
		}
		exists := map[string]bool{}
		marked := map[string]string{}
		for _, s := range secrets.Items {
			exists[s.Name] = true
			if at, ok := s.Annotations[relay.AnnotationOrphanedAt]; ok {
				marked[s.Name] = s.Name + "@" + at
			}
		}
		mu.Lock()
		checks++
		for _, mark := range marked {
			marks[mark] = true
		}
		for name, mark := range lastMark {
			if exists[name] && marked[name] == "" {
				rescued[mark] = true
			}
		}
		lastMark = marked
		mu.Unlock()
		if !exists["web-copy"] {
			record(&violations, "%s: the copy of the live Deployment web is gone", time.Now().Format(time.StampMilli))
		}
		for _, p := range pods.Items {
			for _, name := range copiesNamed(p) {
				if !exists[name] {
					record(&violations, "%s: pod %s (terminating: %t) uses %s, which is gone",
						time.Now().Format(time.StampMilli), p.Name, p.DeletionTimestamp != nil, name)
				}
			}
		}
	})

	time.Sleep(d)
	cancel()
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	var deleted float64
	for _, p := range w.podsOf(t, relayNamespace, relaySelector) {
		deleted += w.metric(t, p.Name, "secret_relay_orphans_deleted_total")
	}
	t.Logf("soak of %s: %d bare pods created, %d checks, %d copies marked unused, %d of them unmarked again by a pod, %d orphaned copies deleted",
		d, created, checks, len(marks), len(rescued), int(deleted))
	assert.Empty(t, violations, "copies gone while a pod or owner used them")
	assert.Empty(t, createErrs, "failed creates, scales or upstream changes")
	assert.GreaterOrEqual(t, checks, int(d/time.Second)*3, "the check ran every 200 ms, near enough")
	assert.GreaterOrEqual(t, deleted, float64(created/8), "the sweep deleted copies all along")
	events, err := c.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{FieldSelector: "reason=FailedMount"})
	require.NoError(t, err)
	for _, e := range events.Items {
		t.Errorf("FailedMount on %s: %s", e.InvolvedObject.Name, e.Message)
	}

	// Once the bare pods are gone, so are their copies; the Deployment's stays.
	require.NoError(t, c.CoreV1().Pods(ns).DeleteCollection(context.Background(), metav1.DeleteOptions{},
		metav1.ListOptions{LabelSelector: "soak=bare"}))
	waitFor(t, time.Minute, "every bare pod's copy deleted", func() bool {
		secrets, err := c.CoreV1().Secrets(ns).List(context.Background(), metav1.ListOptions{LabelSelector: relay.LabelManagedBy})
		require.NoError(t, err)
		return len(secrets.Items) == 1 && secrets.Items[0].Name == "web-copy"
	})
}

// copiesNamed are the copies a pod's status annotation names.
func copiesNamed(p corev1.Pod) []string {
	var status map[string]json.RawMessage
	if json.Unmarshal([]byte(p.Annotations[relay.AnnotationStatus]), &status) != nil {
		return nil
	}
	names := make([]string, 0, len(status))
	for name := range status {
		names = append(names, name)
	}
	return names
}

func soakAnnotations(copyName string) map[string]string {
	return map[string]string{relay.AnnotationStore: "remote-k8s-store", relay.AnnotationSecrets: strings.ReplaceAll(`- name: NAME
  data:
  - secretKey: password
    remoteRef: {key: user-credentials, property: password}
`, "NAME", copyName)}
}

func soakDeployment(ns string) *appsv1.Deployment {
	return deployment(ns, "web", soakAnnotations("web-copy"), node.ReaderPodSpec("web-copy", "password"))
}
