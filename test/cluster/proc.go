package cluster

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// clockTicks is the kernel's USER_HZ, the unit of the CPU times in /proc/<pid>/stat:
// 100 on every Linux this runs on.
const clockTicks = 100

// ReadProcessCPU is the CPU time, user and system, that process pid has used so far.
func ReadProcessCPU(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("could not read the CPU time of process %d: %w", pid, err)
	}
	// The command name, field 2, is in parentheses and may hold spaces; utime and
	// stime are fields 14 and 15, the 12th and 13th after it.
	rest := string(data)
	if i := strings.LastIndexByte(rest, ')'); i >= 0 {
		rest = rest[i+1:]
	}
	fields := strings.Fields(rest)
	if len(fields) < 13 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat: %q", pid, data)
	}
	var ticks int64
	for _, f := range fields[11:13] {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("unexpected /proc/%d/stat: %w", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// APIServerPID is the process ID of the control plane's kube-apiserver.
func (cp *ControlPlane) APIServerPID(t testing.TB) int {
	t.Helper()
	pid := findProcess("--cert-dir=" + cp.env.ControlPlane.APIServer.CertDir)
	if pid == 0 {
		t.Fatalf("no kube-apiserver process of the %s control plane", cp.Name)
	}
	return pid
}
