package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	kwhwebhook "github.com/slok/kubewebhook/v2/pkg/webhook"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zapcore"
)

func TestVersion(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, run(context.Background(), []string{"version"}, &out, &out))
	assert.Equal(t, version+"\n", out.String())
}

var defaultLease = LeaseTiming{Duration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second}

func TestParseFlags(t *testing.T) {
	tests := map[string]struct {
		args   []string
		env    string
		exp    Flags
		expErr string
	}{
		"No flags should give the contract's defaults.": {
			exp: Flags{
				WebhookAddress: ":9443", TLSCertFile: "/etc/secret-relay/tls/tls.crt", TLSKeyFile: "/etc/secret-relay/tls/tls.key",
				ProbeAddress: ":8080", Namespace: "secret-relay", UpstreamTimeout: 2 * time.Second, OrphanGracePeriod: 10 * time.Minute, LeaderElect: true,
				LogLevel: zapcore.InfoLevel, LogFormat: "json",
				StoreValidationInterval: 5 * time.Minute, CertReloadInterval: 10 * time.Second,
				ShutdownDelay: 3 * time.Second, Lease: defaultLease, TokenRenewal: 48 * time.Minute,
			},
		},
		"POD_NAMESPACE should be the default namespace.": {
			env: "relay-system",
			exp: Flags{
				WebhookAddress: ":9443", TLSCertFile: "/etc/secret-relay/tls/tls.crt", TLSKeyFile: "/etc/secret-relay/tls/tls.key",
				ProbeAddress: ":8080", Namespace: "relay-system", UpstreamTimeout: 2 * time.Second, OrphanGracePeriod: 10 * time.Minute, LeaderElect: true,
				LogLevel: zapcore.InfoLevel, LogFormat: "json",
				StoreValidationInterval: 5 * time.Minute, CertReloadInterval: 10 * time.Second,
				ShutdownDelay: 3 * time.Second, Lease: defaultLease, TokenRenewal: 48 * time.Minute,
			},
		},
		"Every flag should be read.": {
			args: []string{"--kubeconfig", "/k", "--webhook-address", "127.0.0.1:1", "--tls-cert-file", "c", "--tls-key-file", "k",
				"--probe-address", "127.0.0.1:2", "--namespace", "ns", "--upstream-timeout", "500ms", "--orphan-grace-period", "30s", "--leader-elect=false",
				"--log-level", "debug", "--log-format", "console", "--shutdown-delay", "0s",
				"--leader-elect-lease-duration", "6s", "--leader-elect-renew-deadline", "4s", "--leader-elect-retry-period", "1s",
				"--client-ca-file", "/ca.crt", "--excluded-namespaces", "team-a, team-b", "--excluded-namespaces", "team-c",
				"--service-account-token-renewal", "5s"},
			exp: Flags{
				ClientCAFile: "/ca.crt", ExcludedNamespaces: []string{"team-a", "team-b", "team-c"},
				Kubeconfig: "/k", WebhookAddress: "127.0.0.1:1", TLSCertFile: "c", TLSKeyFile: "k", ProbeAddress: "127.0.0.1:2",
				Namespace: "ns", UpstreamTimeout: 500 * time.Millisecond, OrphanGracePeriod: 30 * time.Second, LogLevel: zapcore.DebugLevel, LogFormat: "console",
				StoreValidationInterval: 5 * time.Minute, CertReloadInterval: 10 * time.Second,
				Lease:        LeaseTiming{Duration: 6 * time.Second, RenewDeadline: 4 * time.Second, RetryPeriod: time.Second},
				TokenRenewal: 5 * time.Second,
			},
		},
		"A token renewal past the token's lifetime should be refused.": {
			args: []string{"--service-account-token-renewal", "2h"}, expErr: "--service-account-token-renewal must be between 1s and 1h0m0s",
		},
		"Lease timings should be read and checked against each other.": {
			args: []string{"--leader-elect-lease-duration", "4s", "--leader-elect-renew-deadline", "4s"}, expErr: "renew deadline (4s) < lease duration (4s)",
		},
		"A negative shutdown delay should be refused.": {
			args: []string{"--shutdown-delay", "-1s"}, expErr: "--shutdown-delay must not be negative",
		},
		"A non-positive upstream timeout should be refused.": {
			args: []string{"--upstream-timeout", "0s"}, expErr: "--upstream-timeout must be positive",
		},
		"A non-positive orphan grace period should be refused.": {
			args: []string{"--orphan-grace-period", "0s"}, expErr: "--orphan-grace-period must be positive",
		},
		"An unknown log format should be refused.": {
			args: []string{"--log-format", "xml"}, expErr: "--log-format must be json or console",
		},
		"An unknown log level should be refused.": {
			args: []string{"--log-level", "loud"}, expErr: "loud",
		},
		"The same address for both listeners should be refused.": {
			args: []string{"--webhook-address", ":1", "--probe-address", ":1"}, expErr: "must differ",
		},
		"Stray arguments should be refused.": {
			args: []string{"extra"}, expErr: "unexpected arguments",
		},
	}
	for name, test := range tests {
		t.Run(name, func(t *testing.T) {
			t.Setenv("POD_NAMESPACE", test.env)
			var out bytes.Buffer
			got, err := parseFlags(test.args, &out)
			if test.expErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), test.expErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, test.exp, got)
		})
	}
}

