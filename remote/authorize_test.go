package remote

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"

	"github.com/secret-relay/secret-relay/api/v1alpha1"
	"github.com/secret-relay/secret-relay/relay"
	"github.com/secret-relay/secret-relay/remote/remotetest"
	"github.com/secret-relay/secret-relay/webhook"
)

func TestAuthorize(t *testing.T) {
	// The fake clientsets cannot stream a watch-list; real API servers can.
	t.Setenv("KUBE_FEATURE_WatchListClient", "false")
	terminating := remotetest.Namespace("leaving", nil)
	terminating.Status.Phase = corev1.NamespaceTerminating
	storesAPI := remotetest.StoreClient(
		remotetest.Store(t, v1alpha1.SecretStoreKind, "team-a", "own", ""),
		remotetest.Store(t, v1alpha1.ClusterSecretStoreKind, "", "everyone", ""),
		remotetest.Store(t, v1alpha1.ClusterSecretStoreKind, "", "listed", "[{namespaces: [team-a]}]"),
		remotetest.Store(t, v1alpha1.ClusterSecretStoreKind, "", "labelled", "[{namespaceSelector: {matchLabels: {relay: allowed}}}]"),
		remotetest.Store(t, v1alpha1.ClusterSecretStoreKind, "", "regex", `[{namespaceRegexes: ["team-.*"]}]`),
		remotetest.Store(t, v1alpha1.ClusterSecretStoreKind, "", "broken", `[{namespaceRegexes: ["("]}]`),
	)
	down := fake.NewClientset(remotetest.Namespace("team-a", nil), remotetest.Namespace("team-b", map[string]string{"relay": "allowed"}),
		remotetest.Namespace("evil", nil), terminating)
	stores := NewStoreCache(storesAPI, time.Hour)
	stores.Start(t.Context())
	require.True(t, cache.WaitForCacheSync(t.Context().Done(), stores.Synced))
	authz := NewAuthorizer(stores, func(ctx context.Context, name string) (*corev1.Namespace, error) {
		return down.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	})

	secretStore := func(name string) relay.StoreRef { return relay.StoreRef{Kind: relay.SecretStoreKind, Name: name} }
	clusterStore := func(name string) relay.StoreRef {
		return relay.StoreRef{Kind: relay.ClusterSecretStoreKind, Name: name}
	}
	tests := map[string]struct {
		ns       string
		ref      relay.StoreRef
		expCause error
		expMsg   string
	}{
		"A SecretStore should serve its own namespace.": {ns: "team-a", ref: secretStore("own")},
		"A SecretStore should not be found from another namespace.": {ns: "evil", ref: secretStore("own"),
			expCause: relay.ErrStoreNotFound, expMsg: `secret-relay: store SecretStore/own not found in namespace "evil"`},
		"A ClusterSecretStore without conditions should serve every namespace.": {ns: "evil", ref: clusterStore("everyone")},
		"A listed namespace should be admitted.":                                {ns: "team-a", ref: clusterStore("listed")},
		"An unlisted namespace should not be admitted.": {ns: "evil", ref: clusterStore("listed"),
			expCause: relay.ErrNotAllowed, expMsg: `secret-relay: namespace "evil" may not use store ClusterSecretStore/listed`},
		"A namespace with the selected labels should be admitted.": {ns: "team-b", ref: clusterStore("labelled")},
		"A namespace without them should not.": {ns: "team-a", ref: clusterStore("labelled"),
			expCause: relay.ErrNotAllowed, expMsg: `secret-relay: namespace "team-a" may not use store ClusterSecretStore/labelled`},
		"A regex should match the whole name.": {ns: "team-b", ref: clusterStore("regex")},
		"A regex should not match part of a name.": {ns: "evil", ref: clusterStore("regex"),
			expCause: relay.ErrNotAllowed},
		"An invalid regex should be a misconfigured store for everyone.": {ns: "team-a", ref: clusterStore("broken"),
			expCause: relay.ErrStoreMisconfigured, expMsg: `secret-relay: store ClusterSecretStore/broken is misconfigured: spec.conditions[0].namespaceRegexes[0] is not a valid regular expression: error parsing regexp: missing closing ): ` + "`(`"},
		"A missing ClusterSecretStore should not be found.": {ns: "team-a", ref: clusterStore("nope"),
			expCause: relay.ErrStoreNotFound, expMsg: `secret-relay: store ClusterSecretStore/nope not found`},
		"A namespace that does not exist should be refused before any store is looked at.": {ns: "ghost", ref: clusterStore("everyone"),
			expCause: relay.ErrNamespaceNotFound, expMsg: `secret-relay: namespace "ghost" not found`},
		"A namespace being deleted should be refused.": {ns: "leaving", ref: clusterStore("everyone"),
			expCause: relay.ErrNamespaceTerminating, expMsg: `secret-relay: namespace "leaving" is being deleted`},
	}
	for name, test := range tests {
		t.Run(name, func(t *testing.T) {
			g, err := authz.Authorize(context.Background(), test.ns, test.ref)
			if test.expCause == nil {
				require.NoError(t, err)
				assert.Equal(t, test.ns, g.Namespace())
				assert.Equal(t, test.ref.Name, g.Store().Name)
				return
			}
			require.Error(t, err)
			assert.Nil(t, g)
			assert.ErrorIs(t, err, test.expCause)
			assert.True(t, Refused(err))
			assert.True(t, relay.AsError(err) != nil, "a refusal is a denial the user reads")
			if test.expMsg != "" {
				assert.Equal(t, test.expMsg, webhook.DenyPrefix+webhook.Describe(err))
			}
		})
	}

	t.Run("A failure to read the namespace should not count as a refusal.", func(t *testing.T) {
		authz := NewAuthorizer(stores, func(context.Context, string) (*corev1.Namespace, error) {
			return nil, errors.New("the downstream API server timed out")
		})
		_, err := authz.Authorize(context.Background(), "team-a", secretStore("own"))
		require.Error(t, err)
		assert.False(t, Refused(err), "a sync retries it instead of giving up on the copy")
		assert.False(t, relay.AsError(err) != nil)
	})

	t.Run("A change of conditions should apply to the next decision.", func(t *testing.T) {
		api := storesAPI.SecretRelayV1alpha1().ClusterSecretStores()
		s, err := api.Get(context.Background(), "listed", metav1.GetOptions{})
		require.NoError(t, err)
		s.Spec.Conditions = []v1alpha1.ClusterSecretStoreCondition{{Namespaces: []string{"evil"}}}
		s.Generation = 2
		_, err = api.Update(context.Background(), s, metav1.UpdateOptions{})
		require.NoError(t, err)
		assert.Eventually(t, func() bool {
			_, err := authz.Authorize(context.Background(), "team-a", clusterStore("listed"))
			_, errEvil := authz.Authorize(context.Background(), "evil", clusterStore("listed"))
			return errors.Is(err, relay.ErrNotAllowed) && errEvil == nil
		}, 5*time.Second, 10*time.Millisecond)
	})
}
