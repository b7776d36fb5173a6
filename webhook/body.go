package webhook

import (
	"bytes"
	"fmt"
	"io"
	"net/http"

	"golang.org/x/sync/semaphore"
)

// Request bodies. The API server caps a request at 3 MiB and a review carries at most
// the object and the old object, so every review it sends is under MaxReviewBytes;
// a pod is a few KiB. Each body is read whole before kubewebhook sees it: its first
// freeReviewBytes freely, the rest out of a budget all requests share, so that no
// number of clients sending large or endless bodies at once can make the relay hold
// more than the budget.
const (
	MaxReviewBytes    = 6 << 20
	freeReviewBytes   = 64 << 10
	reviewBudgetBytes = 32 << 20
)

// bodyLimit reads request bodies within a size limit and a shared memory budget, and
// answers 413 to a body over the limit, unread when its Content-Length says so, and
// 429 when the budget is spent.
type bodyLimit struct {
	next      http.Handler
	max, free int64
	budget    *semaphore.Weighted
}

func limitBodies(next http.Handler, limit, free, budget int64) http.Handler {
	return &bodyLimit{next: next, max: limit, free: free, budget: semaphore.NewWeighted(budget)}
}

func (l *bodyLimit) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength > l.max {
		l.refuseTooLarge(w)
		return
	}
	b := body{limit: l}
	defer b.release()
	switch err := b.read(r.Body, r.ContentLength); err {
	case nil:
	case errTooLarge:
		l.refuseTooLarge(w)
		return
	case errBudgetSpent:
		w.Header().Set("Retry-After", "1")
		http.Error(w, "secret-relay: too many large reviews at once", http.StatusTooManyRequests)
		return
	default:
		http.Error(w, "secret-relay: could not read the request body", http.StatusBadRequest)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(b.data))
	l.next.ServeHTTP(w, r)
}

func (l *bodyLimit) refuseTooLarge(w http.ResponseWriter) {
	// The rest of the body stays unread: the server closes the connection.
	w.Header().Set("Connection", "close")
	http.Error(w, fmt.Sprintf("secret-relay: request body over %d bytes", l.max), http.StatusRequestEntityTooLarge)
}

type bodyError string

func (e bodyError) Error() string { return string(e) }

const (
	errTooLarge    = bodyError("too large")
	errBudgetSpent = bodyError("budget spent")
)

// body is one request's body as it is read, and the budget it holds.
type body struct {
	limit *bodyLimit
	data  []byte
	// ceiling is one byte past the Content-Length or the limit: reading into it
	// shows that the body goes on, or ends.
	ceiling int64
	held    int64
}

// read reads r whole, doubling the buffer in steps it pays for first, so that a
// client holds budget only for bytes it has sent. size is the Content-Length, or -1.
func (b *body) read(r io.Reader, size int64) error {
	if r == nil {
		return nil
	}
	first := int64(4 << 10)
	b.ceiling = b.limit.max + 1
	if size >= 0 {
		// A review the API server sends has its length: one buffer of that size.
		b.ceiling = min(b.ceiling, size+1)
		first = min(b.ceiling, max(first, b.limit.free))
	}
	if err := b.grow(first); err != nil {
		return err
	}
	for {
		if len(b.data) == cap(b.data) {
			if err := b.grow(2 * int64(cap(b.data))); err != nil {
				return err
			}
		}
		n, err := r.Read(b.data[len(b.data):cap(b.data)])
		b.data = b.data[:len(b.data)+n]
		switch {
		case int64(len(b.data)) > b.limit.max:
			return errTooLarge
		case err == io.EOF:
			return nil
		case err != nil:
			return err
		}
	}
}

func (b *body) grow(to int64) error {
	to = min(to, b.ceiling)
	if to <= int64(cap(b.data)) {
		return errTooLarge // full at the ceiling: cannot happen below the limit
	}
	if extra := to - b.limit.free - b.held; extra > 0 {
		if !b.limit.budget.TryAcquire(extra) {
			return errBudgetSpent
		}
		b.held += extra
	}
	data := make([]byte, len(b.data), to)
	copy(data, b.data)
	b.data = data
	return nil
}

func (b *body) release() {
	if b.held > 0 {
		b.limit.budget.Release(b.held)
	}
}
