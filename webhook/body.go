package webhook

import (
	"bytes"
	"errors"
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

// bodyLimit reads request bodies within a size limit (http.MaxBytesReader) and a
// memory budget shared by all requests: http.MaxBytesHandler bounds one request,
// not how many arrive at once. It answers 413 to a body over the limit, unread when
// its Content-Length says so, and 429 when the budget is spent.
type bodyLimit struct {
	next      http.Handler
	max, free int64
	budget    *semaphore.Weighted
}

func limitBodies(next http.Handler, limit, free, budget int64) http.Handler {
	return &bodyLimit{next: next, max: limit, free: free, budget: semaphore.NewWeighted(budget)}
}

var errBudgetSpent = errors.New("the shared body budget is spent")

func (l *bodyLimit) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength > l.max {
		l.refuseTooLarge(w)
		return
	}
	b := &budgetBuffer{limit: l}
	defer b.release()
	var err error
	if r.ContentLength > 0 {
		// A review the API server sends has its length: one buffer of that size.
		err = b.reserve(r.ContentLength)
	}
	if err == nil && r.Body != nil {
		_, err = b.ReadFrom(http.MaxBytesReader(w, r.Body, l.max))
	}
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		l.refuseTooLarge(w)
		return
	case errors.Is(err, errBudgetSpent):
		w.Header().Set("Retry-After", "1")
		http.Error(w, "secret-relay: too many large reviews at once", http.StatusTooManyRequests)
		return
	case err != nil:
		http.Error(w, "secret-relay: could not read the request body", http.StatusBadRequest)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(b.buf.Bytes()))
	l.next.ServeHTTP(w, r)
}

func (l *bodyLimit) refuseTooLarge(w http.ResponseWriter) {
	// The rest of the body stays unread: the server closes the connection.
	w.Header().Set("Connection", "close")
	http.Error(w, fmt.Sprintf("secret-relay: request body over %d bytes", l.max), http.StatusRequestEntityTooLarge)
}

// budgetBuffer is one request's body as it arrives. It pays for each growth of its
// buffer before making it, doubling, so that a client holds budget only for about
// what it has sent.
type budgetBuffer struct {
	limit *bodyLimit
	buf   bytes.Buffer
	held  int64
}

// ReadFrom reads r straight into the buffer's spare room, growing it only when the
// body goes on past it: io.Copy would put a 32 KiB copy buffer of its own in
// between, on every review.
func (b *budgetBuffer) ReadFrom(r io.Reader) (int64, error) {
	var n int64
	for {
		if b.buf.Available() == 0 {
			// Full: read one byte to learn whether the body goes on before paying
			// for more room. A body of its announced length ends here.
			var one [1]byte
			m, err := r.Read(one[:])
			if m == 0 {
				return n, ignoreEOF(err)
			}
			if err := b.reserve(max(2*int64(b.buf.Cap()), 512)); err != nil {
				return n, err
			}
			if b.buf.Available() == 0 {
				return n, &http.MaxBytesError{Limit: b.limit.max} // cannot happen: MaxBytesReader stops first
			}
			b.buf.WriteByte(one[0])
			n++
		}
		spare := b.buf.AvailableBuffer()[:b.buf.Available()]
		m, err := r.Read(spare)
		b.buf.Write(spare[:m]) // within capacity: no copy to a new array
		n += int64(m)
		if err != nil {
			return n, ignoreEOF(err)
		}
	}
}

func ignoreEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// reserve pays for a buffer of size bytes, past the free allowance, and grows to it.
func (b *budgetBuffer) reserve(size int64) error {
	size = min(size, b.limit.max+1) // one byte past the limit shows that the body goes on
	if extra := size - b.limit.free - b.held; extra > 0 {
		if !b.limit.budget.TryAcquire(extra) {
			return errBudgetSpent
		}
		b.held += extra
	}
	b.buf.Grow(int(size) - b.buf.Len())
	return nil
}

func (b *budgetBuffer) release() {
	if b.held > 0 {
		b.limit.budget.Release(b.held)
	}
}
