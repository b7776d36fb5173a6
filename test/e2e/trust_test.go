package e2e_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"

	"github.com/secret-relay/secret-relay/certs/certstest"
	"github.com/secret-relay/secret-relay/relay"
	"github.com/secret-relay/secret-relay/test/cluster"
)

// The store-reference namespace of the ClusterSecretStores in these tests: it holds
// the seed's token Secret and CA ConfigMap.
const storeConfigNamespace = "store-config"

// clusterStore creates a ClusterSecretStore reading the upstream default namespace
// with the seed's reader, limited by conditions (YAML, may be empty).
func clusterStore(t *testing.T, w *cluster.World, name, conditions string) {
	t.Helper()
	w.SeedStoreRefs(t, storeConfigNamespace)
	spec := ""
	if conditions != "" {
		spec = "  conditions:\n" + conditions
	}
	w.Apply(t, fmt.Sprintf(`
apiVersion: secret-relay.io/v1alpha1
kind: ClusterSecretStore
metadata: {name: %s}
spec:
%s
  provider:
    kubernetes:
      server:
        url: %s
        caProvider: {type: ConfigMap, name: kube-root-remote-ca.crt, key: ca.crt, namespace: %s}
      auth:
        token:
          bearerToken: {name: remote-sa-token, key: token, namespace: %s}
`, name, spec, w.Up.URL(), storeConfigNamespace, storeConfigNamespace))
}

func createPod(t *testing.T, w *cluster.World, ns, name, store, secrets string) (*corev1.Pod, error) {
	t.Helper()
	return w.Down.Client.CoreV1().Pods(ns).Create(cluster.Context(t), cluster.Pod(name, map[string]string{
		relay.AnnotationStore: store, relay.AnnotationSecrets: secrets,
	}), metav1.CreateOptions{})
}

func localSecret(t *testing.T, w *cluster.World, ns, name string) *corev1.Secret {
	t.Helper()
	s, err := w.Down.Client.CoreV1().Secrets(ns).Get(cluster.Context(t), name, metav1.GetOptions{})
	require.NoError(t, err)
	return s
}

// setUpstreamValue writes key=value into upstream Secret default/name, creating it.
func setUpstreamValue(t *testing.T, w *cluster.World, name, key, value string) {
	t.Helper()
	secrets := w.Up.Client.CoreV1().Secrets("default")
	s, err := secrets.Get(cluster.Context(t), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		w.Up.CreateSecret(t, "default", name, map[string]string{key: value})
		return
	}
	require.NoError(t, err)
	s.Data[key] = []byte(value)
	_, err = secrets.Update(cluster.Context(t), s, metav1.UpdateOptions{})
	require.NoError(t, err)
}

// eventsOn lists the events on a downstream object of kind with reason; none when
// they cannot be read. It is safe to poll with Eventually.
func eventsOn(t *testing.T, w *cluster.World, ns, kind, name, reason string) []corev1.Event {
	list, err := w.Down.Client.CoreV1().Events(ns).List(cluster.Context(t), metav1.ListOptions{
		FieldSelector: fields.Set{"involvedObject.name": name, "involvedObject.kind": kind, "reason": reason}.String(),
	})
	if err != nil {
		return nil
	}
	return list.Items
}

// copyValue is one key of a downstream Secret, or "" when it cannot be read. It is
// safe to poll with Eventually.
func copyValue(t *testing.T, w *cluster.World, ns, name, key string) string {
	s, err := w.Down.Client.CoreV1().Secrets(ns).Get(cluster.Context(t), name, metav1.GetOptions{})
	if err != nil {
		return ""
	}
	return string(s.Data[key])
}

// unkeyedDigest is the hash older versions wrote on pods and copies: SHA-256 over the
// sorted, length-delimited data, with no key. Anyone who may read pods can test a
// guess against it.
func unkeyedDigest(data map[string][]byte) string {
	return hex.EncodeToString(relay.LengthDelimitedSum(sha256.New(), data))
}

