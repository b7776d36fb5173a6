package node

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cgroupMount is where the host mounts its cgroup v1 hierarchies, one directory each.
const cgroupMount = "/sys/fs/cgroup"

// cgroups is the node's parent cgroup, the same path in every v1 hierarchy: kubelet's
// cgroupRoot, holding every process the node starts, its pods among them, so that
// teardown can find each one by PID.
type cgroups struct {
	name  string   // e.g. "secret-relay-node", without the leading slash
	roots []string // one directory per hierarchy
}

// hierarchies lists the mounted v1 hierarchies, not the v2 one (systemd's
// "unified"), which kubelet leaves alone on a v1 host.
func hierarchies() ([]string, error) {
	entries, err := os.ReadDir(cgroupMount)
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, e := range entries {
		dir := filepath.Join(cgroupMount, e.Name())
		// Symlinks such as cpu,cpuacct point at a hierarchy already listed.
		if !e.IsDir() || e.Name() == "unified" {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, "cgroup.procs")); err == nil {
			dirs = append(dirs, dir)
		}
	}
	if len(dirs) == 0 {
		return nil, fmt.Errorf("no cgroup v1 hierarchy under %s: the node's settings are for a cgroup v1 host", cgroupMount)
	}
	return dirs, nil
}

func newCgroups(name string) (*cgroups, error) {
	roots, err := hierarchies()
	if err != nil {
		return nil, err
	}
	cg := &cgroups{name: name}
	for _, h := range roots {
		dir := filepath.Join(h, name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		cg.roots = append(cg.roots, dir)
		// A new cpuset cgroup has no CPUs and no memory nodes until it is given them.
		if filepath.Base(h) == "cpuset" {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				v, err := os.ReadFile(filepath.Join(h, f))
				if err != nil {
					return nil, err
				}
				if err := os.WriteFile(filepath.Join(dir, f), v, 0o644); err != nil {
					return nil, fmt.Errorf("could not set %s of %s: %w", f, dir, err)
				}
			}
		}
	}
	return cg, nil
}

// adopt moves process pid into the node's cgroup in every hierarchy; what it forks
// from then on is born there.
func (cg *cgroups) adopt(pid int) error {
	var errs []error
	for _, dir := range cg.roots {
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// all is the node's cgroup in every hierarchy, with the one that runc and kubelet
// also make in the v2 hierarchy beside the v1 ones.
func (cg *cgroups) all() []string {
	return append(slices.Clone(cg.roots), filepath.Join(cgroupMount, "unified", cg.name))
}

// pids lists every process in the node's cgroup and the cgroups below it.
func (cg *cgroups) pids() []int {
	seen := map[int]bool{}
	for _, root := range cg.all() {
		_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			data, err := os.ReadFile(filepath.Join(path, "cgroup.procs"))
			if err != nil {
				return nil
			}
			for _, f := range strings.Fields(string(data)) {
				if pid, err := strconv.Atoi(f); err == nil {
					seen[pid] = true
				}
			}
			return nil
		})
	}
	pids := make([]int, 0, len(seen))
	for pid := range seen {
		pids = append(pids, pid)
	}
	slices.Sort(pids)
	return pids
}

// destroy kills every process left in the cgroups, by PID, and removes them,
// deepest first. It returns what it could not remove.
func (cg *cgroups) destroy(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		pids := cg.pids()
		if len(pids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v are still in cgroup %s after SIGKILL", pids, cg.name)
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var errs []error
	for _, root := range cg.all() {
		var dirs []string
		_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		// WalkDir lists parents before children: remove in reverse.
		for _, dir := range slices.Backward(dirs) {
			if err := syscall.Rmdir(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("could not remove cgroup %s: %w", dir, err))
			}
		}
	}
	return errors.Join(errs...)
}
