package main

import (
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
)

// memoryLimitEnv carries the container's memory limit in bytes, as the chart sets
// it from the pod's resources.
const memoryLimitEnv = "SECRET_RELAY_MEMORY_LIMIT"

// memoryLimitShare is the part of the container's limit the Go runtime may use
// before it collects harder. The runtime counts all the memory it manages, but not
// the binary's own pages, nor anything the kernel charges the container for beside
// them; and the limit is soft, so a burst overshoots it rather than stalls. Giving
// the runtime the whole limit, as GOMEMLIMIT from the pod's limits.memory did, leaves
// no room for either: the container is killed before the runtime collects.
const memoryLimitShare = 0.85

// softMemoryLimit returns the runtime's soft memory limit for a container limit
// (the value of memoryLimitEnv), or 0 when none should be set: GOMEMLIMIT, when
// given, is the runtime's own and wins.
func softMemoryLimit(goMemLimit, containerLimit string) (int64, error) {
	if goMemLimit != "" || containerLimit == "" {
		return 0, nil
	}
	limit, err := strconv.ParseInt(containerLimit, 10, 64)
	if err != nil || limit <= 0 {
		return 0, fmt.Errorf("%s must be a number of bytes, got %q", memoryLimitEnv, containerLimit)
	}
	return int64(float64(limit) * memoryLimitShare), nil
}

// gcPercent is the collector's target when GOGC is not set: a collection starts
// once the heap has grown by half of what the last one left live, rather than by
// all of it (Go's default, 100). Nearly all of secret-relay's live heap is its
// caches, long-lived and growing with the copies, while admissions and syncs
// allocate little. At 100 the runtime holds as much again in garbage, so each
// cached copy costs twice its size in resident memory; at 50, one and a half. The
// collector runs twice as often for it, on a small allocation rate. Prometheus, also
// a cache-bound Go server, lowered its default the same way (to 75).
const gcPercent = 50

// setRuntimeLimits applies softMemoryLimit and gcPercent to the runtime. GOGC and
// GOMEMLIMIT, when set, are the runtime's own and win.
func setRuntimeLimits() error {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	limit, err := softMemoryLimit(os.Getenv("GOMEMLIMIT"), os.Getenv(memoryLimitEnv))
	if err != nil || limit == 0 {
		return err
	}
	debug.SetMemoryLimit(limit)
	return nil
}
