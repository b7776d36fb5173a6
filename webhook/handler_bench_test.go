package webhook_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.uber.org/zap"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/secret-relay/secret-relay/relay"
	"github.com/secret-relay/secret-relay/webhook"
)

// BenchmarkWarmReview measures one review of a pod whose Secret is already relayed,
// through the real handler, with in-memory stores: the webhook's own cost.
func BenchmarkWarmReview(b *testing.B) {
	client := fake.NewClientset()
	m, err := webhook.NewMutator(webhook.MutatorConfig{
		Stores: upstream, Tokens: testTokens, Local: relay.ClientsetLocalSecrets{Client: client}, UpstreamTimeout: time.Second,
	})
	if err != nil {
		b.Fatal(err)
	}
	h, err := webhook.NewHandler(webhook.HandlerConfig{Mutator: m, Logger: zap.NewNop()})
	if err != nil {
		b.Fatal(err)
	}
	p := seedPod(map[string]string{relay.AnnotationStore: "remote-k8s-store", relay.AnnotationSecrets: seedSecrets})
	raw, _ := json.Marshal(p)
	dry := false
	body, _ := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID: "u", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}, Resource: metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Namespace: "default", Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: raw}, DryRun: &dry,
		},
	})
	// Relay once, so that the Secret exists and later reviews are warm.
	_, _ = m.Relay(context.Background(), "default", p.DeepCopy(), false)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/mutate-pods", bytes.NewReader(body)))
		if rec.Code != http.StatusOK {
			b.Fatal(rec.Code)
		}
	}
}
