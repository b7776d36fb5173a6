package remote

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

func TestUnreachable(t *testing.T) {
	get := func(err error) error {
		return &url.Error{Op: "Get", URL: "https://upstream:6443/api/v1/namespaces/default/secrets/db", Err: err}
	}
	secrets := schema.GroupResource{Resource: "secrets"}
	tests := map[string]struct {
		err error
		exp bool
	}{
		"A deadline should be unreachable.":                            {err: fmt.Errorf("reading: %w", context.DeadlineExceeded), exp: true},
		"A refused connection should be unreachable.":                  {err: get(&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}), exp: true},
		"A reset connection should be unreachable.":                    {err: get(&net.OpError{Op: "read", Err: os.NewSyscallError("read", syscall.ECONNRESET)}), exp: true},
		"A connection closed before the answer should be unreachable.": {err: get(io.EOF), exp: true},
		"An answer cut short should be unreachable.":                   {err: get(io.ErrUnexpectedEOF), exp: true},
		"A lost HTTP/2 connection should be unreachable.":              {err: get(errors.New("http2: client connection lost")), exp: true},
		"A server timeout should be unreachable.":                      {err: apierrors.NewServerTimeout(secrets, "get", 1), exp: true},
		"503 should be unreachable.":                                   {err: apierrors.NewServiceUnavailable("shutting down"), exp: true},
		"429 should be unreachable.":                                   {err: apierrors.NewTooManyRequests("slow down", 1), exp: true},
		"NotFound should be an answer.":                                {err: apierrors.NewNotFound(secrets, "db"), exp: false},
		"Forbidden should be an answer.":                               {err: apierrors.NewForbidden(secrets, "db", errors.New("no")), exp: false},
		"An untrusted certificate should be a configuration error.":    {err: get(x509.UnknownAuthorityError{}), exp: false},
		"A connection closed by the transport should be unreachable.":  {err: get(errors.New("http2: client connection force closed via ClientConn.Close")), exp: true},
		"A connection closed while the body is read should be unreachable.": {
			err: errors.New("unexpected error when reading response body. Please retry. Original error: http2: client connection force closed via ClientConn.Close"), exp: true},
		"A certificate for another host should be a configuration error.":            {err: get(x509.HostnameError{Certificate: &x509.Certificate{}, Host: "upstream"}), exp: false},
		"A client certificate the upstream refused should be a configuration error.": {err: get(&net.OpError{Op: "remote error", Err: tls.AlertError(42)}), exp: false},
	}
	for name, test := range tests {
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, test.exp, Unreachable(test.err), "%v", test.err)
		})
	}
}

func TestDescribeUpstreamError(t *testing.T) {
	op := func(source int, err error) error {
		return &url.Error{Op: "Get", URL: "https://u:6443/api?x=1", Err: &net.OpError{Op: "read", Net: "tcp",
			Source: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: source}, Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 6443}, Err: err}}
	}
	reset := os.NewSyscallError("read", syscall.ECONNRESET)
	assert.Equal(t, DescribeUpstreamError(op(35992, reset)), DescribeUpstreamError(op(40001, reset)), "the client port is not in the message")
	assert.Equal(t, "read: connection reset by peer", DescribeUpstreamError(op(35992, reset)))
	assert.Equal(t, "timed out", DescribeUpstreamError(context.DeadlineExceeded))
	assert.Equal(t, "401 Unauthorized: Unauthorized", DescribeUpstreamError(apierrors.NewUnauthorized("Unauthorized")))
}
