package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// netns is a network namespace the node made, named under /run/netns as `ip netns`
// names it. The test process itself stays in the host's namespace: it reaches into
// this one by creating sockets on a thread that has entered it, since a socket
// belongs to the namespace it was created in, whichever thread uses it later.
type netns struct {
	name string
	path string
}

// in runs fn on an OS thread that has entered the namespace, and brings the thread
// back to the host's namespace before handing it back to the Go scheduler. If it
// cannot come back, the thread stays locked and ends with the goroutine, so that no
// other goroutine ever runs in the wrong namespace. Threads must not end otherwise:
// a process started with Pdeathsig from a thread that ends is killed with it.
func (ns netns) in(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		host, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer host.Close()
		target, err := os.Open(ns.path)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("could not enter network namespace %s: %w", ns.name, err)
			return
		}
		err = fn()
		if back := unix.Setns(int(host.Fd()), unix.CLONE_NEWNET); back != nil {
			errc <- errors.Join(err, fmt.Errorf("could not leave network namespace %s: %w", ns.name, back))
			return
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	return <-errc
}

// dial opens a TCP connection from inside the namespace.
func (ns netns) dial(ctx context.Context, addr string) (net.Conn, error) {
	var conn net.Conn
	err := ns.in(func() error {
		var err error
		conn, err = (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		return err
	})
	return conn, err
}

// listen opens a TCP listener inside the namespace.
func (ns netns) listen(addr string) (net.Listener, error) {
	var ln net.Listener
	err := ns.in(func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	})
	return ln, err
}

// forward accepts connections on ln until it is closed and joins each to a new
// connection from dial: a byte pipe, TLS passes through untouched.
func forward(t testing.TB, ln net.Listener, dial func(context.Context) (net.Conn, error)) {
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() {
		cancel()
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer in.Close()
				out, err := dial(ctx)
				if err != nil {
					return
				}
				defer out.Close()
				pipe(ctx, in, out)
			}()
		}
	}()
}

// pipe copies both ways until either side ends or ctx does.
func pipe(ctx context.Context, a, b net.Conn) {
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go cp(a, b)
	go cp(b, a)
	select {
	case <-done:
	case <-ctx.Done():
	}
	// Closing both ends the copier still reading.
	a.Close()
	b.Close()
	<-done
}

// errNotRoot explains why the node cannot start: it makes namespaces, cgroups and
// mounts.
var errNotRoot = errors.New("the real node makes network namespaces, mounts and cgroups: run as root")
