package e2e_test

import (
	"bytes"
	"crypto/tls"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/secret-relay/secret-relay/test/cluster"
)

// TestTransport checks the listeners a cluster operator exposes: TLS 1.2 or later,
// no HTTP/2 on the webhook port, no admission on the probe port, and bad requests
// answered with a 4xx rather than a crash.
func TestTransport(t *testing.T) {
	down := cluster.Start(t, "downstream", cluster.Options{CRDDirs: []string{cluster.CRDDir()}})
	r := cluster.StartRelay(t, relayBinary, suiteDir, down)
	registerLog(r.LogFile)

	t.Run("TLS below 1.2 should be refused.", func(t *testing.T) {
		conn, err := r.DialWebhook(t, &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
		if err == nil {
			conn.Close()
		}
		require.Error(t, err)
	})

	t.Run("HTTP/2 should not be offered on the webhook port.", func(t *testing.T) {
		conn, err := r.DialWebhook(t, &tls.Config{NextProtos: []string{"h2", "http/1.1"}})
		require.NoError(t, err)
		defer conn.Close()
		assert.Equal(t, "http/1.1", conn.ConnectionState().NegotiatedProtocol)
	})

	t.Run("The probe port should serve no admission.", func(t *testing.T) {
		resp, err := http.Post(r.ProbeURL+"/mutate-pods", "application/json", strings.NewReader(`{}`))
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusNotFound, resp.StatusCode)
	})

	client := r.HTTPSClient(t)
	post := func(body []byte) int {
		t.Helper()
		resp, err := client.Post(r.WebhookURL, "application/json", bytes.NewReader(body))
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	bad := map[string][]byte{
		"An empty body should get a 4xx.":                  nil,
		"A body that is not JSON should get a 4xx.":        []byte("not json at all"),
		"A review of the wrong kind should get a 4xx.":     []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"x"}}`),
		"An oversized body (over 6 MiB) should get a 4xx.": bytes.Repeat([]byte("x"), 6<<20+1),
	}
	for name, body := range bad {
		t.Run(name, func(t *testing.T) {
			code := post(body)
			assert.GreaterOrEqual(t, code, 400)
			assert.Less(t, code, 500)
		})
	}

	t.Run("The relay should still be healthy after all that.", func(t *testing.T) {
		resp, err := http.Get(r.ProbeURL + "/readyz")
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode)
	})
}
