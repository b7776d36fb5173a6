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

// setMemoryLimit applies softMemoryLimit to the runtime.
func setMemoryLimit() error {
	limit, err := softMemoryLimit(os.Getenv("GOMEMLIMIT"), os.Getenv(memoryLimitEnv))
	if err != nil || limit == 0 {
		return err
	}
	debug.SetMemoryLimit(limit)
	return nil
}