// countModified counts the Modified events a watch delivers within window.
func countModified(watcher watch.Interface, window time.Duration) int {
	n := 0
	deadline := time.After(window)
	for {
		select {
		case ev := <-watcher.ResultChan():
			if ev.Type == watch.Modified {
				n++
			}
		case <-deadline:
			return n
		}
	}
}

// revocableStore makes, upstream, namespace ns with the seed's user-credentials and
// a reader of its own, and downstream a SecretStore named revocable reading it with
// that reader's token, and waits until it is Valid. Revoking the reader touches no
// other test.
func revocableStore(t *testing.T, w *cluster.World, ns string) cluster.Reader {
	t.Helper()
	w.Up.EnsureNamespace(t, ns)
	w.Up.CreateSecret(t, ns, "user-credentials", map[string]string{"username": "peter"})
	reader := w.Up.SeedReader(t, ns)
	w.SeedTokenStore(t, ns, "revocable", w.Up.URL(), ns, reader.Token)
	waitForStoreStatus(t, w, ns, "revocable", "True", "Valid", 10*time.Second)
	return reader
}

// TestTrust is the trust issue's attacks and bad days on one relay: every path that
// writes passes the same authorization, and every write failure is a denial.
func TestTrust(t *testing.T) {
	w := newWorld(t)
	w.SeedStore(t, "default", "remote-k8s-store")

	t.Run("A forged copy in a namespace the store excludes should never be filled.", func(t *testing.T) {
		t.Parallel()
		clusterStore(t, w, "team-a-only", "  - namespaces: [team-a]\n")
		w.Down.EnsureNamespace(t, "team-a")
		w.Down.EnsureNamespace(t, "evil")
		_, err := createPod(t, w, "team-a", "app", "ClusterSecretStore/team-a-only", seedAnnotation)
		require.NoError(t, err)
		real := localSecret(t, w, "team-a", "pulled-secrets")

		// A tenant who may create Secrets in evil copies what a copy looks like.
		forged := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{
				Name:        "pulled-secrets",
				Labels:      map[string]string{relay.LabelManagedBy: relay.ManagedByValue},
				Annotations: map[string]string{relay.AnnotationSource: real.Annotations[relay.AnnotationSource], relay.AnnotationDataHash: "0"},
			},
			Data: map[string][]byte{"username": []byte("nobody")},
		}
		_, err = w.Down.Client.CoreV1().Secrets("evil").Create(cluster.Context(t), forged, metav1.CreateOptions{})
		require.NoError(t, err)

		require.Eventually(t, func() bool {
			return len(eventsOn(t, w, "evil", "Secret", "pulled-secrets", "AccessDenied")) > 0
		}, 10*time.Second, 100*time.Millisecond, "a Warning event on the forged copy")
		ev := eventsOn(t, w, "evil", "Secret", "pulled-secrets", "AccessDenied")[0]
		assert.Equal(t, corev1.EventTypeWarning, ev.Type)
		assert.Contains(t, ev.Message, `namespace "evil" may not use store ClusterSecretStore/team-a-only`)
		// Long past the ~200 ms in which the sync filled it before.
		time.Sleep(2 * time.Second)
		s := localSecret(t, w, "evil", "pulled-secrets")
		assert.Equal(t, map[string][]byte{"username": []byte("nobody")}, s.Data, "forged copies filled: 0")
	})

	t.Run("A copy whose namespace loses access should keep its data, stop following and get a Warning event.", func(t *testing.T) {
		t.Parallel()
		setUpstreamValue(t, w, "losing-access", "username", "peter")
		clusterStore(t, w, "labelled-only", "  - namespaceSelector: {matchLabels: {relay: allowed}}\n")
		annotation := `[{name: creds, data: [{secretKey: username, remoteRef: {key: losing-access, property: username}}]}]`
		for _, ns := range []string{"keeps-access", "loses-access"} {
			w.Down.EnsureNamespace(t, ns, map[string]string{"relay": "allowed"})
			_, err := createPod(t, w, ns, "app", "ClusterSecretStore/labelled-only", annotation)
			require.NoError(t, err)
		}
		ns, err := w.Down.Client.CoreV1().Namespaces().Get(cluster.Context(t), "loses-access", metav1.GetOptions{})
		require.NoError(t, err)
		delete(ns.Labels, "relay")
		_, err = w.Down.Client.CoreV1().Namespaces().Update(cluster.Context(t), ns, metav1.UpdateOptions{})
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			return len(eventsOn(t, w, "loses-access", "Secret", "creds", "AccessDenied")) > 0
		}, 10*time.Second, 100*time.Millisecond, "a Warning event on the copy that lost access")

		setUpstreamValue(t, w, "losing-access", "username", "s3cr3t-rotated-username")
		require.Eventually(t, func() bool {
			return copyValue(t, w, "keeps-access", "creds", "username") == "s3cr3t-rotated-username"
		}, 5*time.Second, 50*time.Millisecond, "the copy that keeps access follows")
		time.Sleep(time.Second)
		assert.Equal(t, "peter", copyValue(t, w, "loses-access", "creds", "username"), "kept, not refreshed")
	})

	t.Run("A change of remoteNamespace should reach admission and sync within 10 s.", func(t *testing.T) {
		t.Parallel()
		ctx := cluster.Context(t)
		// An upstream account that may read both namespaces.
		w.Up.EnsureNamespace(t, "moved-to")
		w.Up.CreateSecret(t, "moved-to", "moving-creds", map[string]string{"username": "s3cr3t-rotated-username"})
		setUpstreamValue(t, w, "moving-creds", "username", "peter")
		for _, upNS := range []string{"default", "moved-to"} {
			w.Up.SeedReader(t, upNS) // the seed's Role in upNS
			_, err := w.Up.Client.RbacV1().RoleBindings(upNS).Create(ctx, &rbacv1.RoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: "mover"},
				Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "mover", Namespace: "default"}},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: cluster.ReaderRole},
			}, metav1.CreateOptions{})
			require.NoError(t, err)
		}
		_, err := w.Up.Client.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "mover"}}, metav1.CreateOptions{})
		require.NoError(t, err)
		ns := "mover"
		w.SeedTokenStore(t, ns, "moving", w.Up.URL(), "default", w.Up.Token(t, "default", "mover"))
		annotation := `[{name: creds, data: [{secretKey: username, remoteRef: {key: moving-creds, property: username}}]}]`
		_, err = createPod(t, w, ns, "before", "moving", annotation)
		require.NoError(t, err)
		require.Equal(t, "peter", copyValue(t, w, ns, "creds", "username"))

		store, err := w.Dynamic.Resource(storeGVR).Namespace(ns).Get(ctx, "moving", metav1.GetOptions{})
		require.NoError(t, err)
		require.NoError(t, setNested(store.Object, "moved-to", "spec", "provider", "kubernetes", "remoteNamespace"))
		_, err = w.Dynamic.Resource(storeGVR).Namespace(ns).Update(ctx, store, metav1.UpdateOptions{})
		require.NoError(t, err)
		changed := time.Now()
		require.Eventually(t, func() bool {
			return copyValue(t, w, ns, "creds", "username") == "s3cr3t-rotated-username"
		}, 10*time.Second, 50*time.Millisecond, "the copy is synced from the new namespace")
		t.Logf("the copy followed the new remoteNamespace %s after the change", time.Since(changed).Round(time.Millisecond))
		_, err = createPod(t, w, ns, "after", "moving", `[{name: other, data: [{secretKey: u, remoteRef: {key: moving-creds, property: username}}]}]`)
		require.NoError(t, err)
		assert.Equal(t, "s3cr3t-rotated-username", copyValue(t, w, ns, "other", "u"), "admission reads the new namespace")
		waitForStoreStatus(t, w, ns, "moving", "True", "Valid", 10*time.Second)
	})

	t.Run("A change of the CA ConfigMap or token Secret a store reads should apply within 10 s.", func(t *testing.T) {
		t.Parallel()
		ns := "ref-change"
		ctx := cluster.Context(t)
		w.SeedStore(t, ns, "remote-k8s-store")
		_, err := createPod(t, w, ns, "before", "remote-k8s-store", seedAnnotation)
		require.NoError(t, err)
		waitForStoreStatus(t, w, ns, "remote-k8s-store", "True", "Valid", 10*time.Second)
		item := func(name string) string {
			return fmt.Sprintf(`[{name: %s, data: [{secretKey: username, remoteRef: {key: user-credentials, property: username}}]}]`, name)
		}

		// Another CA: the upstream's certificate no longer verifies.
		other, err := certstest.NewCA("not-the-upstream")
		require.NoError(t, err)
		configMaps := w.Down.Client.CoreV1().ConfigMaps(ns)
		setCA := func(pem []byte) {
			cm, err := configMaps.Get(ctx, "kube-root-remote-ca.crt", metav1.GetOptions{})
			require.NoError(t, err)
			cm.Data["ca.crt"] = string(pem)
			_, err = configMaps.Update(ctx, cm, metav1.UpdateOptions{})
			require.NoError(t, err)
		}
		setCA(other.CertPEM())
		waitForStoreStatus(t, w, ns, "remote-k8s-store", "False", "ValidationFailed", 10*time.Second)
		assert.Contains(t, storeStatusOf(t, w, ns, "remote-k8s-store").message, "x509: certificate signed by unknown authority")
		_, err = createPod(t, w, ns, "wrong-ca", "remote-k8s-store", item("wrong-ca"))
		require.Error(t, err)
		assert.Contains(t, err.Error(), "x509: certificate signed by unknown authority")
		setCA(w.Up.CA())
		waitForStoreStatus(t, w, ns, "remote-k8s-store", "True", "Valid", 10*time.Second)

		// Another token: an account upstream with no access to Secrets.
		_, err = w.Up.Client.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "nobody"}}, metav1.CreateOptions{})
		require.NoError(t, err)
		secrets := w.Down.Client.CoreV1().Secrets(ns)
		setToken := func(token string) {
			s, err := secrets.Get(ctx, "remote-sa-token", metav1.GetOptions{})
			require.NoError(t, err)
			s.Data["token"] = []byte(token)
			_, err = secrets.Update(ctx, s, metav1.UpdateOptions{})
			require.NoError(t, err)
		}
		setToken(w.Up.Token(t, "default", "nobody"))
		waitForStoreStatus(t, w, ns, "remote-k8s-store", "False", "ValidationFailed", 10*time.Second)
		assert.Contains(t, storeStatusOf(t, w, ns, "remote-k8s-store").message, "may not get Secrets")
		_, err = createPod(t, w, ns, "wrong-token", "remote-k8s-store", item("wrong-token"))
		require.Error(t, err)
		assert.Contains(t, err.Error(), `secret-relay: upstream refused to read Secret "user-credentials"`)
		setToken(w.Reader.Token)
		waitForStoreStatus(t, w, ns, "remote-k8s-store", "True", "Valid", 10*time.Second)
		_, err = createPod(t, w, ns, "after", "remote-k8s-store", item("after"))
		require.NoError(t, err)
	})

	t.Run("A dryRun should be denied where the real create would collide with an unmanaged Secret.", func(t *testing.T) {
		t.Parallel()
		ns := "dry-collide"
		w.SeedStore(t, ns, "remote-k8s-store")
		w.Down.CreateSecret(t, ns, "pulled-secrets", map[string]string{"username": "someone-else"})
		_, err := w.Down.Client.CoreV1().Pods(ns).Create(cluster.Context(t), cluster.Pod("dry", map[string]string{
			relay.AnnotationStore: "remote-k8s-store", relay.AnnotationSecrets: seedAnnotation,
		}), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		require.Error(t, err)
		assert.Contains(t, err.Error(), `secret-relay: Secret "pulled-secrets" already exists in namespace "dry-collide" and is not managed by secret-relay`)
		assert.Equal(t, []byte("someone-else"), localSecret(t, w, ns, "pulled-secrets").Data["username"])
	})

	t.Run("A copy over 1 MiB should be a denial naming the Secret.", func(t *testing.T) {
		t.Parallel()
		ns := "too-big"
		w.SeedStore(t, ns, "remote-k8s-store")
		half := strings.Repeat("x", 600<<10)
		setUpstreamValue(t, w, "big-a", "a", half)
		setUpstreamValue(t, w, "big-b", "b", half)
		_, err := createPod(t, w, ns, "big", "remote-k8s-store", `[{name: big, dataFrom: [{extract: {key: big-a}}, {extract: {key: big-b}}]}]`)
		require.Error(t, err)
		assert.Contains(t, err.Error(), `denied the request: secret-relay: `)
		assert.Contains(t, err.Error(), `Secret "big"`)
		assert.Contains(t, err.Error(), `1 MiB`)
		assert.NotContains(t, err.Error(), "xxxxxxxx")
	})

	t.Run("A full Secret quota should be a denial naming the Secret.", func(t *testing.T) {
		t.Parallel()
		ns := "quota-full"
		ctx := cluster.Context(t)
		w.SeedStore(t, ns, "remote-k8s-store")
		quota, err := w.Down.Client.CoreV1().ResourceQuotas(ns).Create(ctx, &corev1.ResourceQuota{
			ObjectMeta: metav1.ObjectMeta{Name: "secrets"},
			Spec:       corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{"count/secrets": resource.MustParse("1")}},
		}, metav1.CreateOptions{})
		require.NoError(t, err)
		// No quota controller runs here: set the usage it would have counted.
		quota.Status = corev1.ResourceQuotaStatus{
			Hard: corev1.ResourceList{"count/secrets": resource.MustParse("1")},
			Used: corev1.ResourceList{"count/secrets": resource.MustParse("1")},
		}
		_, err = w.Down.Client.CoreV1().ResourceQuotas(ns).UpdateStatus(ctx, quota, metav1.UpdateOptions{})
		require.NoError(t, err)
		_, err = createPod(t, w, ns, "p", "remote-k8s-store", seedAnnotation)
		require.Error(t, err)
		assert.Contains(t, err.Error(), `denied the request: secret-relay: could not write Secret "pulled-secrets" in namespace "quota-full"`)
		assert.Contains(t, err.Error(), "exceeded quota")
	})

	t.Run("A managed copy made immutable should be replaced, by admission and by sync.", func(t *testing.T) {
		t.Parallel()
		ns := "immutable"
		ctx := cluster.Context(t)
		w.SeedStore(t, ns, "remote-k8s-store")
		setUpstreamValue(t, w, "frozen", "username", "peter")
		annotation := `[{name: creds, data: [{secretKey: username, remoteRef: {key: frozen, property: username}}]}]`
		_, err := createPod(t, w, ns, "first", "remote-k8s-store", annotation)
		require.NoError(t, err)
		freeze := func() {
			s := localSecret(t, w, ns, "creds")
			s.Immutable = ptr.To(true)
			_, err := w.Down.Client.CoreV1().Secrets(ns).Update(ctx, s, metav1.UpdateOptions{})
			require.NoError(t, err)
		}
		freeze()
		setUpstreamValue(t, w, "frozen", "username", "s3cr3t-rotated-username")
		require.Eventually(t, func() bool {
			return copyValue(t, w, ns, "creds", "username") == "s3cr3t-rotated-username"
		}, 5*time.Second, 50*time.Millisecond, "the sync replaces the immutable copy")

		// Admission: freeze it again and change upstream; the next pod replaces it.
		freeze()
		_, err = createPod(t, w, ns, "second", "remote-k8s-store", annotation)
		require.NoError(t, err, "an immutable managed copy is secret-relay's to replace")
	})

	t.Run("The pod's status should not let someone who can read pods guess a value.", func(t *testing.T) {
		t.Parallel()
		created, err := createPod(t, w, "default", "guessed", "remote-k8s-store", seedAnnotation)
		require.NoError(t, err)
		var status map[string]string
		require.NoError(t, json.Unmarshal([]byte(created.Annotations[relay.AnnotationStatus]), &status))
		token := status["pulled-secrets"]
		require.NotEmpty(t, token)
		copyOf := localSecret(t, w, "default", "pulled-secrets")
		assert.Equal(t, copyOf.Annotations[relay.AnnotationDataHash], token, "the pod names the copy's token")

		dictionary := []string{"admin", "alice", "bob", "guest", "user", "root", "test", "demo", "peter"}
		start := time.Now()
		for _, guess := range dictionary {
			digest := unkeyedDigest(map[string][]byte{"username": []byte(guess)})
			assert.NotContains(t, token, digest, "the status token gives away %q", guess)
			for k, v := range copyOf.Annotations {
				assert.NotContains(t, v, digest, "annotation %s of the copy gives away %q", k, guess)
			}
			for k, v := range created.Annotations {
				assert.NotContains(t, v, digest, "annotation %s of the pod gives away %q", k, guess)
			}
		}
		t.Logf("tried a %d-word dictionary against the pod's status in %s", len(dictionary), time.Since(start))
	})

	t.Run("A copy written by an older version should be re-annotated once.", func(t *testing.T) {
		t.Parallel()
		ns := "legacy"
		ctx := cluster.Context(t)
		w.SeedStore(t, ns, "remote-k8s-store")
		data := map[string][]byte{"username": []byte("peter")}
		legacy, err := w.Down.Client.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{
				Name:   "pulled-secrets",
				Labels: map[string]string{relay.LabelManagedBy: relay.ManagedByValue},
				Annotations: map[string]string{
					relay.AnnotationSource:   `{"store":{"kind":"SecretStore","name":"remote-k8s-store"},"data":[{"secretKey":"username","remoteRef":{"key":"user-credentials","property":"username"}}]}`,
					relay.AnnotationDataHash: unkeyedDigest(data),
					relay.AnnotationSyncedAt: "2026-11-01T00:00:00Z",
				},
			},
			Type: corev1.SecretTypeOpaque,
			Data: data,
		}, metav1.CreateOptions{})
		require.NoError(t, err)
		watcher, err := w.Down.Client.CoreV1().Secrets(ns).Watch(ctx, metav1.ListOptions{
			FieldSelector: fields.OneTermEqualSelector("metadata.name", "pulled-secrets").String(), ResourceVersion: legacy.ResourceVersion,
		})
		require.NoError(t, err)
		defer watcher.Stop()
		writes := countModified(watcher, 5*time.Second)
		s := localSecret(t, w, ns, "pulled-secrets")
		assert.NotEqual(t, unkeyedDigest(data), s.Annotations[relay.AnnotationDataHash], "re-annotated with a keyed token")
		assert.Equal(t, data, s.Data)
		assert.Equal(t, 1, writes, "re-annotated once")
	})

	t.Run("Concurrent pods wanting one Secret from two stores with equal data should not share a write.", func(t *testing.T) {
		t.Parallel()
		clusterStore(t, w, "same-data", "")
		const rounds, perStore = 8, 8
		for round := range rounds {
			ns := fmt.Sprintf("mixed-%d", round)
			w.SeedStore(t, ns, "remote-k8s-store")
			stores := []string{"SecretStore/remote-k8s-store", "ClusterSecretStore/same-data"}
			admitted := make([][]bool, len(stores))
			var wg sync.WaitGroup
			for si, store := range stores {
				admitted[si] = make([]bool, perStore)
				for i := range perStore {
					wg.Go(func() {
						_, err := createPod(t, w, ns, fmt.Sprintf("p-%d-%d", si, i), store, seedAnnotation)
						admitted[si][i] = err == nil
						if err != nil {
							assert.Contains(t, err.Error(), "is relayed from a different source")
						}
					})
				}
			}
			wg.Wait()
			src := localSecret(t, w, ns, "pulled-secrets").Annotations[relay.AnnotationSource]
			for si, store := range stores {
				kind, name, _ := strings.Cut(store, "/")
				recorded := strings.Contains(src, fmt.Sprintf(`{"kind":%q,"name":%q}`, kind, name))
				for i, ok := range admitted[si] {
					if ok {
						assert.True(t, recorded, "%s: pod %d of %s was admitted, but the copy records %s", ns, i, store, src)
					}
				}
			}
		}
	})

	t.Run("A review posted directly should do no more than a pod in its namespace could.", func(t *testing.T) {
		t.Parallel()
		clusterStore(t, w, "open", "")
		client := w.Relay.HTTPSClient(t)
		pod := cluster.Pod("direct", map[string]string{relay.AnnotationStore: "ClusterSecretStore/open", relay.AnnotationSecrets: `["user-credentials"]`})
		post := func(t *testing.T, body []byte) *admissionv1.AdmissionResponse {
			t.Helper()
			resp, err := client.Post(w.Relay.WebhookURL, "application/json", bytes.NewReader(body))
			require.NoError(t, err)
			defer resp.Body.Close()
			raw, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			require.Equal(t, http.StatusOK, resp.StatusCode, "%s", raw)
			var review admissionv1.AdmissionReview
			require.NoError(t, json.Unmarshal(raw, &review))
			require.NotNil(t, review.Response)
			if review.Response.Result == nil {
				review.Response.Result = &metav1.Status{}
			}
			return review.Response
		}
		noSecret := func(t *testing.T, ns string) {
			t.Helper()
			_, err := w.Down.Client.CoreV1().Secrets(ns).Get(cluster.Context(t), "user-credentials", metav1.GetOptions{})
			assert.True(t, apierrors.IsNotFound(err), "nothing written in %s: %v", ns, err)
		}
		for _, ns := range []string{"kube-system", "secret-relay"} {
			t.Run("namespace "+ns, func(t *testing.T) {
				w.Down.EnsureNamespace(t, ns)
				res := post(t, cluster.Review(t, "direct-"+ns, ns, pod))
				assert.False(t, res.Allowed, "the shipped webhook never serves %s", ns)
				assert.Contains(t, res.Result.Message, fmt.Sprintf(`secret-relay: namespace %q is not served`, ns))
				noSecret(t, ns)
			})
		}
		t.Run("a namespace that does not exist", func(t *testing.T) {
			missing := pod.DeepCopy()
			missing.Annotations[relay.AnnotationSecrets] = `["does-it-exist-upstream"]`
			res := post(t, cluster.Review(t, "direct-ghost", "ghost", missing))
			assert.False(t, res.Allowed)
			assert.Contains(t, res.Result.Message, `secret-relay: namespace "ghost" not found`)
			assert.NotContains(t, res.Result.Message, "does-it-exist-upstream", "nothing learnt of upstream")
		})
		t.Run("an object in another namespace than the request's", func(t *testing.T) {
			w.Down.EnsureNamespace(t, "claimed")
			elsewhere := pod.DeepCopy()
			elsewhere.Namespace = "other"
			res := post(t, cluster.Review(t, "direct-mismatch", "claimed", elsewhere))
			assert.False(t, res.Allowed)
			assert.Contains(t, res.Result.Message, "secret-relay: ")
			noSecret(t, "claimed")
			noSecret(t, "other")
		})
		t.Run("an object that is not a pod", func(t *testing.T) {
			w.Down.EnsureNamespace(t, "not-a-pod")
			body := cluster.Review(t, "direct-cm", "not-a-pod", pod)
			var review admissionv1.AdmissionReview
			require.NoError(t, json.Unmarshal(body, &review))
			review.Request.Kind = metav1.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}
			review.Request.Resource = metav1.GroupVersionResource{Version: "v1", Resource: "configmaps"}
			review.Request.RequestKind, review.Request.RequestResource = &review.Request.Kind, &review.Request.Resource
			review.Request.UID = types.UID("direct-cm")
			body, err := json.Marshal(review)
			require.NoError(t, err)
			res := post(t, body)
			assert.True(t, res.Allowed, "not the relay's to judge")
			assert.Empty(t, res.Patch)
			noSecret(t, "not-a-pod")
		})
	})
}

func setNested(obj map[string]any, value any, path ...string) error {
	m := obj
	for _, p := range path[:len(path)-1] {
		next, ok := m[p].(map[string]any)
		if !ok {
			return fmt.Errorf("no object at %s", p)
		}
		m = next
	}
	m[path[len(path)-1]] = value
	return nil
}
