package cluster

import (
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Proxy is a TCP proxy on 127.0.0.1 in front of an API server, to put a slow or
// flaky network between secret-relay and its upstream. TLS passes through it
// untouched: the API server's certificate is valid for 127.0.0.1 on any port.
type Proxy struct {
	ln     net.Listener
	target string

	latency atomic.Int64 // added to every chunk the server sends back, in ns
	flaky   atomic.Bool

	accepted, dropped, cut atomic.Int64

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// StartProxy forwards a new loopback port to target (host:port) until the test ends.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &Proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		p.closed = true
		p.mu.Unlock()
		p.CutAll()
	})
	return p
}

// URL is the proxy's https URL, to put in a store's server.url.
func (p *Proxy) URL() string { return "https://" + p.ln.Addr().String() }

// SetLatency delays every chunk from the server by d, so that each round trip takes d
// longer. Connections already open keep their pace until they are cut.
func (p *Proxy) SetLatency(d time.Duration) { p.latency.Store(int64(d)) }

// SetFlaky makes the proxy drop half the connections: every other one is reset as
// soon as it is accepted, and the others are reset at a random moment within their
// first two seconds, whatever is in flight on them.
func (p *Proxy) SetFlaky(on bool) { p.flaky.Store(on) }

// CutAll resets every open connection.
func (p *Proxy) CutAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		reset(c)
	}
}

// ProxyStats counts connections: accepted in all, reset on accept, and reset while
// in use.
type ProxyStats struct{ Accepted, Dropped, Cut int64 }

// Stats are the counts so far.
func (p *Proxy) Stats() ProxyStats {
	return ProxyStats{Accepted: p.accepted.Load(), Dropped: p.dropped.Load(), Cut: p.cut.Load()}
}

func (p *Proxy) accept() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		n := p.accepted.Add(1)
		if p.flaky.Load() && n%2 == 0 {
			p.dropped.Add(1)
			reset(client)
			continue
		}
		go p.serve(client)
	}
}

func (p *Proxy) serve(client net.Conn) {
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		reset(client)
		return
	}
	if !p.track(client, server) {
		return
	}
	defer p.untrack(client, server)
	if p.flaky.Load() {
		timer := time.AfterFunc(rand.N(2*time.Second), func() {
			p.cut.Add(1)
			reset(client, server)
		})
		defer timer.Stop()
	}
	splice(client, server, time.Duration(p.latency.Load()))
}

// splice copies between client and server until both sides are done, passing a
// half-close on, and delays what the server sends by latency.
func splice(client, server net.Conn, latency time.Duration) {
	done := make(chan struct{}, 2)
	go func() { pipe(server, client, 0); done <- struct{}{} }()
	go func() { pipe(client, server, latency); done <- struct{}{} }()
	<-done
	<-done
	client.Close()
	server.Close()
}

func (p *Proxy) track(conns ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		reset(conns...)
		return false
	}
	for _, c := range conns {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *Proxy) untrack(conns ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range conns {
		delete(p.conns, c)
	}
}

// pipe copies src to dst, holding each chunk back until latency after it was read,
// and then closes dst for writing.
func pipe(dst, src net.Conn, latency time.Duration) {
	defer func() {
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}()
	if latency == 0 {
		_, _ = io.Copy(dst, src)
		return
	}
	type chunk struct {
		data []byte
		due  time.Time
	}
	chunks := make(chan chunk, 1024)
	go func() {
		defer close(chunks)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				chunks <- chunk{buf[:n], time.Now().Add(latency)}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range chunks {
		time.Sleep(time.Until(c.due))
		if _, err := dst.Write(c.data); err != nil {
			src.Close()
			for range chunks {
			}
			return
		}
	}
}

// reset closes connections with an RST rather than a FIN, as a dropped connection
// looks.
func reset(conns ...net.Conn) {
	for _, c := range conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		_ = c.Close()
	}
}

// SeedSilentStore makes namespace ns with a SecretStore named silent whose upstream
// accepts connections and never answers, so that every review using it takes the
// whole upstream timeout.
func (w *World) SeedSilentStore(t testing.TB, ns string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		reset(conns...)
	})
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	w.SeedTokenStore(t, ns, "silent", "https://"+l.Addr().String(), "default", w.Reader.Token)
}
