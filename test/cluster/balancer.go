package cluster

import (
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Balancer stands in front of relay replicas as a Service does: each new TCP
// connection goes to the next replica whose /readyz answered 200 at the last check,
// every 100 ms, as the endpoints controller and kube-proxy would with a fast
// readiness probe. Like kube-proxy in iptables mode it does not retry a connection
// that a replica refuses, and it leaves established connections alone.
type Balancer struct {
	ln       net.Listener
	backends []balancerBackend
	next     atomic.Uint64
	// Refused counts connections that found no ready replica or were refused by
	// the one picked.
	Refused atomic.Int64
}

type balancerBackend struct {
	addr, probe string
	ready       *atomic.Bool
	conns       *atomic.Int64
}

// StartBalancer balances a loopback port over the relays' webhook listeners until
// the test ends.
func StartBalancer(t testing.TB, relays ...*Relay) *Balancer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	b := &Balancer{ln: ln}
	for _, r := range relays {
		b.backends = append(b.backends, balancerBackend{addr: r.webhookAddr(), probe: r.ProbeURL + "/readyz", ready: &atomic.Bool{}, conns: &atomic.Int64{}})
	}
	stop := make(chan struct{})
	b.check()
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				b.check()
			}
		}
	}()
	go b.accept()
	t.Cleanup(func() {
		close(stop)
		ln.Close()
	})
	return b
}

// URL is the webhook URL through the balancer.
func (b *Balancer) URL() string { return "https://" + b.ln.Addr().String() + "/mutate-pods" }

// Connections is how many connections each replica was given, in StartBalancer's
// order.
func (b *Balancer) Connections() []int64 {
	var n []int64
	for _, be := range b.backends {
		n = append(n, be.conns.Load())
	}
	return n
}

func (b *Balancer) check() {
	client := &http.Client{Timeout: 90 * time.Millisecond}
	for _, be := range b.backends {
		resp, err := client.Get(be.probe)
		if err == nil {
			resp.Body.Close()
		}
		be.ready.Store(err == nil && resp.StatusCode == http.StatusOK)
	}
}

func (b *Balancer) pick() (balancerBackend, bool) {
	for range b.backends {
		be := b.backends[b.next.Add(1)%uint64(len(b.backends))]
		if be.ready.Load() {
			return be, true
		}
	}
	return balancerBackend{}, false
}

func (b *Balancer) accept() {
	for {
		client, err := b.ln.Accept()
		if err != nil {
			return
		}
		go func() {
			be, ok := b.pick()
			if !ok {
				b.Refused.Add(1)
				reset(client)
				return
			}
			server, err := net.Dial("tcp", be.addr)
			if err != nil {
				b.Refused.Add(1)
				reset(client)
				return
			}
			be.conns.Add(1)
			splice(client, server, 0)
		}()
	}
}
