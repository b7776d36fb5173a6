package remote

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"
)

// TestAccountToken checks the cache of one ServiceAccount's token on a clock the
// test moves: reviewed downstream while in use, dropped once its ServiceAccount is
// gone, and kept through a downstream that does not answer while still valid.
func TestAccountToken(t *testing.T) {
	var (
		minted   atomic.Int32
		deleted  atomic.Bool
		down     atomic.Bool
		reviewed atomic.Int32
	)
	api := fake.NewClientset()
	api.PrependReactor("create", "serviceaccounts", func(a clienttesting.Action) (bool, runtime.Object, error) {
		if down.Load() {
			return true, nil, errors.New("connection refused")
		}
		out := a.(clienttesting.CreateAction).GetObject().(*authenticationv1.TokenRequest).DeepCopy()
		out.Status.Token = "tok-" + string(rune('0'+minted.Add(1)))
		out.Status.ExpirationTimestamp = metav1.NewTime(time.Now().Add(time.Hour))
		return true, out, nil
	})
	api.PrependReactor("create", "tokenreviews", func(a clienttesting.Action) (bool, runtime.Object, error) {
		review := a.(clienttesting.CreateAction).GetObject().(*authenticationv1.TokenReview).DeepCopy()
		if len(review.Spec.Audiences) > 0 { // the periodic review, for the upstream's audiences
			reviewed.Add(1)
			review.Status.Authenticated = !deleted.Load()
		}
		return true, review, nil
	})
	now := time.Now()
	tokens := NewTokens(api)
	a := &accountToken{req: tokenRequester{tokens: tokens, ref: ServiceAccountRef{Namespace: "team-a", Name: "reader", Audiences: []string{"up"}}},
		now: func() time.Time { return now }}

	tok, err := a.Token()
	require.NoError(t, err)
	assert.Equal(t, "tok-1", tok.AccessToken)
	now = now.Add(accountCheckInterval - time.Second)
	_, err = a.Token()
	require.NoError(t, err)
	assert.Zero(t, reviewed.Load(), "not reviewed within the interval")
	now = now.Add(time.Second)
	tok, err = a.Token()
	require.NoError(t, err)
	assert.Equal(t, "tok-1", tok.AccessToken)
	assert.Equal(t, int32(1), reviewed.Load(), "reviewed once the interval passed")

	t.Run("A still valid token should outlast a downstream that does not answer its renewal.", func(t *testing.T) {
		down.Store(true)
		defer down.Store(false)
		now = now.Add(48 * time.Minute) // due for renewal, an hour not over
		tok, err := a.Token()
		require.NoError(t, err)
		assert.Equal(t, "tok-1", tok.AccessToken)
	})

	t.Run("Once its ServiceAccount is gone downstream, the token should be dropped as a 401.", func(t *testing.T) {
		tok, err := a.Token() // renewed now that the downstream answers
		require.NoError(t, err)
		assert.Equal(t, "tok-2", tok.AccessToken)
		deleted.Store(true)
		now = now.Add(accountCheckInterval)
		_, err = a.Token()
		require.Error(t, err)
		assert.True(t, apierrors.IsUnauthorized(err), "the upstream cache treats it as a refusal: %v", err)
		assert.Contains(t, err.Error(), "the token of ServiceAccount team-a/reader is no longer valid downstream")
	})
}

func TestForgottenStoreDropsItsToken(t *testing.T) {
	ref := ServiceAccountRef{Namespace: "team-a", Name: "reader", Audiences: []string{"up"}}
	c := NewClients(nil, nil)
	c.MintTokensWith(NewTokens(fake.NewClientset()))
	src := c.tokens.Source(ref)
	c.byStore["SecretStore team-a/one"] = storeClient{account: &ref}
	c.byStore["SecretStore team-a/two"] = storeClient{account: &ref}

	c.Forget("SecretStore team-a/one")
	assert.Same(t, src, c.tokens.Source(ref), "the other store still uses it")
	c.Forget("SecretStore team-a/two")
	assert.NotSame(t, src, c.tokens.Source(ref), "dropped with the last store that named it")
}
