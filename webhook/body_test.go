package webhook

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestBodyBudget holds one large body half-read while others arrive: small bodies
// pass on their free allowance, large ones get 429 until the budget is given back.
func TestBodyBudget(t *testing.T) {
	const (
		limit  = 1 << 20
		free   = 4 << 10
		budget = 1 << 20
	)
	h := limitBodies(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, err := io.ReadAll(r.Body)
		require.NoError(t, err)
		_, _ = w.Write([]byte(strconv.Itoa(len(data))))
	}), limit, free, budget)
	post := func(body io.Reader, size int64) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, "/mutate-pods", body)
		req.ContentLength = size
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}

	// A chunked body 600 KiB in holds a buffer of about 1 MiB: all the budget.
	pr, pw := io.Pipe()
	held := make(chan *httptest.ResponseRecorder)
	go func() { held <- post(pr, -1) }()
	_, err := pw.Write(bytes.Repeat([]byte("x"), 600<<10))
	require.NoError(t, err)

	t.Run("A body within the free allowance should pass while the budget is spent.", func(t *testing.T) {
		rec := post(bytes.NewReader(make([]byte, 2<<10)), 2<<10)
		assert.Equal(t, http.StatusOK, rec.Code)
		assert.Equal(t, "2048", rec.Body.String())
	})
	t.Run("A larger body should get 429 while the budget is spent.", func(t *testing.T) {
		rec := post(bytes.NewReader(make([]byte, 100<<10)), -1)
		assert.Equal(t, http.StatusTooManyRequests, rec.Code)
		assert.Equal(t, "1", rec.Header().Get("Retry-After"))
	})
	require.NoError(t, pw.Close())
	assert.Equal(t, strconv.Itoa(600<<10), (<-held).Body.String(), "the held body was read whole")
	t.Run("Once the held body is done, a larger body should pass.", func(t *testing.T) {
		rec := post(bytes.NewReader(make([]byte, 100<<10)), 100<<10)
		assert.Equal(t, http.StatusOK, rec.Code)
		assert.Equal(t, strconv.Itoa(100<<10), rec.Body.String())
	})
	t.Run("A chunked body of exactly the limit should pass whole.", func(t *testing.T) {
		rec := post(bytes.NewReader(make([]byte, limit)), -1)
		assert.Equal(t, http.StatusOK, rec.Code)
		assert.Equal(t, strconv.Itoa(limit), rec.Body.String())
	})
	t.Run("A body longer than its Content-Length says should not be read past the limit.", func(t *testing.T) {
		rec := post(bytes.NewReader(make([]byte, 2*limit)), 100)
		assert.Equal(t, http.StatusRequestEntityTooLarge, rec.Code)
	})
	t.Run("A body over the limit should get 413 and hold nothing after.", func(t *testing.T) {
		rec := post(bytes.NewReader(make([]byte, limit+1)), -1)
		assert.Equal(t, http.StatusRequestEntityTooLarge, rec.Code)
		assert.True(t, h.(*bodyLimit).budget.TryAcquire(budget), "every byte of budget was given back")
	})
}

// TestBodyReadAllocations reads a review-sized body and counts the bytes allocated:
// the body's own buffer, and no copy buffer besides it.
func TestBodyReadAllocations(t *testing.T) {
	body := make([]byte, 4<<10)
	h := limitBodies(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), MaxReviewBytes, freeReviewBytes, reviewBudgetBytes)
	res := testing.Benchmark(func(b *testing.B) {
		req := httptest.NewRequest(http.MethodPost, "/mutate-pods", nil)
		req.ContentLength = int64(len(body))
		rec := httptest.NewRecorder()
		b.ReportAllocs()
		for b.Loop() {
			req.Body = io.NopCloser(bytes.NewReader(body))
			h.ServeHTTP(rec, req)
		}
	})
	// One buffer of the body's size, about 4.3 KiB; twice that under -race, whose
	// builds allocate a buffer's growth twice. A second growth to learn where the
	// body ends (12.5 KiB) or io.Copy's own 32 KiB buffer (37 KiB) fail.
	assert.Less(t, res.AllocedBytesPerOp(), int64(2*len(body)+2<<10), "bytes allocated per body of %d bytes", len(body))
}
