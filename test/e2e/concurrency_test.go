package e2e_test

import (
	"fmt"
	"slices"
	"sort"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/secret-relay/secret-relay/relay"
	"github.com/secret-relay/secret-relay/test/cluster"
)

// TestConcurrentAdmissions creates 200 pods at once over 20 namespaces and 10 remote
// Secrets: every pod is admitted, with no conflict surfaced, and exactly the
// expected local Secrets exist.
func TestConcurrentAdmissions(t *testing.T) {
	const (
		namespaces = 20
		secrets    = 10
		pods       = 200
	)
	w := newWorld(t)
	for i := range secrets {
		w.Up.CreateSecret(t, "default", fmt.Sprintf("shared-%d", i), map[string]string{"token": "s3cr3t-api-key"})
	}
	want := map[string][]string{}
	for i := range namespaces {
		ns := fmt.Sprintf("tenant-%d", i)
		w.SeedStore(t, ns, "remote-k8s-store")
	}
	for i := range pods {
		ns, secret := fmt.Sprintf("tenant-%d", i%namespaces), fmt.Sprintf("shared-%d", i%secrets)
		if !slices.Contains(want[ns], secret) {
			want[ns] = append(want[ns], secret)
		}
	}

	var wg sync.WaitGroup
	errs := make([]error, pods)
	for i := range pods {
		wg.Go(func() {
			ns, secret := fmt.Sprintf("tenant-%d", i%namespaces), fmt.Sprintf("shared-%d", i%secrets)
			_, errs[i] = w.Down.Client.CoreV1().Pods(ns).Create(cluster.Context(t), cluster.Pod(fmt.Sprintf("p-%d", i), map[string]string{
				relay.AnnotationStore: "remote-k8s-store", relay.AnnotationSecrets: fmt.Sprintf("[%q]", secret),
			}), metav1.CreateOptions{})
		})
	}
	wg.Wait()
	for i, err := range errs {
		assert.NoError(t, err, "pod %d", i)
	}

	for ns, names := range want {
		list, err := w.Down.Client.CoreV1().Secrets(ns).List(cluster.Context(t), metav1.ListOptions{LabelSelector: relay.LabelManagedBy + "=" + relay.ManagedByValue})
		require.NoError(t, err)
		var got []string
		for _, s := range list.Items {
			got = append(got, s.Name)
			assert.Equal(t, []byte("s3cr3t-api-key"), s.Data["token"])
		}
		sort.Strings(got)
		sort.Strings(names)
		assert.Equal(t, names, got, "namespace %s", ns)
	}
	t.Logf("%d pods over %d namespaces admitted, none failed", pods, namespaces)
}
