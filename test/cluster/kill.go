package cluster

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Kill sends SIGKILL and waits for the process to exit. Unlike Stop, nothing runs on
// the way out: a lease the process holds is not released, and expires on its own.
func (r *Relay) Kill(t testing.TB) {
	t.Helper()
	select {
	case <-r.exited:
		return
	default:
	}
	require.NoError(t, r.cmd.Process.Kill())
	select {
	case <-r.exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("secret-relay did not exit within 10s of SIGKILL")
	}
}
