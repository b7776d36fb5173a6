package certs

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"os"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
)

// CABundle serves the certificate pool of a PEM CA bundle file and re-reads the file
// when it changes, with no restart: the webhook listener verifies client
// certificates with it (--client-ca-file).
type CABundle struct {
	path     string
	interval time.Duration
	pool     atomic.Pointer[x509.CertPool]
	last     []byte
}

// NewCABundle watches path, re-reading it every interval (zero means
// DefaultReloadInterval).
func NewCABundle(path string, interval time.Duration) *CABundle {
	if interval <= 0 {
		interval = DefaultReloadInterval
	}
	return &CABundle{path: path, interval: interval}
}

// Start loads the bundle and keeps re-reading it until ctx ends. A bundle that
// cannot be read or holds no certificate is logged and ignored: the last good pool
// stays in use, and until there is one, no client is trusted.
func (b *CABundle) Start(ctx context.Context, log logr.Logger) error {
	tick := time.NewTicker(b.interval)
	defer tick.Stop()
	for {
		if err := b.reload(); err != nil {
			log.Error(err, "could not load the client CA bundle; keeping the one in use", "path", b.path)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

func (b *CABundle) reload() error {
	data, err := os.ReadFile(b.path)
	if err != nil {
		return err
	}
	if b.pool.Load() != nil && bytes.Equal(data, b.last) {
		return nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return errors.New("the file holds no PEM certificate")
	}
	b.last = data
	b.pool.Store(pool)
	return nil
}

// Loaded reports whether a pool is in use.
func (b *CABundle) Loaded() bool { return b.pool.Load() != nil }

// Pool is the pool in use, or an empty pool before the first load, which trusts no
// client.
func (b *CABundle) Pool() *x509.CertPool {
	if p := b.pool.Load(); p != nil {
		return p
	}
	return x509.NewCertPool()
}
