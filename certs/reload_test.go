package certs_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/secret-relay/secret-relay/certs"
	"github.com/secret-relay/secret-relay/certs/certstest"
)

func TestReloaderPicksUpARotatedCertificate(t *testing.T) {
	ca, err := certstest.NewCA("test-ca")
	require.NoError(t, err)
	first, err := ca.ServingCert("127.0.0.1")
	require.NoError(t, err)
	second, err := ca.ServingCert("127.0.0.1")
	require.NoError(t, err)

	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	write := func(kp certstest.KeyPair) {
		require.NoError(t, os.WriteFile(keyFile, kp.KeyPEM, 0o600))
		require.NoError(t, os.WriteFile(certFile, kp.CertPEM, 0o600))
	}
	r := certs.NewReloader(certFile, keyFile, 50*time.Millisecond)
	assert.False(t, r.Loaded(), "nothing is loaded before Start")

	write(first)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Start(ctx, logr.Discard()) }()
	defer func() { cancel(); require.NoError(t, <-done) }()

	served := func() []byte {
		c, err := r.GetCertificate(nil)
		if err != nil {
			return nil
		}
		return c.Certificate[0]
	}
	require.Eventually(t, r.Loaded, 5*time.Second, 10*time.Millisecond)
	firstDER := served()

	write(second)
	require.Eventually(t, func() bool { s := served(); return s != nil && !bytes.Equal(s, firstDER) }, 5*time.Second, 10*time.Millisecond,
		"the reloader should serve the rotated certificate without a restart")

	cfg := r.ServerTLSConfig(nil)
	assert.Equal(t, []string{"http/1.1"}, cfg.NextProtos, "no HTTP/2 on the webhook port")
	assert.EqualValues(t, 0x0303, cfg.MinVersion, "TLS 1.2 or later")
}
