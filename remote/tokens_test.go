package remote_test

import (
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"

	"github.com/secret-relay/secret-relay/remote"
)

// tokenAPI is a downstream whose TokenRequests it records, answering tok-1, tok-2,
// … or fail when set.
type tokenAPI struct {
	*fake.Clientset
	mu       sync.Mutex
	requests []*authenticationv1.TokenRequest
	fail     error
}

func newTokenAPI() *tokenAPI {
	api := &tokenAPI{Clientset: fake.NewClientset()}
	api.PrependReactor("create", "serviceaccounts", func(a clienttesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "token" {
			return false, nil, nil
		}
		api.mu.Lock()
		defer api.mu.Unlock()
		if api.fail != nil {
			return true, nil, api.fail
		}
		req := a.(clienttesting.CreateAction).GetObject().(*authenticationv1.TokenRequest)
		api.requests = append(api.requests, req)
		out := req.DeepCopy()
		out.Status = authenticationv1.TokenRequestStatus{
			Token:               fmt.Sprintf("tok-%d", len(api.requests)),
			ExpirationTimestamp: metav1.NewTime(time.Now().Add(time.Duration(*req.Spec.ExpirationSeconds) * time.Second)),
		}
		return true, out, nil
	})
	// The downstream API server does not accept tokens for the upstream's audience.
	api.PrependReactor("create", "tokenreviews", func(a clienttesting.Action) (bool, runtime.Object, error) {
		return true, a.(clienttesting.CreateAction).GetObject().DeepCopyObject(), nil
	})
	return api
}

func (a *tokenAPI) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.requests)
}

func TestTokens(t *testing.T) {
	ref := remote.ServiceAccountRef{Namespace: "team-a", Name: "relay-reader", Audiences: []string{"secret-relay-upstream"}}

	t.Run("A token should be requested once for its audiences and an hour, cached, and renewed later.", func(t *testing.T) {
		api := newTokenAPI()
		tokens := remote.NewTokens(api)
		tokens.RenewAfter(200 * time.Millisecond)
		src := tokens.Source(ref)
		for range 3 {
			tok, err := src.Token()
			require.NoError(t, err)
			assert.Equal(t, "tok-1", tok.AccessToken)
		}
		assert.Same(t, src, tokens.Source(ref), "one source for one ServiceAccount and audiences")
		require.Equal(t, 1, api.count())
		assert.Equal(t, []string{"secret-relay-upstream"}, api.requests[0].Spec.Audiences)
		assert.Equal(t, int64(3600), *api.requests[0].Spec.ExpirationSeconds)

		time.Sleep(250 * time.Millisecond)
		tok, err := src.Token()
		require.NoError(t, err)
		assert.Equal(t, "tok-2", tok.AccessToken, "renewed")
	})

	t.Run("A token that cannot be requested should say why, and what to enable.", func(t *testing.T) {
		gr := schema.GroupResource{Resource: "serviceaccounts"}
		for err, want := range map[error]string{
			apierrors.NewForbidden(gr, "relay-reader", fmt.Errorf("no RBAC")): `secret-relay may not request tokens for ServiceAccount team-a/relay-reader: install it with serviceAccountAuth.enabled=true`,
			apierrors.NewNotFound(gr, "relay-reader"):                         `ServiceAccount team-a/relay-reader not found downstream`,
		} {
			api := newTokenAPI()
			api.fail = err
			_, got := remote.NewTokens(api).Source(ref).Token()
			require.Error(t, got)
			assert.Contains(t, got.Error(), want)
		}
	})

	t.Run("A token this cluster's own API server accepts should be refused, whatever its audiences.", func(t *testing.T) {
		api := newTokenAPI()
		api.PrependReactor("create", "tokenreviews", func(a clienttesting.Action) (bool, runtime.Object, error) {
			review := a.(clienttesting.CreateAction).GetObject().(*authenticationv1.TokenReview).DeepCopy()
			review.Status.Authenticated = review.Spec.Token == "tok-1"
			return true, review, nil
		})
		_, err := remote.NewTokens(api).Source(ref).Token()
		require.Error(t, err)
		assert.Contains(t, err.Error(), `the audiences ["secret-relay-upstream"] of ServiceAccount team-a/relay-reader are accepted by this cluster's own API server`)
		assert.NotContains(t, err.Error(), "tok-1")
	})

	t.Run("A client should send the token, and ask for a new one once the upstream answers 401.", func(t *testing.T) {
		var (
			mu     sync.Mutex
			seen   []string
			revoke = "tok-1"
		)
		upstream := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, r.Header.Get("Authorization"))
			if r.Header.Get("Authorization") == "Bearer "+revoke {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"kind":"Secret","apiVersion":"v1","metadata":{"name":"user-credentials"}}`))
		}))
		defer upstream.Close()
		ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: upstream.Certificate().Raw})
		api := newTokenAPI()
		ep := remote.Endpoint{URL: upstream.URL, CA: ca, ServiceAccount: &ref, TokenSource: remote.NewTokens(api).Source(ref)}
		cfg, err := ep.RESTConfig()
		require.NoError(t, err)
		client, err := kubernetes.NewForConfig(cfg)
		require.NoError(t, err)

		// client-go keeps a token that was new when its request began, so the
		// second 401 is the one that drops it.
		for range 2 {
			_, err = client.CoreV1().Secrets("default").Get(t.Context(), "user-credentials", metav1.GetOptions{})
			assert.True(t, apierrors.IsUnauthorized(err), "tok-1 is refused: %v", err)
		}
		_, err = client.CoreV1().Secrets("default").Get(t.Context(), "user-credentials", metav1.GetOptions{})
		require.NoError(t, err, "a new token after the 401")
		mu.Lock()
		defer mu.Unlock()
		assert.Equal(t, []string{"Bearer tok-1", "Bearer tok-1", "Bearer tok-2"}, seen)
		assert.Equal(t, 2, api.count())
	})
}
