package webhook_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.uber.org/zap"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/secret-relay/secret-relay/relay"
	"github.com/secret-relay/secret-relay/webhook"
)

// FuzzReview sends arbitrary bodies to the real handler: whatever comes in, the
// answer is an HTTP status below 500 or an AdmissionReview, never a crash.
func FuzzReview(f *testing.F) {
	f.Add([]byte(``))
	f.Add([]byte(`not json`))
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`))
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","operation":"CREATE","namespace":"default","object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","annotations":{"secret-relay.io/store":"remote-k8s-store","secret-relay.io/secrets":"[user-credentials]"}},"spec":{"containers":[{"name":"c","image":"i"}]}}}}`))
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","operation":"CREATE","namespace":"default","object":{"apiVersion":"v1","kind":"Pod","metadata":{"annotations":{"secret-relay.io/secrets":"- {name: x, data: [{secretKey: a, remoteRef: {key: user-credentials, property: username}}], env: true, mountPath: /x}"}}}}}`))
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","operation":"CREATE","object":{"kind":"Pod","metadata":{"annotations":{"secret-relay.io/secrets":null}}}}}`))
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"u","operation":"DELETE"}}`))

	m, err := webhook.NewMutator(webhook.MutatorConfig{
		Stores: upstream, Tokens: testTokens, Local: relay.ClientsetLocalSecrets{Client: fake.NewClientset()}, UpstreamTimeout: time.Second,
	})
	if err != nil {
		f.Fatal(err)
	}
	h, err := webhook.NewHandler(webhook.HandlerConfig{Mutator: m, Logger: zap.NewNop()})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/mutate-pods", bytes.NewReader(body)))
		if rec.Code >= 500 && rec.Code != http.StatusInternalServerError {
			t.Fatalf("status %d", rec.Code)
		}
		if rec.Code == http.StatusInternalServerError && bytes.Contains(rec.Body.Bytes(), []byte("panic")) {
			t.Fatalf("a panic reached the response: %s", rec.Body.String())
		}
	})
}
