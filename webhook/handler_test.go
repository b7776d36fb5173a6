package webhook_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/secret-relay/secret-relay/webhook"
)

// fakeStores serves upstream Secrets from memory; a store named "down" is unreachable.
type fakeStores map[string]map[string]*corev1.Secret

func (f fakeStores) Resolve(_ context.Context, ns string, ref webhook.StoreRef) (webhook.SecretSource, error) {
	if ref.Name == "down" {
		return unreachable{}, nil
	}
	secrets, ok := f[ref.Name]
	if !ok {
		return nil, webhook.Denyf("store %s not found in namespace %q", ref, ns)
	}
	return fakeSource{store: ref.Name, secrets: secrets}, nil
}

type fakeSource struct {
	store   string
	secrets map[string]*corev1.Secret
}

func (f fakeSource) Get(_ context.Context, name string) (*corev1.Secret, error) {
	if s, ok := f.secrets[name]; ok {
		return s.DeepCopy(), nil
	}
	return nil, webhook.Denyf("remote Secret %q not found in namespace %q of store %s", name, "default", f.store)
}

type unreachable struct{}

func (unreachable) Get(context.Context, string) (*corev1.Secret, error) {
	return nil, fmt.Errorf("%w: connection refused", webhook.ErrUpstreamUnreachable)
}

var upstream = fakeStores{"remote-k8s-store": {
	"user-credentials": {
		ObjectMeta: metav1.ObjectMeta{Name: "user-credentials", Namespace: "default"},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{"username": []byte("peter"), "password": []byte("asdf1234")},
	},
}}

const seedSecrets = `[{name: pulled-secrets, env: true, data: [{secretKey: username, remoteRef: {key: user-credentials, property: username}}]}]`

func seedPod(annotations map[string]string) *corev1.Pod {
	return &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: "default", Annotations: annotations},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "busybox"}}},
	}
}

type harness struct {
	srv    *httptest.Server
	client *fake.Clientset
	logs   *observer.ObservedLogs
	seen   []string
}

func newHarness(t *testing.T, stores fakeStores) *harness {
	h := &harness{client: fake.NewClientset()}
	core, logs := observer.New(zap.DebugLevel)
	h.logs = logs
	m, err := webhook.NewMutator(webhook.MutatorConfig{
		Stores: stores, Local: webhook.ClientsetLocalSecrets{Client: h.client},
		UpstreamTimeout: time.Second, Logger: zap.New(core),
		Now: func() time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) },
	})
	require.NoError(t, err)
	handler, err := webhook.NewHandler(webhook.HandlerConfig{
		Mutator: m, Logger: zap.New(core), Observe: func(r string) { h.seen = append(h.seen, r) },
	})
	require.NoError(t, err)
	h.srv = httptest.NewServer(handler)
	t.Cleanup(h.srv.Close)
	return h
}

// reviewUID is the UID of the reviews the tests send.
const reviewUID = "8c3c6f5b-0b1e-4d3a-9c55-5f4b9b3f0c11"

// reviewJSON is an admission/v1 AdmissionReview of creating pod, as the API server
// sends it.
func reviewJSON(t *testing.T, pod *corev1.Pod, dryRun bool) []byte {
	t.Helper()
	raw, err := json.Marshal(pod)
	require.NoError(t, err)
	body, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       reviewUID,
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Namespace: pod.Namespace,
			Operation: admissionv1.Create,
			Object:    runtime.RawExtension{Raw: raw},
			DryRun:    &dryRun,
		},
	})
	require.NoError(t, err)
	return body
}

// review posts a real admission/v1 AdmissionReview and returns the HTTP status and
// the decoded response.
func (h *harness) review(t *testing.T, pod *corev1.Pod, dryRun bool) (int, *admissionv1.AdmissionResponse) {
	resp, err := http.Post(h.srv.URL, "application/json", bytes.NewReader(reviewJSON(t, pod, dryRun)))
	require.NoError(t, err)
	defer resp.Body.Close()
	var out admissionv1.AdmissionReview
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	require.NotNil(t, out.Response)
	assert.EqualValues(t, reviewUID, out.Response.UID)
	return resp.StatusCode, out.Response
}

// patchOps decodes a JSON patch. Its operations come in no fixed order.
func patchOps(t *testing.T, patch []byte) []map[string]any {
	var ops []map[string]any
	require.NoError(t, json.Unmarshal(patch, &ops))
	for _, op := range ops {
		assert.Contains(t, []any{"add", "replace", "remove"}, op["op"])
	}
	return ops
}

