package cluster

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// ProcessMemory is a process's resident set size now and at its peak, in bytes.
type ProcessMemory struct {
	RSS  int64
	Peak int64
}

// ReadProcessMemory reads VmRSS and VmHWM from /proc/<pid>/status.
func ReadProcessMemory(pid int) (ProcessMemory, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ProcessMemory{}, fmt.Errorf("could not read the memory of process %d: %w", pid, err)
	}
	var m ProcessMemory
	for _, line := range strings.Split(string(data), "\n") {
		key, value, ok := strings.Cut(line, ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		kib, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		if err != nil {
			return ProcessMemory{}, fmt.Errorf("could not parse %s of process %d: %w", key, pid, err)
		}
		if key == "VmRSS" {
			m.RSS = kib << 10
		} else {
			m.Peak = kib << 10
		}
	}
	if m.RSS == 0 || m.Peak == 0 {
		return ProcessMemory{}, fmt.Errorf("no VmRSS or VmHWM for process %d", pid)
	}
	return m, nil
}

// ResetPeakMemory sets a process's VmHWM back to its current RSS, so that the next
// ReadProcessMemory reports the peak since now.
func ResetPeakMemory(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0o200)
}

// SlowHeader opens a TLS connection to the webhook and sends a request header that
// never ends, a few bytes every interval, until the relay closes the connection. It
// returns how long the connection lived after the TLS handshake; it gives up with
// an error after giveUp.
func (r *Relay) SlowHeader(t testing.TB, interval, giveUp time.Duration) (time.Duration, error) {
	conn, err := r.DialWebhook(t, &tls.Config{MinVersion: tls.VersionTLS12})
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	start := time.Now()
	if err := conn.SetReadDeadline(start.Add(giveUp)); err != nil {
		return 0, err
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		header := []byte("POST /mutate-pods HTTP/1.1\r\nHost: secret-relay\r\nContent-Type: application/json\r\n")
		for i := 0; ; i++ {
			var part []byte
			if len(header) > 0 {
				part, header = header[:min(3, len(header))], header[min(3, len(header)):]
			} else {
				part = []byte(fmt.Sprintf("X-%d: y\r\n", i))
			}
			if _, err := conn.Write(part); err != nil {
				return
			}
			select {
			case <-stop:
				return
			case <-time.After(interval):
			}
		}
	}()
	// Most often the relay hangs up without a word; now and then, when the deadline
	// falls inside a TLS record, it answers 400 first. Both end the connection.
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	lived := time.Since(start)
	if isTimeout(err) {
		return lived, fmt.Errorf("the relay kept a slow header open for %s", lived)
	}
	if err != nil {
		return lived, nil
	}
	resp.Body.Close()
	if resp.StatusCode < 400 || resp.StatusCode >= 500 {
		return lived, fmt.Errorf("the relay answered an unfinished header with %s after %s", resp.Status, lived)
	}
	if _, err := io.Copy(io.Discard, br); isTimeout(err) {
		return lived, fmt.Errorf("the relay answered %s to a slow header but kept the connection open", resp.Status)
	}
	return lived, nil
}

func isTimeout(err error) bool {
	var netErr interface{ Timeout() bool }
	return errors.As(err, &netErr) && netErr.Timeout()
}

// PostStream sends size bytes of junk as a request body to the webhook over a new
// TLS connection, chunked or with its Content-Length, and reads the answer while it
// writes, as a client must when the server may refuse a body before reading it. It
// returns the status and how many body bytes the connection took before the answer.
func (r *Relay) PostStream(t testing.TB, size int64, chunked bool) (status int, sent int64, err error) {
	conn, err := r.DialWebhook(t, &tls.Config{MinVersion: tls.VersionTLS12})
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(60 * time.Second)); err != nil {
		return 0, 0, err
	}
	framing := fmt.Sprintf("Content-Length: %d", size)
	if chunked {
		framing = "Transfer-Encoding: chunked"
	}
	var written atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := fmt.Fprintf(conn, "POST /mutate-pods HTTP/1.1\r\nHost: secret-relay\r\nContent-Type: application/json\r\n%s\r\n\r\n", framing); err != nil {
			return
		}
		chunk := bytes.Repeat([]byte("x"), 64<<10)
		for left := size; left > 0; {
			part := chunk[:min(int64(len(chunk)), left)]
			frame := part
			if chunked {
				frame = append([]byte(strconv.FormatInt(int64(len(part)), 16)+"\r\n"), append(part, "\r\n"...)...)
			}
			if _, err := conn.Write(frame); err != nil {
				return
			}
			written.Add(int64(len(part)))
			left -= int64(len(part))
		}
		if chunked {
			_, _ = io.WriteString(conn, "0\r\n\r\n")
		}
	}()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	sent = written.Load()
	if err != nil {
		return 0, sent, fmt.Errorf("no answer after %d body bytes: %w", sent, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	conn.Close()
	<-done
	return resp.StatusCode, sent, nil
}
