package e2e_test

import (
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
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/secret-relay/secret-relay/api/v1alpha1"
	"github.com/secret-relay/secret-relay/relay"
	"github.com/secret-relay/secret-relay/test/cluster"
)

const seedAnnotation = `- name: pulled-secrets
  data:
  - secretKey: username
    remoteRef: {key: user-credentials, property: username}
`

// TestRelay walks every admission behaviour of the contract on one pair of clusters
// and one secret-relay process.
func TestRelay(t *testing.T) {
	w := newWorld(t)
	w.SeedStore(t, "default", "remote-k8s-store")
	w.Up.CreateSecret(t, "default", "db-credentials", map[string]string{"password": "s3cr3t-db-password"})

	t.Run("behaviours", func(t *testing.T) {
		t.Run("The seed walkthrough should end in pulled-secrets holding exactly username: peter.", func(t *testing.T) {
			t.Parallel()
			ctx := cluster.Context(t)
			created, err := w.Down.Client.CoreV1().Pods("default").Create(ctx, cluster.Pod("seed", map[string]string{
				relay.AnnotationStore:   "remote-k8s-store",
				relay.AnnotationSecrets: seedAnnotation,
			}), metav1.CreateOptions{})
			require.NoError(t, err)

			s, err := w.Down.Client.CoreV1().Secrets("default").Get(ctx, "pulled-secrets", metav1.GetOptions{})
			require.NoError(t, err, "the Secret exists the moment the pod is admitted")
			assert.Equal(t, map[string][]byte{"username": []byte("peter")}, s.Data)
			assert.Equal(t, corev1.SecretTypeOpaque, s.Type)
			assert.Equal(t, "secret-relay", s.Labels["app.kubernetes.io/managed-by"])
			assert.Contains(t, s.Annotations[relay.AnnotationSource], `"SecretStore"`)
			assert.Contains(t, s.Annotations[relay.AnnotationSource], `"remote-k8s-store"`)
			assert.Equal(t, w.Tokens(t).Token(s.Data), s.Annotations[relay.AnnotationDataHash])
			_, err = time.Parse(time.RFC3339, s.Annotations[relay.AnnotationSyncedAt])
			assert.NoError(t, err)

			var status map[string]string
			require.NoError(t, json.Unmarshal([]byte(created.Annotations[relay.AnnotationStatus]), &status))
			assert.Equal(t, map[string]string{"pulled-secrets": s.Annotations[relay.AnnotationDataHash]}, status)
		})

		t.Run("The whole-secret shorthand should copy every key and the type.", func(t *testing.T) {
			t.Parallel()
			ns := "shorthand"
			w.SeedStore(t, ns, "remote-k8s-store")
			_, err := w.Down.Client.CoreV1().Pods(ns).Create(cluster.Context(t), cluster.Pod("shorthand", map[string]string{
				relay.AnnotationStore:   "SecretStore/remote-k8s-store",
				relay.AnnotationSecrets: `["user-credentials", "db-credentials"]`,
			}), metav1.CreateOptions{})
			require.NoError(t, err)
			s, err := w.Down.Client.CoreV1().Secrets(ns).Get(cluster.Context(t), "user-credentials", metav1.GetOptions{})
			require.NoError(t, err)
			assert.Equal(t, map[string][]byte{"username": []byte("peter"), "password": []byte("asdf1234")}, s.Data)
			db, err := w.Down.Client.CoreV1().Secrets(ns).Get(cluster.Context(t), "db-credentials", metav1.GetOptions{})
			require.NoError(t, err)
			assert.Equal(t, []byte("s3cr3t-db-password"), db.Data["password"])
		})

		t.Run("An unannotated pod should be stored untouched.", func(t *testing.T) {
			t.Parallel()
			// Other subtests admit pods meanwhile: only reviews of pods without the
			// annotation count as "untouched", and none should reach the webhook.
			before := w.Relay.Metric(t, "secret_relay_admissions_total", `result="untouched"`)
			p := cluster.Pod("plain", map[string]string{"team": "a"})
			created, err := w.Down.Client.CoreV1().Pods("default").Create(cluster.Context(t), p, metav1.CreateOptions{})
			require.NoError(t, err)
			assert.Equal(t, map[string]string{"team": "a"}, created.Annotations)
			assert.Empty(t, created.Spec.Volumes)
			assert.Empty(t, created.Spec.Containers[0].EnvFrom)
			assert.Equal(t, before, w.Relay.Metric(t, "secret_relay_admissions_total", `result="untouched"`), "matchConditions keep it from the webhook")
		})

		t.Run("A SecretStore should not be usable from another namespace.", func(t *testing.T) {
			t.Parallel()
			w.Down.EnsureNamespace(t, "intruder")
			_, err := w.Down.Client.CoreV1().Pods("intruder").Create(cluster.Context(t), cluster.Pod("intruder", map[string]string{
				relay.AnnotationStore:   "remote-k8s-store",
				relay.AnnotationSecrets: seedAnnotation,
			}), metav1.CreateOptions{})
			require.Error(t, err)
			assert.Contains(t, err.Error(), `secret-relay: store SecretStore/remote-k8s-store not found in namespace "intruder"`)
			_, err = w.Down.Client.CoreV1().Secrets("intruder").Get(cluster.Context(t), "pulled-secrets", metav1.GetOptions{})
			assert.True(t, apierrors.IsNotFound(err), "nothing written on a denial")
		})

		t.Run("ClusterSecretStore conditions should decide which namespaces may use it.", func(t *testing.T) {
			t.Parallel()
			w.SeedStore(t, "store-config", "unused")
			w.Apply(t, fmt.Sprintf(`
apiVersion: secret-relay.io/v1alpha1
kind: ClusterSecretStore
metadata: {name: shared}
spec:
  conditions:
  - namespaces: [team-listed]
  - namespaceSelector: {matchLabels: {relay: allowed}}
  - namespaceRegexes: ["^team-rx-.*$"]
  provider:
    kubernetes:
      server:
        url: %s
        caProvider: {type: ConfigMap, name: kube-root-remote-ca.crt, key: ca.crt, namespace: store-config}
      auth:
        token:
          bearerToken: {name: remote-sa-token, key: token, namespace: store-config}
`, w.Up.URL()))
			w.Down.EnsureNamespace(t, "team-listed")
			w.Down.EnsureNamespace(t, "team-labelled", map[string]string{"relay": "allowed"})
			w.Down.EnsureNamespace(t, "team-rx-1")
			w.Down.EnsureNamespace(t, "team-outside")
			annotations := map[string]string{relay.AnnotationStore: "ClusterSecretStore/shared", relay.AnnotationSecrets: seedAnnotation}
			for _, ns := range []string{"team-listed", "team-labelled", "team-rx-1"} {
				_, err := w.Down.Client.CoreV1().Pods(ns).Create(cluster.Context(t), cluster.Pod("p", annotations), metav1.CreateOptions{})
				assert.NoError(t, err, "namespace %s matches a condition", ns)
			}
			_, err := w.Down.Client.CoreV1().Pods("team-outside").Create(cluster.Context(t), cluster.Pod("p", annotations), metav1.CreateOptions{})
			require.Error(t, err)
			assert.Contains(t, err.Error(), `secret-relay: namespace "team-outside" may not use store ClusterSecretStore/shared`)
		})

		t.Run("An unmanaged Secret should be left untouched and the pod denied.", func(t *testing.T) {
			t.Parallel()
			ns := "unmanaged"
			w.SeedStore(t, ns, "remote-k8s-store")
			w.Down.CreateSecret(t, ns, "pulled-secrets", map[string]string{"username": "someone-else"})
			_, err := w.Down.Client.CoreV1().Pods(ns).Create(cluster.Context(t), cluster.Pod("p", map[string]string{
				relay.AnnotationStore: "remote-k8s-store", relay.AnnotationSecrets: seedAnnotation,
			}), metav1.CreateOptions{})
			require.Error(t, err)
			assert.Contains(t, err.Error(), `secret-relay: Secret "pulled-secrets" already exists in namespace "unmanaged" and is not managed by secret-relay`)
			s, err := w.Down.Client.CoreV1().Secrets(ns).Get(cluster.Context(t), "pulled-secrets", metav1.GetOptions{})
			require.NoError(t, err)
			assert.Equal(t, []byte("someone-else"), s.Data["username"])
			assert.Empty(t, s.Annotations[relay.AnnotationSource])
		})

		t.Run("A managed Secret from another source should not be taken over.", func(t *testing.T) {
			t.Parallel()
			ns := "two-sources"
			w.SeedStore(t, ns, "remote-k8s-store")
			_, err := w.Down.Client.CoreV1().Pods(ns).Create(cluster.Context(t), cluster.Pod("first", map[string]string{
				relay.AnnotationStore: "remote-k8s-store", relay.AnnotationSecrets: seedAnnotation,
			}), metav1.CreateOptions{})
			require.NoError(t, err)
			_, err = w.Down.Client.CoreV1().Pods(ns).Create(cluster.Context(t), cluster.Pod("second", map[string]string{
				relay.AnnotationStore:   "remote-k8s-store",
				relay.AnnotationSecrets: `[{name: pulled-secrets, dataFrom: [{extract: {key: db-credentials}}]}]`,
			}), metav1.CreateOptions{})
			require.Error(t, err)
			assert.Contains(t, err.Error(), `secret-relay: Secret "pulled-secrets" in namespace "two-sources" is relayed from a different source`)
		})

		t.Run("A dryRun review should return the patch and write nothing.", func(t *testing.T) {
			t.Parallel()
			ns := "dry-run"
			w.SeedStore(t, ns, "remote-k8s-store")
			created, err := w.Down.Client.CoreV1().Pods(ns).Create(cluster.Context(t), cluster.Pod("dry", map[string]string{
				relay.AnnotationStore: "remote-k8s-store", relay.AnnotationSecrets: seedAnnotation,
			}), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			require.NoError(t, err)
			assert.Contains(t, created.Annotations[relay.AnnotationStatus], `"pulled-secrets":"hmac-sha256:`)
			_, err = w.Down.Client.CoreV1().Secrets(ns).Get(cluster.Context(t), "pulled-secrets", metav1.GetOptions{})
			assert.True(t, apierrors.IsNotFound(err), "dryRun writes no Secret, got %v", err)
			_, err = w.Down.Client.CoreV1().Pods(ns).Get(cluster.Context(t), "dry", metav1.GetOptions{})
			assert.True(t, apierrors.IsNotFound(err))
		})

		t.Run("A missing remote Secret or property should be denied by name.", func(t *testing.T) {
			t.Parallel()
			ns := "missing"
			w.SeedStore(t, ns, "remote-k8s-store")
			_, err := w.Down.Client.CoreV1().Pods(ns).Create(cluster.Context(t), cluster.Pod("no-secret", map[string]string{
				relay.AnnotationStore: "remote-k8s-store", relay.AnnotationSecrets: `["db"]`,
			}), metav1.CreateOptions{})
			require.Error(t, err)
			assert.Contains(t, err.Error(), `secret-relay: remote Secret "db" not found in namespace "default" of store remote-k8s-store`)

			_, err = w.Down.Client.CoreV1().Pods(ns).Create(cluster.Context(t), cluster.Pod("no-property", map[string]string{
				relay.AnnotationStore:   "remote-k8s-store",
				relay.AnnotationSecrets: `[{name: creds, data: [{secretKey: u, remoteRef: {key: user-credentials, property: usrname}}]}]`,
			}), metav1.CreateOptions{})
			require.Error(t, err)
			assert.Contains(t, err.Error(), `secret-relay: remote Secret "user-credentials" has no key "usrname"`)
			list, err := w.Down.Client.CoreV1().Secrets(ns).List(cluster.Context(t), metav1.ListOptions{LabelSelector: "app.kubernetes.io/managed-by=secret-relay"})
			require.NoError(t, err)
			assert.Empty(t, list.Items, "all or nothing")
		})

		t.Run("A malformed annotation should be denied with the annotation's name.", func(t *testing.T) {
			t.Parallel()
			_, err := w.Down.Client.CoreV1().Pods("default").Create(cluster.Context(t), cluster.Pod("malformed", map[string]string{
				relay.AnnotationStore: "remote-k8s-store", relay.AnnotationSecrets: `[{name: x, colour: blue}]`,
			}), metav1.CreateOptions{})
			require.Error(t, err)
			assert.Contains(t, err.Error(), "secret-relay: annotation secret-relay.io/secrets")
			assert.Contains(t, err.Error(), "colour")
		})

		t.Run("A service-account-token Secret should be refused.", func(t *testing.T) {
			t.Parallel()
			ns := "sa-token"
			w.SeedStore(t, ns, "remote-k8s-store")
			_, err := w.Up.Client.CoreV1().Secrets("default").Create(cluster.Context(t), &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: "reader-token", Annotations: map[string]string{corev1.ServiceAccountNameKey: cluster.ReaderServiceAccount}},
				Type:       corev1.SecretTypeServiceAccountToken,
				Data:       map[string][]byte{"token": []byte("s3cr3t-api-key")},
			}, metav1.CreateOptions{})
			require.NoError(t, err)
			_, err = w.Down.Client.CoreV1().Pods(ns).Create(cluster.Context(t), cluster.Pod("p", map[string]string{
				relay.AnnotationStore: "remote-k8s-store", relay.AnnotationSecrets: `["reader-token"]`,
			}), metav1.CreateOptions{})
			require.Error(t, err)
			assert.Contains(t, err.Error(), `secret-relay: remote Secret "reader-token" is a service-account token`)
			_, err = w.Down.Client.CoreV1().Secrets(ns).Get(cluster.Context(t), "reader-token", metav1.GetOptions{})
			assert.True(t, apierrors.IsNotFound(err))
		})

		t.Run("env and mountPath should be in the stored pod.", func(t *testing.T) {
			t.Parallel()
			ns := "inject"
			w.SeedStore(t, ns, "remote-k8s-store")
			created, err := w.Down.Client.CoreV1().Pods(ns).Create(cluster.Context(t), cluster.Pod("p", map[string]string{
				relay.AnnotationStore: "remote-k8s-store",
				relay.AnnotationSecrets: `
- name: pulled-secrets
  env: true
  mountPath: /etc/creds
  data:
  - {secretKey: username, remoteRef: {key: user-credentials, property: username}}
`,
			}), metav1.CreateOptions{})
			require.NoError(t, err)
			stored, err := w.Down.Client.CoreV1().Pods(ns).Get(cluster.Context(t), created.Name, metav1.GetOptions{})
			require.NoError(t, err)
			ref := corev1.EnvFromSource{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "pulled-secrets"}}}
			for _, c := range append(stored.Spec.InitContainers, stored.Spec.Containers...) {
				assert.Contains(t, c.EnvFrom, ref, "container %s", c.Name)
			}
			for _, c := range stored.Spec.Containers {
				require.Len(t, c.VolumeMounts, 1, "container %s", c.Name)
				assert.Equal(t, "/etc/creds", c.VolumeMounts[0].MountPath)
				assert.True(t, c.VolumeMounts[0].ReadOnly)
			}
			require.Len(t, stored.Spec.Volumes, 1)
			assert.Equal(t, "pulled-secrets", stored.Spec.Volumes[0].Secret.SecretName)
		})

		t.Run("Concurrent pods wanting the same Secret should all be admitted.", func(t *testing.T) {
			t.Parallel()
			ns := "concurrent"
			w.SeedStore(t, ns, "remote-k8s-store")
			var wg sync.WaitGroup
			errs := make([]error, 20)
			for i := range errs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, errs[i] = w.Down.Client.CoreV1().Pods(ns).Create(cluster.Context(t), cluster.Pod(fmt.Sprintf("p-%d", i), map[string]string{
						relay.AnnotationStore: "remote-k8s-store", relay.AnnotationSecrets: seedAnnotation,
					}), metav1.CreateOptions{})
				}()
			}
			wg.Wait()
			for i, err := range errs {
				assert.NoError(t, err, "pod %d", i)
			}
		})

		t.Run("Client-certificate auth should work as well as token auth.", func(t *testing.T) {
			t.Parallel()
			ns := "cert-auth"
			ctx := cluster.Context(t)
			certPEM, keyPEM := w.Up.ClientCertUser(t, "relay-cert-user")
			_, err := w.Up.Client.RbacV1().RoleBindings("default").Create(ctx, &rbacv1.RoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: "relay-cert-user"},
				Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "relay-cert-user"}},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: cluster.ReaderRole},
			}, metav1.CreateOptions{})
			require.NoError(t, err)
			w.Down.EnsureNamespace(t, ns)
			_, err = w.Down.Client.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: "remote-client-cert"},
				Type:       corev1.SecretTypeTLS,
				Data:       map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM},
			}, metav1.CreateOptions{})
			require.NoError(t, err)
			_, err = w.Down.Client.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: "remote-ca"},
				Data:       map[string][]byte{"ca.crt": w.Up.CA()},
			}, metav1.CreateOptions{})
			require.NoError(t, err)
			w.Apply(t, fmt.Sprintf(`
apiVersion: secret-relay.io/v1alpha1
kind: SecretStore
metadata: {name: cert-store, namespace: %s}
spec:
  provider:
    kubernetes:
      server:
        url: %s
        caProvider: {type: Secret, name: remote-ca, key: ca.crt}
      auth:
        cert:
          clientCert: {name: remote-client-cert, key: tls.crt}
          clientKey: {name: remote-client-cert, key: tls.key}
`, ns, w.Up.URL()))
			_, err = w.Down.Client.CoreV1().Pods(ns).Create(ctx, cluster.Pod("p", map[string]string{
				relay.AnnotationStore: "cert-store", relay.AnnotationSecrets: seedAnnotation,
			}), metav1.CreateOptions{})
			require.NoError(t, err)
			s, err := w.Down.Client.CoreV1().Secrets(ns).Get(ctx, "pulled-secrets", metav1.GetOptions{})
			require.NoError(t, err)
			assert.Equal(t, []byte("peter"), s.Data["username"])
		})

		t.Run("A store should turn Valid, then ValidationFailed once its token is revoked.", func(t *testing.T) {
			t.Parallel()
			ns := "revoked"
			ctx := cluster.Context(t)
			reader := revocableStore(t, w, ns)
			status := storeStatusOf(t, w, ns, "revocable")
			assert.Equal(t, "ReadOnly", status.capabilities, "the seed's Role only reads")

			require.NoError(t, w.Up.Client.CoreV1().ServiceAccounts(ns).Delete(ctx, cluster.ReaderServiceAccount, metav1.DeleteOptions{}))
			w.Up.WaitForTokenRevoked(t, reader.Token)
			_, err := w.Down.Client.CoreV1().Pods(ns).Create(ctx, cluster.Pod("p", map[string]string{
				relay.AnnotationStore: "revocable", relay.AnnotationSecrets: seedAnnotation,
			}), metav1.CreateOptions{})
			require.Error(t, err)
			assert.Contains(t, err.Error(), `secret-relay: upstream refused to read Secret "user-credentials"`)
			waitForStoreStatus(t, w, ns, "revocable", "False", "ValidationFailed", 10*time.Second)
		})
	})

	t.Run("No denial, pod, event or metric should hold a secret value.", func(t *testing.T) {
		ctx := cluster.Context(t)
		events, err := w.Down.Client.CoreV1().Events("").List(ctx, metav1.ListOptions{})
		require.NoError(t, err)
		pods, err := w.Down.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
		require.NoError(t, err)
		resp, err := http.Get(w.Relay.ProbeURL + "/metrics")
		require.NoError(t, err)
		metrics, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		// The downstream audit log records every API response's status at Metadata
		// level: the denials the behaviours above met are in it.
		audit := w.Down.RawAuditLog(t)
		require.Contains(t, string(audit), "secret-relay: remote Secret", "the audit log holds the denials")
		for where, v := range map[string]any{"events": events, "pods": pods} {
			data, err := json.Marshal(v)
			require.NoError(t, err)
			assert.Empty(t, findSecrets("downstream "+where, data))
		}
		assert.Empty(t, findSecrets("metrics", metrics))
		assert.Empty(t, findSecrets("downstream audit log (denial messages)", audit))
		t.Logf("scanned %d events, %d pods, %d bytes of metrics and %d bytes of audit log", len(events.Items), len(pods.Items), len(metrics), len(audit))
	})

	t.Run("The relay should read upstream Secrets only in its stores' remoteNamespace.", func(t *testing.T) {
		verbs := map[string]int{}
		for _, ev := range w.Up.AuditLog(t) {
			sa, ok := strings.CutPrefix(ev.User.Username, "system:serviceaccount:")
			// A watch that is still open has only started; count each request once.
			if !ok || ev.ObjectRef.Resource != "secrets" || ev.Stage != "ResponseComplete" && (ev.Stage != "ResponseStarted" || ev.Verb != "watch") {
				continue
			}
			// Each store in this test reads the namespace of its reader's account.
			ns, _, _ := strings.Cut(sa, ":")
			assert.Equal(t, ns, ev.ObjectRef.Namespace, "%s %s by %s", ev.Verb, ev.RequestURI, ev.User.Username)
			verbs[ev.Verb]++
		}
		assert.Positive(t, verbs["list"]+verbs["watch"]+verbs["get"])
		t.Logf("upstream Secret requests by store tokens, none outside their namespace: %v", verbs)
	})
}

