package controllers

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/secret-relay/secret-relay/api/v1alpha1"
	"github.com/secret-relay/secret-relay/remote/remotetest"
)

func TestStoreReadyMetric(t *testing.T) {
	h := newHarness(t, []runtime.Object{
		remotetest.Store(t, v1alpha1.SecretStoreKind, "team-a", "own", ""),
		remotetest.Store(t, v1alpha1.ClusterSecretStoreKind, "", "shared", "[{namespaces: [team-a]}]"),
	}, []runtime.Object{remotetest.Namespace("team-a", nil), remotetest.TokenSecret("team-a")}, nil)
	reg := prometheus.NewRegistry()
	NewMetrics(reg, h.stores)
	h.start()
	want := func(own, shared string) string {
		return `
# HELP secret_relay_store_ready 1 while a store's Ready condition is True, 0 otherwise (invalid, refused or unreachable upstream, or not validated yet).
# TYPE secret_relay_store_ready gauge
secret_relay_store_ready{kind="ClusterSecretStore",name="shared",namespace=""} ` + shared + `
secret_relay_store_ready{kind="SecretStore",name="own",namespace="team-a"} ` + own + "\n"
	}
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(want("0", "0")), "secret_relay_store_ready"), "not validated yet")

	end := runTerm(h.validator())
	defer end()
	// The ClusterSecretStore's token Secret, in store-config, does not exist.
	assert.Eventually(t, func() bool {
		return testutil.GatherAndCompare(reg, strings.NewReader(want("1", "0")), "secret_relay_store_ready") == nil
	}, 5*time.Second, 10*time.Millisecond)

	require.NoError(t, h.storesAPI.SecretRelayV1alpha1().SecretStores("team-a").Delete(context.Background(), "own", metav1.DeleteOptions{}))
	assert.Eventually(t, func() bool {
		n, err := testutil.GatherAndCount(reg, "secret_relay_store_ready")
		return err == nil && n == 1
	}, 5*time.Second, 10*time.Millisecond, "a deleted store's series goes with it")
}
