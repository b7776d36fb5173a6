package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
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

// While reviews come in fast, the collector's target is gcPercentBusy instead of
// gcPercent. A collection marks the whole live heap, nearly all caches, and one is
// due each time the heap has grown by gcPercent of it; so the collector's work per
// review is the review's allocations divided by gcPercent, whatever the caches
// hold. At 10,000 copies and 50, make bench found the collector's background
// marking at 18% of secret-relay's CPU during warm admissions, and their p99 at
// 1.26-1.44× a no-op webhook's; at 100, 9.5% and 1.19×, but 5.9 KiB of resident
// memory per copy at rest instead of 4.0 (docs/performance.md). So the target is
// 100 only while admission is busy, and 50 again, with a collection that gives the
// extra memory back, once it has been quiet for a few seconds. The soft memory
// limit still bounds the heap either way. GOGC, when set, is left alone.
const (
	gcPercentBusy = 100
	// busyReviewRate is the rate of reviews, per second, at which admission is busy:
	// far above pods created one by one, or a Deployment's rollout.
	busyReviewRate = 100
	// gcTuneInterval is how often the rate is read; quietTicks quiet ones in a row
	// end a busy spell.
	gcTuneInterval = time.Second
	quietTicks     = 3
)

// gcTuner raises the collector's target while admission is busy.
type gcTuner struct {
	reviews atomic.Int64
	busy    bool
	quiet   int
}

// newGCTuner returns a tuner, or nil when GOGC is set.
func newGCTuner() *gcTuner {
	if os.Getenv("GOGC") != "" {
		return nil
	}
	return &gcTuner{}
}

// observe counts one review.
func (g *gcTuner) observe() {
	if g != nil {
		g.reviews.Add(1)
	}
}

// step decides the target after an interval of d that saw n reviews: the new
// target, and whether it changed.
func (g *gcTuner) step(n int64, d time.Duration) (percent int, changed bool) {
	busy := float64(n) >= busyReviewRate*d.Seconds()
	switch {
	case busy:
		g.quiet = 0
		if !g.busy {
			g.busy = true
			return gcPercentBusy, true
		}
	case g.busy:
		if g.quiet++; g.quiet >= quietTicks {
			g.busy, g.quiet = false, 0
			return gcPercent, true
		}
	}
	if g.busy {
		return gcPercentBusy, false
	}
	return gcPercent, false
}

// run applies step every gcTuneInterval until ctx ends.
func (g *gcTuner) run(ctx context.Context, logger *zap.Logger) error {
	if g == nil {
		return nil
	}
	t := time.NewTicker(gcTuneInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		percent, changed := g.step(g.reviews.Swap(0), gcTuneInterval)
		if !changed {
			continue
		}
		debug.SetGCPercent(percent)
		logger.Debug("collector target changed", zap.Int("gcPercent", percent))
		if percent == gcPercent {
			runtime.GC() // give back what the busy spell's garbage took
		}
	}
}