func TestHandler(t *testing.T) {
	t.Run("A pod without the annotation should be admitted with an empty patch.", func(t *testing.T) {
		h := newHarness(t, upstream)
		code, resp := h.review(t, seedPod(map[string]string{"team": "a"}), false)
		assert.Equal(t, http.StatusOK, code)
		assert.True(t, resp.Allowed)
		assert.Empty(t, resp.Patch)
		assert.Equal(t, []string{"untouched"}, h.seen)
	})

	t.Run("The seed pod should be admitted, patched, and its Secret written.", func(t *testing.T) {
		h := newHarness(t, upstream)
		code, resp := h.review(t, seedPod(map[string]string{webhook.AnnotationStore: "remote-k8s-store", webhook.AnnotationSecrets: seedSecrets}), false)
		assert.Equal(t, http.StatusOK, code)
		require.True(t, resp.Allowed)
		assert.Len(t, patchOps(t, resp.Patch), 2, "the status annotation and the envFrom")
		assert.Contains(t, string(resp.Patch), `/metadata/annotations/secret-relay.io~1status`)
		assert.Contains(t, string(resp.Patch), `envFrom`)
		assert.NotContains(t, string(resp.Patch), "peter", "the patch holds names and hashes only")
		s, err := h.client.CoreV1().Secrets("default").Get(context.Background(), "pulled-secrets", metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, map[string][]byte{"username": []byte("peter")}, s.Data)
	})

	t.Run("A reinvoked review of an already relayed pod should change nothing.", func(t *testing.T) {
		h := newHarness(t, upstream)
		p := seedPod(map[string]string{webhook.AnnotationStore: "remote-k8s-store", webhook.AnnotationSecrets: seedSecrets})
		_, first := h.review(t, p, false)
		require.True(t, first.Allowed)
		// Apply what the first review did, as the API server would before reinvoking.
		reqs, err := webhook.ParseAnnotations(p.Annotations)
		require.NoError(t, err)
		s, err := h.client.CoreV1().Secrets("default").Get(context.Background(), "pulled-secrets", metav1.GetOptions{})
		require.NoError(t, err)
		require.NoError(t, webhook.MutatePod(p, reqs, map[string]string{"pulled-secrets": s.Annotations[webhook.AnnotationDataHash]}))

		_, second := h.review(t, p, false)
		require.True(t, second.Allowed)
		assert.JSONEq(t, "[]", string(second.Patch))
		writes := 0
		for _, a := range h.client.Actions() {
			if a.GetVerb() == "create" || a.GetVerb() == "update" {
				writes++
			}
		}
		assert.Equal(t, 1, writes, "the second review finds the Secret current and writes nothing")
	})

	t.Run("A dryRun review should return the same patch and write nothing.", func(t *testing.T) {
		h := newHarness(t, upstream)
		p := seedPod(map[string]string{webhook.AnnotationStore: "remote-k8s-store", webhook.AnnotationSecrets: seedSecrets})
		_, dry := h.review(t, p, true)
		require.True(t, dry.Allowed)
		_, err := h.client.CoreV1().Secrets("default").Get(context.Background(), "pulled-secrets", metav1.GetOptions{})
		assert.Error(t, err, "nothing written")
		_, wet := h.review(t, p, false)
		assert.ElementsMatch(t, patchOps(t, wet.Patch), patchOps(t, dry.Patch))
	})

	t.Run("A denial should be HTTP 200 with allowed=false and a secret-relay message.", func(t *testing.T) {
		h := newHarness(t, upstream)
		code, resp := h.review(t, seedPod(map[string]string{webhook.AnnotationStore: "nope", webhook.AnnotationSecrets: seedSecrets}), false)
		assert.Equal(t, http.StatusOK, code)
		assert.False(t, resp.Allowed)
		require.NotNil(t, resp.Result)
		assert.Equal(t, `secret-relay: store SecretStore/nope not found in namespace "default"`, resp.Result.Message)
		assert.Equal(t, []string{"denied"}, h.seen)
	})

	t.Run("A malformed annotation should be denied naming the annotation.", func(t *testing.T) {
		h := newHarness(t, upstream)
		_, resp := h.review(t, seedPod(map[string]string{webhook.AnnotationSecrets: "{not: [a list"}), false)
		assert.False(t, resp.Allowed)
		assert.Contains(t, resp.Result.Message, "secret-relay: annotation secret-relay.io/secrets")
	})

	t.Run("An unreachable upstream with no copy should be denied.", func(t *testing.T) {
		h := newHarness(t, upstream)
		_, resp := h.review(t, seedPod(map[string]string{webhook.AnnotationStore: "down", webhook.AnnotationSecrets: seedSecrets}), false)
		assert.False(t, resp.Allowed)
		assert.Contains(t, resp.Result.Message, "secret-relay: upstream of store SecretStore/down is unreachable")
	})

	t.Run("No log line should carry a patch or a secret value, even at debug level.", func(t *testing.T) {
		h := newHarness(t, upstream)
		_, resp := h.review(t, seedPod(map[string]string{webhook.AnnotationStore: "remote-k8s-store", webhook.AnnotationSecrets: seedSecrets}), false)
		require.True(t, resp.Allowed)
		require.NotZero(t, h.logs.Len())
		handled := h.logs.FilterMessage("Admission review request handled").All()
		require.Len(t, handled, 1, "kubewebhook's line, at debug level")
		assert.Equal(t, "default", handled[0].ContextMap()["ns"], "with kubewebhook's fields")
		for _, e := range h.logs.All() {
			line := e.Message + fmt.Sprint(e.ContextMap())
			assert.NotContains(t, line, "peter")
			assert.NotContains(t, line, "cGV0ZXI=")
			assert.NotContains(t, line, `"op"`, "no JSON patch in logs: %s", line)
		}
	})
}