type storeStatus struct {
	ready, reason, message, capabilities string
}

func storeStatusOf(t testing.TB, w *cluster.World, ns, name string) storeStatus {
	t.Helper()
	u, err := w.Dynamic.Resource(storeGVR).Namespace(ns).Get(cluster.Context(t), name, metav1.GetOptions{})
	require.NoError(t, err)
	var st storeStatus
	st.capabilities, _, _ = unstructured.NestedString(u.Object, "status", "capabilities")
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "Ready" {
			st.ready, _ = m["status"].(string)
			st.reason, _ = m["reason"].(string)
			st.message, _ = m["message"].(string)
		}
	}
	return st
}

func waitForStoreStatus(t testing.TB, w *cluster.World, ns, name, ready, reason string, within time.Duration) {
	t.Helper()
	start := time.Now()
	var st storeStatus
	for time.Since(start) < within {
		if st = storeStatusOf(t, w, ns, name); st.ready == ready && st.reason == reason {
			t.Logf("store %s/%s Ready=%s %s after %s: %s", ns, name, ready, reason, time.Since(start).Round(time.Millisecond), st.message)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("store %s/%s not Ready=%s/%s within %s; last status %+v", ns, name, ready, reason, within, st)
}

var storeGVR = v1alpha1.SecretStoreGVR
