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

	kwhhttp "github.com/slok/kubewebhook/v2/pkg/http"
	kwhmodel "github.com/slok/kubewebhook/v2/pkg/model"
	kwhmutating "github.com/slok/kubewebhook/v2/pkg/webhook/mutating"
	"go.uber.org/zap"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/secret-relay/secret-relay/relay"
	"github.com/secret-relay/secret-relay/webhook"
)

// BenchmarkWarmReview measures one review of a pod whose Secret is already relayed,
// through the real handler, with in-memory stores: the webhook's own cost.
func BenchmarkWarmReview(b *testing.B) {
	m, err := webhook.NewMutator(webhook.MutatorConfig{
		Stores: upstream, Tokens: testTokens, Local: relay.ClientsetLocalSecrets{Client: fake.NewClientset()}, UpstreamTimeout: time.Second,
	})
	if err != nil {
		b.Fatal(err)
	}
	benchmarkReview(b, m, seedPod(map[string]string{relay.AnnotationStore: "remote-k8s-store", relay.AnnotationSecrets: seedSecrets}))
}

// BenchmarkWarmReviewTenCopies is BenchmarkWarmReview for the bench fleet's pod: ten
// copies of three keys each, from versioned Secrets, as an API server serves them.
func BenchmarkWarmReviewTenCopies(b *testing.B) {
	secrets := cachedStore{}
	var annotation strings.Builder
	for i := range 10 {
		for _, name := range []string{fmt.Sprintf("f-%05d", i), "fanout-all", "fanout-1k"} {
			secrets[name] = relay.RemoteOf(&corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("uid-" + name), ResourceVersion: "7"},
				Data:       map[string][]byte{"payload": bytes.Repeat([]byte("x"), 1024), "value": []byte("v1")},
			})
		}
		fmt.Fprintf(&annotation, "- name: copy-%d\n  data:\n", i)
		fmt.Fprintf(&annotation, "  - {secretKey: payload, remoteRef: {key: f-%05d, property: payload}}\n", i)
		annotation.WriteString("  - {secretKey: fanout-all, remoteRef: {key: fanout-all, property: value}}\n")
		annotation.WriteString("  - {secretKey: fanout-1k, remoteRef: {key: fanout-1k, property: value}}\n")
	}
	m, err := webhook.NewMutator(webhook.MutatorConfig{
		Stores: secrets, Tokens: testTokens, Local: &versionedSecrets{}, UpstreamTimeout: time.Second,
	})
	if err != nil {
		b.Fatal(err)
	}
	benchmarkReview(b, m, seedPod(map[string]string{relay.AnnotationStore: "remote-k8s-store", relay.AnnotationSecrets: annotation.String()}))
}

// cachedStore serves its Secrets as the upstream cache does: shared, not copied.
type cachedStore map[string]*relay.Remote

func (c cachedStore) Resolve(context.Context, string, relay.StoreRef) (relay.SecretSource, error) {
	return c, nil
}

func (c cachedStore) Get(_ context.Context, name string) (*relay.Remote, error) { return c[name], nil }

func benchmarkReview(b *testing.B, m *webhook.Mutator, p *corev1.Pod) {
	h, err := webhook.NewHandler(webhook.HandlerConfig{Mutator: m, Logger: zap.NewNop()})
	if err != nil {
		b.Fatal(err)
	}
	// Relay once, so that the Secrets exist and later reviews are warm.
	if _, err := m.Relay(context.Background(), "default", p.DeepCopy(), false); err != nil {
		b.Fatal(err)
	}
	b.Run("secret-relay", func(b *testing.B) { benchmarkHandler(b, h, p) })
	// The baseline of make bench's admission rows, in process: kubewebhook admitting
	// the same pod unchanged.
	noop, err := kwhmutating.NewWebhook(kwhmutating.WebhookConfig{
		ID:  "noop",
		Obj: &corev1.Pod{},
		Mutator: kwhmutating.MutatorFunc(func(_ context.Context, _ *kwhmodel.AdmissionReview, obj metav1.Object) (*kwhmutating.MutatorResult, error) {
			return &kwhmutating.MutatorResult{MutatedObject: obj}, nil
		}),
	})
	if err != nil {
		b.Fatal(err)
	}
	nh, err := kwhhttp.HandlerFor(kwhhttp.HandlerConfig{Webhook: noop})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("kubewebhook-noop", func(b *testing.B) { benchmarkHandler(b, nh, p) })
}

func benchmarkHandler(b *testing.B, h http.Handler, p *corev1.Pod) {
	raw, _ := json.Marshal(p)
	dry := false
	body, _ := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID: "u", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}, Resource: metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Namespace: "default", Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: raw}, DryRun: &dry,
		},
	})
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/mutate-pods", bytes.NewReader(body)))
		if rec.Code != http.StatusOK {
			b.Fatal(rec.Code)
		}
	}
}