func TestRunRejectsUnknownCommands(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"frobnicate"}, &out, &out)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `unknown command "frobnicate"`)
	assert.Contains(t, out.String(), "Usage:")
}

func TestProfilingIsOffByDefault(t *testing.T) {
	reg := prometheus.NewRegistry()
	for _, c := range []struct {
		profiling bool
		want      int
	}{{false, http.StatusNotFound}, {true, http.StatusOK}} {
		rec := httptest.NewRecorder()
		probeMux(reg, nil, c.profiling).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/debug/pprof/heap", nil))
		assert.Equal(t, c.want, rec.Code, "profiling %v", c.profiling)
	}
}

func TestGCPercent(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	t.Setenv(memoryLimitEnv, "")
	require.NoError(t, setRuntimeLimits())
	assert.Equal(t, gcPercent, debug.SetGCPercent(100), "without GOGC, secret-relay's own target")

	t.Setenv("GOGC", "100")
	debug.SetGCPercent(80) // as if the runtime had read GOGC
	require.NoError(t, setRuntimeLimits())
	assert.Equal(t, 80, debug.SetGCPercent(100), "GOGC, when set, wins")
}

func TestSoftMemoryLimit(t *testing.T) {
	limit, err := softMemoryLimit("", "268435456")
	require.NoError(t, err)
	assert.Equal(t, int64(228170137), limit, "85% of the container's limit")
	limit, err = softMemoryLimit("200MiB", "268435456")
	require.NoError(t, err)
	assert.Zero(t, limit, "GOMEMLIMIT, when given, wins")
	limit, err = softMemoryLimit("", "")
	require.NoError(t, err)
	assert.Zero(t, limit, "no limit, nothing set")
	_, err = softMemoryLimit("", "256Mi")
	assert.ErrorContains(t, err, memoryLimitEnv+` must be a number of bytes, got "256Mi"`)
}

// TestGCTuner: the collector's target rises with the first busy second of reviews,
// stays up through a short lull, and comes down after quietTicks quiet seconds.
func TestGCTuner(t *testing.T) {
	g := &gcTuner{}
	type tick struct {
		reviews int64
		percent int
		changed bool
	}
	for i, tk := range []tick{
		{reviews: 5, percent: gcPercent},  // pods one by one
		{reviews: 99, percent: gcPercent}, // not yet busy
		{reviews: 100, percent: gcPercentBusy, changed: true},
		{reviews: 6000, percent: gcPercentBusy},
		{reviews: 0, percent: gcPercentBusy}, // a lull
		{reviews: 0, percent: gcPercentBusy},
		{reviews: 500, percent: gcPercentBusy}, // busy again: the lull starts over
		{reviews: 10, percent: gcPercentBusy},
		{reviews: 10, percent: gcPercentBusy},
		{reviews: 10, percent: gcPercent, changed: true}, // quiet for quietTicks
		{reviews: 0, percent: gcPercent},
	} {
		percent, changed := g.step(tk.reviews, time.Second)
		assert.Equal(t, tk.percent, percent, "tick %d", i)
		assert.Equal(t, tk.changed, changed, "tick %d", i)
	}
	// The rate, not the count: 150 reviews in two seconds is not busy.
	percent, _ := (&gcTuner{}).step(150, 2*time.Second)
	assert.Equal(t, gcPercent, percent)

	t.Setenv("GOGC", "75")
	assert.Nil(t, newGCTuner(), "GOGC set: the runtime's own")
	newGCTuner().observe() // a nil tuner counts nothing and does not panic
}

// TestReviewMetricsWithoutNamespace: reviews from many namespaces make one series,
// not one per namespace.
func TestReviewMetricsWithoutNamespace(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := newMetrics(reg)
	require.NoError(t, err)
	for _, ns := range []string{"team-a", "team-b", "team-c"} {
		m.kwh.MeasureMutatingWebhookReviewOp(t.Context(), kwhwebhook.MeasureMutatingOpData{MeasureOpCommonData: kwhwebhook.MeasureOpCommonData{
			WebhookID: "pods.secret-relay.io", ResourceNamespace: ns, ResourceKind: "v1/Pod", Operation: "create", Success: true, Duration: time.Millisecond,
		}})
	}
	families, err := reg.Gather()
	require.NoError(t, err)
	seen := 0
	for _, f := range families {
		if !strings.HasPrefix(f.GetName(), "kubewebhook_mutating_webhook_review") {
			continue
		}
		seen++
		require.Len(t, f.GetMetric(), 1, "%s should have one series for all namespaces", f.GetName())
		for _, l := range f.GetMetric()[0].GetLabel() {
			if l.GetName() == "resource_namespace" {
				assert.Empty(t, l.GetValue())
			}
		}
	}
	assert.NotZero(t, seen, "kubewebhook's review metrics should be registered")
}
