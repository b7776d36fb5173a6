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
	t.Run("A body over the limit should get 413 and hold nothing after.", func(t *testing.T) {
		rec := post(bytes.NewReader(make([]byte, limit+1)), -1)
		assert.Equal(t, http.StatusRequestEntityTooLarge, rec.Code)
		assert.True(t, h.(*bodyLimit).budget.TryAcquire(budget), "every byte of budget was given back")
	})
}
