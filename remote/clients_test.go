package remote

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
)

// TestNewUpstreamClient checks that the two groups of a store's client reach their
// own API paths, with the store's credentials, through one rate limiter.
func TestNewUpstreamClient(t *testing.T) {
	var (
		mu    sync.Mutex
		paths []string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.Method+" "+r.URL.Path+" "+r.Header.Get("Authorization"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/api/v1/namespaces/prod/secrets/db":
			_, _ = w.Write([]byte(`{"kind":"Secret","apiVersion":"v1","metadata":{"name":"db","namespace":"prod"}}`))
		case "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews":
			_, _ = w.Write([]byte(`{"kind":"SelfSubjectAccessReview","apiVersion":"authorization.k8s.io/v1","status":{"allowed":true}}`))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()

	c, err := NewUpstreamClient(&rest.Config{Host: srv.URL, BearerToken: "t0k", QPS: 50, Burst: 100})
	require.NoError(t, err)
	s, err := c.CoreV1().Secrets("prod").Get(context.Background(), "db", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, "db", s.Name)
	review, err := c.AuthorizationV1().SelfSubjectAccessReviews().Create(context.Background(), &authorizationv1.SelfSubjectAccessReview{}, metav1.CreateOptions{})
	require.NoError(t, err)
	assert.True(t, review.Status.Allowed)
	assert.Equal(t, []string{
		"GET /api/v1/namespaces/prod/secrets/db Bearer t0k",
		"POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews Bearer t0k",
	}, paths)

	impl := c.(upstreamClient)
	assert.Same(t, impl.core.RESTClient().GetRateLimiter(), impl.authz.RESTClient().GetRateLimiter(), "one limiter for the store, as a clientset has")
}
