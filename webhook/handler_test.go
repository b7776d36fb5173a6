package webhook_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	"github.com/secret-relay/secret-relay/relay"
	"github.com/secret-relay/secret-relay/webhook"
)

// testTokens keys the tokens of the handler tests.
var testTokens = func() relay.TokenKey {
	k, err := relay.NewTokenKey(bytes.Repeat([]byte("k"), 32))
	if err != nil {
		panic(err)
	}
	return k
}()

// fakeStores serves upstream Secrets from memory; a store named "down" is unreachable.
type fakeStores map[string]map[string]*corev1.Secret

func (f fakeStores) Resolve(_ context.Context, ns string, ref relay.StoreRef) (relay.SecretSource, error) {
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

func (f fakeSource) Get(_ context.Context, name string) (*relay.Remote, error) {
	if s, ok := f.secrets[name]; ok {
		return relay.RemoteOf(s.DeepCopy()), nil
	}
	return nil, webhook.Denyf("remote Secret %q not found in namespace %q of store %s", name, "default", f.store)
}

type unreachable struct{}

func (unreachable) Get(context.Context, string) (*relay.Remote, error) {
	return nil, fmt.Errorf("%w: connection refused", relay.ErrUnreachable)
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

// honorDryRun makes the fake clientset check dry-run writes of Secrets and store
// nothing, as the API server does; its object tracker would store them.
func honorDryRun(client *fake.Clientset) {
	gvr := corev1.SchemeGroupVersion.WithResource("secrets")
	client.PrependReactor("*", "secrets", func(action k8stesting.Action) (bool, runtime.Object, error) {
		var (
			dry  []string
			name string
			obj  runtime.Object
		)
		switch a := action.(type) {
		case k8stesting.CreateActionImpl:
			dry, obj = a.CreateOptions.DryRun, a.Object
			name = a.Object.(*corev1.Secret).Name
		case k8stesting.UpdateActionImpl:
			dry, obj = a.UpdateOptions.DryRun, a.Object
			name = a.Object.(*corev1.Secret).Name
		case k8stesting.DeleteActionImpl:
			dry, name = a.DeleteOptions.DryRun, a.Name
		default:
			return false, nil, nil
		}
		if len(dry) == 0 {
			return false, nil, nil
		}
		_, err := client.Tracker().Get(gvr, action.GetNamespace(), name)
		switch {
		case action.GetVerb() == "create" && err == nil:
			return true, nil, apierrors.NewAlreadyExists(gvr.GroupResource(), name)
		case action.GetVerb() != "create" && err != nil:
			return true, nil, err
		}
		return true, obj, nil
	})
}

func newHarness(t *testing.T, stores fakeStores) *harness {
	h := &harness{client: fake.NewClientset()}
	honorDryRun(h.client)
	core, logs := observer.New(zap.DebugLevel)
	h.logs = logs
	m, err := webhook.NewMutator(webhook.MutatorConfig{
		Stores: stores, Tokens: testTokens, Local: relay.ClientsetLocalSecrets{Client: h.client},
		UnservedNamespaces: []string{"kube-system", "secret-relay"},
		UpstreamTimeout:    time.Second, Logger: zap.New(core),
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

// postEdited posts the review of creating pod after edit has changed its request,
// as a client other than the API server might, and returns the response.
func (h *harness) postEdited(t *testing.T, pod *corev1.Pod, edit func(*admissionv1.AdmissionRequest)) *admissionv1.AdmissionResponse {
	t.Helper()
	var review admissionv1.AdmissionReview
	require.NoError(t, json.Unmarshal(reviewJSON(t, pod, false), &review))
	edit(review.Request)
	body, err := json.Marshal(review)
	require.NoError(t, err)
	resp, err := http.Post(h.srv.URL, "application/json", bytes.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var out admissionv1.AdmissionReview
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	require.NotNil(t, out.Response)
	return out.Response
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
		code, resp := h.review(t, seedPod(map[string]string{relay.AnnotationStore: "remote-k8s-store", relay.AnnotationSecrets: seedSecrets}), false)
		assert.Equal(t, http.StatusOK, code)
		require.True(t, resp.Allowed)
		assert.Len(t, patchOps(t, resp.Patch), 3, "the relayed label, the status annotation and the envFrom")
		assert.Contains(t, string(resp.Patch), `{"op":"add","path":"/metadata/labels","value":{"secret-relay.io/relayed":"true"}}`)
		assert.Contains(t, string(resp.Patch), `/metadata/annotations/secret-relay.io~1status`)
		assert.Contains(t, string(resp.Patch), `envFrom`)
		assert.NotContains(t, string(resp.Patch), "peter", "the patch holds names and hashes only")
		s, err := h.client.CoreV1().Secrets("default").Get(context.Background(), "pulled-secrets", metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, map[string][]byte{"username": []byte("peter")}, s.Data)
	})

	t.Run("A reinvoked review of an already relayed pod should change nothing.", func(t *testing.T) {
		h := newHarness(t, upstream)
		p := seedPod(map[string]string{relay.AnnotationStore: "remote-k8s-store", relay.AnnotationSecrets: seedSecrets})
		_, first := h.review(t, p, false)
		require.True(t, first.Allowed)
		// Apply what the first review did, as the API server would before reinvoking.
		reqs, err := webhook.ParseAnnotations(p.Annotations)
		require.NoError(t, err)
		s, err := h.client.CoreV1().Secrets("default").Get(context.Background(), "pulled-secrets", metav1.GetOptions{})
		require.NoError(t, err)
		require.NoError(t, webhook.MutatePod(p, reqs, map[string]string{"pulled-secrets": s.Annotations[relay.AnnotationDataHash]}))

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
		p := seedPod(map[string]string{relay.AnnotationStore: "remote-k8s-store", relay.AnnotationSecrets: seedSecrets})
		_, dry := h.review(t, p, true)
		require.True(t, dry.Allowed)
		_, err := h.client.CoreV1().Secrets("default").Get(context.Background(), "pulled-secrets", metav1.GetOptions{})
		assert.Error(t, err, "nothing written")
		_, wet := h.review(t, p, false)
		assert.ElementsMatch(t, patchOps(t, wet.Patch), patchOps(t, dry.Patch))
	})

	t.Run("A denial should be HTTP 200 with allowed=false and a secret-relay message.", func(t *testing.T) {
		h := newHarness(t, upstream)
		code, resp := h.review(t, seedPod(map[string]string{relay.AnnotationStore: "nope", relay.AnnotationSecrets: seedSecrets}), false)
		assert.Equal(t, http.StatusOK, code)
		assert.False(t, resp.Allowed)
		require.NotNil(t, resp.Result)
		assert.Equal(t, `secret-relay: store SecretStore/nope not found in namespace "default"`, resp.Result.Message)
		assert.Equal(t, []string{"denied"}, h.seen)
	})

	t.Run("A malformed annotation should be denied naming the annotation.", func(t *testing.T) {
		h := newHarness(t, upstream)
		_, resp := h.review(t, seedPod(map[string]string{relay.AnnotationSecrets: "{not: [a list"}), false)
		assert.False(t, resp.Allowed)
		assert.Contains(t, resp.Result.Message, "secret-relay: annotation secret-relay.io/secrets")
	})

	t.Run("An unreachable upstream with no copy should be denied.", func(t *testing.T) {
		h := newHarness(t, upstream)
		_, resp := h.review(t, seedPod(map[string]string{relay.AnnotationStore: "down", relay.AnnotationSecrets: seedSecrets}), false)
		assert.False(t, resp.Allowed)
		assert.Contains(t, resp.Result.Message, "secret-relay: upstream of store SecretStore/down is unreachable")
	})

	t.Run("No log line should carry a patch or a secret value, even at debug level.", func(t *testing.T) {
		h := newHarness(t, upstream)
		_, resp := h.review(t, seedPod(map[string]string{relay.AnnotationStore: "remote-k8s-store", relay.AnnotationSecrets: seedSecrets}), false)
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

// seedWith is the seed pod asking for its Secret under annotations.
func seedWith(secrets string) *corev1.Pod {
	return seedPod(map[string]string{relay.AnnotationStore: "remote-k8s-store", relay.AnnotationSecrets: secrets})
}

func TestHandlerWrites(t *testing.T) {
	t.Run("A dryRun should be denied where the real create would meet an unmanaged Secret.", func(t *testing.T) {
		h := newHarness(t, upstream)
		_, err := h.client.CoreV1().Secrets("default").Create(context.Background(), &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "pulled-secrets"}, Data: map[string][]byte{"username": []byte("mine")},
		}, metav1.CreateOptions{})
		require.NoError(t, err)
		for _, dryRun := range []bool{true, false} {
			code, resp := h.review(t, seedWith(seedSecrets), dryRun)
			assert.Equal(t, http.StatusOK, code)
			require.False(t, resp.Allowed, "dryRun %v", dryRun)
			assert.Equal(t, `secret-relay: Secret "pulled-secrets" already exists in namespace "default" and is not managed by secret-relay; it was left untouched`, resp.Result.Message, "dryRun %v", dryRun)
		}
	})

	t.Run("A write the API server refuses should be a denial naming the Secret and the reason.", func(t *testing.T) {
		h := newHarness(t, upstream)
		h.client.PrependReactor("create", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
			return true, nil, apierrors.NewForbidden(corev1.Resource("secrets"), "pulled-secrets",
				fmt.Errorf("exceeded quota: secrets, requested: count/secrets=1, used: count/secrets=1, limited: count/secrets=1"))
		})
		code, resp := h.review(t, seedWith(seedSecrets), false)
		assert.Equal(t, http.StatusOK, code, "never an HTTP 500")
		require.False(t, resp.Allowed)
		assert.Equal(t, `secret-relay: could not write Secret "pulled-secrets" in namespace "default": secrets "pulled-secrets" is forbidden: exceeded quota: secrets, requested: count/secrets=1, used: count/secrets=1, limited: count/secrets=1`, resp.Result.Message)
	})

	t.Run("A refusal whose message holds a value being written should show only its reason.", func(t *testing.T) {
		h := newHarness(t, upstream)
		h.client.PrependReactor("create", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
			return true, nil, apierrors.NewBadRequest(`a third-party webhook says: value "peter" is not allowed`)
		})
		_, resp := h.review(t, seedWith(seedSecrets), false)
		require.False(t, resp.Allowed)
		assert.Equal(t, `secret-relay: could not write Secret "pulled-secrets" in namespace "default": the downstream API server refused it (BadRequest)`, resp.Result.Message)
	})

	t.Run("A write that times out should be a denial, not an HTTP 500.", func(t *testing.T) {
		h := newHarness(t, upstream)
		h.client.PrependReactor("create", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
			return true, nil, context.DeadlineExceeded
		})
		code, resp := h.review(t, seedWith(seedSecrets), false)
		assert.Equal(t, http.StatusOK, code)
		require.False(t, resp.Allowed)
		assert.Equal(t, `secret-relay: could not write Secret "pulled-secrets" in namespace "default": the downstream API server did not answer in time`, resp.Result.Message)
	})

	t.Run("A managed copy made immutable should be replaced.", func(t *testing.T) {
		h := newHarness(t, upstream)
		_, first := h.review(t, seedWith(seedSecrets), false)
		require.True(t, first.Allowed)
		secrets := h.client.CoreV1().Secrets("default")
		s, err := secrets.Get(context.Background(), "pulled-secrets", metav1.GetOptions{})
		require.NoError(t, err)
		s.Immutable = ptr.To(true)
		s.Data["username"] = []byte("stale")
		_, err = secrets.Update(context.Background(), s, metav1.UpdateOptions{})
		require.NoError(t, err)
		h.client.ClearActions()

		_, resp := h.review(t, seedWith(seedSecrets), false)
		require.True(t, resp.Allowed, "%v", resp.Result)
		var verbs []string
		for _, a := range h.client.Actions() {
			verbs = append(verbs, a.GetVerb())
		}
		assert.Equal(t, []string{"get", "delete", "create"}, verbs, "deleted and written again")
		s, err = secrets.Get(context.Background(), "pulled-secrets", metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, []byte("peter"), s.Data["username"])
	})

	t.Run("A copy over 1 MiB should be denied before anything is written.", func(t *testing.T) {
		big := strings.Repeat("x", 600<<10)
		stores := fakeStores{"remote-k8s-store": {
			"a": {ObjectMeta: metav1.ObjectMeta{Name: "a"}, Data: map[string][]byte{"a": []byte(big)}},
			"b": {ObjectMeta: metav1.ObjectMeta{Name: "b"}, Data: map[string][]byte{"b": []byte(big)}},
		}}
		h := newHarness(t, stores)
		_, resp := h.review(t, seedWith(`[{name: big, dataFrom: [{extract: {key: a}}, {extract: {key: b}}]}]`), false)
		require.False(t, resp.Allowed)
		assert.Equal(t, `secret-relay: local Secret "big" would hold 1228800 bytes of data, over the 1 MiB limit of a Secret (1048576 bytes); relay fewer keys into it`, resp.Result.Message)
		for _, a := range h.client.Actions() {
			assert.NotEqual(t, "create", a.GetVerb())
		}
	})
}

func TestHandlerNamespaces(t *testing.T) {
	tests := map[string]struct {
		reviewNS, podNS string
		expMessage      string
	}{
		"A review for kube-system should be denied: the webhook never serves it.": {
			reviewNS: "kube-system", expMessage: `secret-relay: namespace "kube-system" is not served by secret-relay: its webhook configuration leaves it out`,
		},
		"A review for the relay's own namespace should be denied.": {
			reviewNS: "secret-relay", expMessage: `secret-relay: namespace "secret-relay" is not served by secret-relay: its webhook configuration leaves it out`,
		},
		"A review without a namespace should be denied.": {
			reviewNS: "", expMessage: `secret-relay: the review names no namespace`,
		},
		"A review whose pod names another namespace should be denied.": {
			reviewNS: "default", podNS: "other", expMessage: `secret-relay: the pod's namespace "other" is not the review's namespace "default"`,
		},
	}
	for name, test := range tests {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, upstream)
			p := seedWith(seedSecrets)
			p.Namespace = test.podNS
			resp := h.postEdited(t, p, func(r *admissionv1.AdmissionRequest) { r.Namespace = test.reviewNS })
			require.False(t, resp.Allowed)
			assert.Equal(t, test.expMessage, resp.Result.Message)
			assert.Empty(t, h.client.Actions(), "nothing read or written")
		})
	}

	t.Run("A review of something other than a pod should pass untouched.", func(t *testing.T) {
		h := newHarness(t, upstream)
		resp := h.postEdited(t, seedWith(seedSecrets), func(r *admissionv1.AdmissionRequest) {
			r.Kind = metav1.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}
			r.Resource = metav1.GroupVersionResource{Version: "v1", Resource: "configmaps"}
		})
		assert.True(t, resp.Allowed)
		assert.Empty(t, resp.Patch)
		assert.Empty(t, h.client.Actions())
		assert.Equal(t, []string{"untouched"}, h.seen)
	})
}

func TestHandlerBeforeTheTokenKey(t *testing.T) {
	m, err := webhook.NewMutator(webhook.MutatorConfig{
		Stores: upstream, Local: relay.ClientsetLocalSecrets{Client: fake.NewClientset()},
		Tokens: relay.NewKeyedTokens(fake.NewClientset(), "secret-relay", nil, nil), // never run: no key
	})
	require.NoError(t, err)
	handler, err := webhook.NewHandler(webhook.HandlerConfig{Mutator: m})
	require.NoError(t, err)
	srv := httptest.NewServer(handler)
	defer srv.Close()
	resp, err := http.Post(srv.URL, "application/json", bytes.NewReader(reviewJSON(t, seedWith(seedSecrets), false)))
	require.NoError(t, err)
	defer resp.Body.Close()
	var out admissionv1.AdmissionReview
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	assert.False(t, out.Response.Allowed)
	assert.Equal(t, "secret-relay: this replica is starting: its token key is not loaded yet; retry in a moment", out.Response.Result.Message)
}
