package certs

import (
	"context"
	"crypto/tls"
	"time"

	cmtls "github.com/cert-manager/cert-manager/pkg/server/tls"
	"github.com/go-logr/logr"
)

// DefaultReloadInterval is how often the serving certificate files are re-read.
// cert-manager rotates certificates well before they expire, so seconds are plenty.
const DefaultReloadInterval = 10 * time.Second

// Reloader serves a certificate from files and re-reads them when they change, with
// no restart: cert-manager rewrites the mounted Secret on rotation. It is
// cert-manager's own FileCertificateSource.
type Reloader struct {
	src *cmtls.FileCertificateSource
}

// NewReloader watches certFile and keyFile, re-reading them every interval (zero
// means DefaultReloadInterval).
func NewReloader(certFile, keyFile string, interval time.Duration) *Reloader {
	if interval <= 0 {
		interval = DefaultReloadInterval
	}
	return &Reloader{src: &cmtls.FileCertificateSource{CertPath: certFile, KeyPath: keyFile, UpdateInterval: interval}}
}

// Start loads the certificate and keeps reloading it until ctx ends. It returns an
// error when the files stay unreadable for many intervals in a row.
func (r *Reloader) Start(ctx context.Context, log logr.Logger) error {
	return r.src.Start(logr.NewContext(ctx, log))
}

// GetCertificate is a tls.Config.GetCertificate.
func (r *Reloader) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.src.GetCertificate(hello)
}

// Loaded reports whether a certificate is ready to serve.
func (r *Reloader) Loaded() bool {
	_, err := r.src.GetCertificate(nil)
	return err == nil
}

// ServerTLSConfig is the webhook listener's TLS: 1.2 or later, HTTP/1.1 only (no
// HTTP/2, because of the Rapid Reset CVEs), certificate from the reloader. With
// clientCAs, every client must present a certificate that bundle verifies, as the
// API server does with its AdmissionConfiguration's kubeConfigFile; the bundle in
// use is read at each handshake, so that a new one applies without a restart.
func (r *Reloader) ServerTLSConfig(clientCAs *CABundle) *tls.Config {
	cfg := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"http/1.1"},
		GetCertificate: r.GetCertificate,
	}
	if clientCAs != nil {
		base := cfg.Clone()
		base.ClientAuth = tls.RequireAndVerifyClientCert
		cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
			c := base.Clone()
			c.ClientCAs = clientCAs.Pool()
			return c, nil
		}
	}
	return cfg
}
