package certs_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
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

func TestCABundleRequiresClientCertificates(t *testing.T) {
	serverCA, err := certstest.NewCA("server-ca")
	require.NoError(t, err)
	serving, err := serverCA.ServingCert("127.0.0.1")
	require.NoError(t, err)
	clientCA, err := certstest.NewCA("client-ca")
	require.NoError(t, err)
	nextCA, err := certstest.NewCA("next-client-ca")
	require.NoError(t, err)
	client, err := clientCA.ClientCert("kube-apiserver")
	require.NoError(t, err)
	nextClient, err := nextCA.ClientCert("kube-apiserver")
	require.NoError(t, err)

	dir := t.TempDir()
	certFile, keyFile, caFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "ca.crt")
	require.NoError(t, os.WriteFile(certFile, serving.CertPEM, 0o600))
	require.NoError(t, os.WriteFile(keyFile, serving.KeyPEM, 0o600))
	require.NoError(t, os.WriteFile(caFile, clientCA.CertPEM(), 0o600))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reloader := certs.NewReloader(certFile, keyFile, 20*time.Millisecond)
	bundle := certs.NewCABundle(caFile, 20*time.Millisecond)
	assert.False(t, bundle.Loaded())
	go func() { _ = reloader.Start(ctx, logr.Discard()) }()
	go func() { _ = bundle.Start(ctx, logr.Discard()) }()
	require.Eventually(t, func() bool { return reloader.Loaded() && bundle.Loaded() }, 5*time.Second, 10*time.Millisecond)

	ln, err := tls.Listen("tcp", "127.0.0.1:0", reloader.ServerTLSConfig(bundle))
	require.NoError(t, err)
	srv := &http.Server{Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), ReadHeaderTimeout: time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM(serverCA.CertPEM()))
	get := func(cert *certstest.KeyPair) error {
		cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
		if cert != nil {
			pair, err := tls.X509KeyPair(cert.CertPEM, cert.KeyPEM)
			require.NoError(t, err)
			cfg.Certificates = []tls.Certificate{pair}
		}
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
		resp, err := c.Get("https://" + ln.Addr().(*net.TCPAddr).String())
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	assert.NoError(t, get(&client), "a certificate the bundle verifies is served")
	assert.Error(t, get(nil), "no certificate: refused at the handshake")
	assert.Error(t, get(&nextClient), "another CA: refused")

	require.NoError(t, os.WriteFile(caFile, []byte("not a certificate"), 0o600))
	time.Sleep(100 * time.Millisecond)
	assert.NoError(t, get(&client), "an unusable bundle is ignored; the last good one stays")

	require.NoError(t, os.WriteFile(caFile, nextCA.CertPEM(), 0o600))
	assert.Eventually(t, func() bool { return get(&nextClient) == nil }, 5*time.Second, 20*time.Millisecond, "a new bundle without a restart")
	assert.Error(t, get(&client), "the old CA no longer")
}
