package webhook_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/secret-relay/secret-relay/relay"
	"github.com/secret-relay/secret-relay/webhook"
)

// paddedReview is an admission/v1 review of the seed pod, padded with an extra
// annotation to exactly size bytes.
func paddedReview(t *testing.T, size int) []byte {
	t.Helper()
	build := func(pad int) []byte {
		return reviewJSON(t, seedPod(map[string]string{
			relay.AnnotationStore:   "remote-k8s-store",
			relay.AnnotationSecrets: seedSecrets,
			"example.com/padding":   strings.Repeat("x", pad),
		}), false)
	}
	body := build(size - len(build(0)))
	require.Len(t, body, size)
	return body
}

// countingReader serves size bytes of body (repeated) and counts what was read.
type countingReader struct {
	body []byte
	size int64
	read int64
}

func (r *countingReader) Read(p []byte) (int, error) {
	if r.read >= r.size {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), r.size-r.read)]
	for i := range p {
		p[i] = r.body[(r.read+int64(i))%int64(len(r.body))]
	}
	r.read += int64(len(p))
	return len(p), nil
}

func newLimitHandler(t *testing.T) http.Handler {
	t.Helper()
	m, err := webhook.NewMutator(webhook.MutatorConfig{
		Stores: upstream, Tokens: testTokens, Local: relay.ClientsetLocalSecrets{Client: fake.NewClientset()}, UpstreamTimeout: time.Second,
	})
	require.NoError(t, err)
	h, err := webhook.NewHandler(webhook.HandlerConfig{Mutator: m, Logger: zap.NewNop()})
	require.NoError(t, err)
	return h
}

func TestHandlerBodyLimit(t *testing.T) {
	const limit = webhook.MaxReviewBytes
	atLimit := paddedReview(t, limit)
	overLimit := paddedReview(t, limit+1)
	junk := []byte("not json ")

	tests := map[string]struct {
		body    []byte
		size    int64
		chunked bool
		// expStatus is the answer; expMaxRead bounds the bytes the handler read.
		expStatus  int
		expMaxRead int64
	}{
		"A review of exactly MaxReviewBytes should be admitted.": {
			body: atLimit, size: limit, expStatus: http.StatusOK, expMaxRead: limit,
		},
		"A chunked review of exactly MaxReviewBytes should be admitted.": {
			body: atLimit, size: limit, chunked: true, expStatus: http.StatusOK, expMaxRead: limit,
		},
		"A review one byte over MaxReviewBytes should get 413 without a byte read.": {
			body: overLimit, size: limit + 1, expStatus: http.StatusRequestEntityTooLarge, expMaxRead: 0,
		},
		"A chunked review one byte over MaxReviewBytes should get 413.": {
			body: overLimit, size: limit + 1, chunked: true, expStatus: http.StatusRequestEntityTooLarge, expMaxRead: limit + 1,
		},
		"A 64 MiB body with its Content-Length should get 413 without a byte read.": {
			body: junk, size: 64 << 20, expStatus: http.StatusRequestEntityTooLarge, expMaxRead: 0,
		},
		"A 64 MiB chunked body should get 413 once MaxReviewBytes have been read.": {
			body: junk, size: 64 << 20, chunked: true, expStatus: http.StatusRequestEntityTooLarge, expMaxRead: limit + 1,
		},
		"Junk under the limit should still get 400.": {
			body: junk, size: 1 << 20, chunked: true, expStatus: http.StatusBadRequest, expMaxRead: 1 << 20,
		},
	}
	h := newLimitHandler(t)
	for name, test := range tests {
		t.Run(name, func(t *testing.T) {
			assert := assert.New(t)
			body := &countingReader{body: test.body, size: test.size}
			req := httptest.NewRequest(http.MethodPost, "/mutate-pods", body)
			req.ContentLength = test.size
			if test.chunked {
				req.ContentLength = -1
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)

			assert.Equal(test.expStatus, rec.Code, rec.Body.String())
			assert.LessOrEqual(body.read, test.expMaxRead)
			if test.expStatus == http.StatusOK {
				var out admissionv1.AdmissionReview
				require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &out))
				require.NotNil(t, out.Response)
				assert.True(out.Response.Allowed)
				assert.NotEmpty(out.Response.Patch, "the review went through the mutator")
			}
			if test.expStatus == http.StatusRequestEntityTooLarge {
				assert.Equal(fmt.Sprintf("secret-relay: request body over %d bytes\n", limit), rec.Body.String())
			}
		})
	}
}

// TestHandlerBodyLimitOverTheWire sends oversized bodies to a real server, from a
// client that reads the answer while it is still writing, as a client whose body the
// server refuses must.
func TestHandlerBodyLimitOverTheWire(t *testing.T) {
	srv := httptest.NewServer(newLimitHandler(t))
	t.Cleanup(srv.Close)

	tests := map[string]struct {
		header string
	}{
		"A 64 MiB body with its Content-Length should get 413 and a closed connection.": {
			header: fmt.Sprintf("Content-Length: %d", 64<<20),
		},
		"A 64 MiB chunked body should get 413 and a closed connection.": {
			header: "Transfer-Encoding: chunked",
		},
	}
	for name, test := range tests {
		t.Run(name, func(t *testing.T) {
			assert := assert.New(t)
			conn, err := net.Dial("tcp", srv.Listener.Addr().String())
			require.NoError(t, err)
			defer conn.Close()
			require.NoError(t, conn.SetDeadline(time.Now().Add(30*time.Second)))
			_, err = fmt.Fprintf(conn, "POST /mutate-pods HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n%s\r\n\r\n", test.header)
			require.NoError(t, err)
			go func() {
				chunk := []byte(strings.Repeat("x", 64<<10))
				for range 1024 {
					var err error
					if strings.HasPrefix(test.header, "Transfer-Encoding") {
						_, err = fmt.Fprintf(conn, "%x\r\n%s\r\n", len(chunk), chunk)
					} else {
						_, err = conn.Write(chunk)
					}
					if err != nil {
						return
					}
				}
			}()
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			require.NoError(t, err)
			defer resp.Body.Close()
			assert.Equal(http.StatusRequestEntityTooLarge, resp.StatusCode)
			assert.True(resp.Close, "the server closes the connection rather than read the rest")
		})
	}
}
