// Package node starts a real single-node Kubernetes cluster for the suites that need
// pods to run: etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
// containerd, kubelet and kube-proxy, all v1.37.2 (containerd v2.4.2), built by
// `make tools-node`.
//
// The whole node lives in a network namespace of its own, with a private mount
// namespace inside it, so that nothing it does reaches the host's network, mounts or
// kernel settings (../shared/REAL-NODE.md has why each setting is what it is):
//   - a veth pair whose two ends both stay in the namespace: one carries the node's
//     IP, the other the address where pods reach services the test exposes from the
//     host, such as the upstream control plane (Expose);
//   - the test process stays on the host and reaches the API server through a
//     loopback port that it forwards into the namespace;
//   - every process, pods included, is in one parent cgroup, so that teardown kills
//     what is left by PID and removes it, with the namespace and the scratch
//     directory.
//
// One node runs at a time on a machine, whatever its name: Start takes a
// machine-wide lock, and waits for it.
package node

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/secret-relay/secret-relay/test/cluster"
)

// ContainerdVersion is the containerd that runs the node's containers.
const ContainerdVersion = "v2.4.2"

// scratchPrefix names the node's scratch directory under os.TempDir.
const scratchPrefix = "srnode-"

// Options name the node and its addresses. The zero value is the default node.
type Options struct {
	// Name names the node, its network namespace and its cgroup, so that they
	// clash with nothing else on the machine: SECRET_RELAY_NODE_NAME, or
	// "secret-relay-node".
	Name string
	// Subnet is the first three octets of the node's /24 inside its namespace:
	// SECRET_RELAY_NODE_SUBNET, or "10.99.0". The node's IP is .1, the address
	// Expose listens on is .2.
	Subnet string
	// ProxyMinSyncPeriod is the least time between two updates of kube-proxy's
	// rules (its iptables.minSyncPeriod; kube-proxy's default, 1s, when zero). A
	// longer one plays a large cluster, where a terminating pod stays in the rules
	// for seconds after its endpoint turned unready.
	ProxyMinSyncPeriod time.Duration
}

func (o Options) withDefaults() Options {
	if o.Name == "" {
		o.Name = os.Getenv("SECRET_RELAY_NODE_NAME")
	}
	if o.Name == "" {
		o.Name = "secret-relay-node"
	}
	if o.Subnet == "" {
		o.Subnet = os.Getenv("SECRET_RELAY_NODE_SUBNET")
	}
	if o.Subnet == "" {
		o.Subnet = "10.99.0"
	}
	return o
}

// The cluster's fixed ranges.
const (
	serviceCIDR = "10.96.0.0/16"
	// KubernetesServiceIP is the ClusterIP of the default/kubernetes Service.
	KubernetesServiceIP = "10.96.0.1"
	podCIDR             = "10.88.0.0/16"
	apiPort             = 6443
)

// Node is a running single-node cluster.
type Node struct {
	// Name is the node's name, as kubectl get nodes shows it.
	Name string
	// IP is the node's address inside its namespace, where its API server listens.
	IP string
	// Config is an admin (system:masters) client configuration, through the
	// loopback port forwarded into the namespace.
	Config *rest.Config
	// Client is a clientset on Config.
	Client kubernetes.Interface
	// Kubeconfig is a kubeconfig file for Config, for kubectl and helm.
	Kubeconfig string

	opts     Options
	dir      string
	ns       netns
	cg       *cgroups
	pki      *pki
	exposeIP string
	holder   *process

	mu    sync.Mutex
	procs []*process
}

// Start starts the node and registers its teardown with t.Cleanup. It fails the
// test when the node cannot start, with the log of whatever did not.
func Start(t testing.TB) *Node { return StartWith(t, Options{}) }

// StartWith starts a node with opts.
func StartWith(t testing.TB, opts Options) *Node {
	t.Helper()
	opts = opts.withDefaults()
	if os.Geteuid() != 0 {
		t.Fatal(errNotRoot)
	}
	if err := checkTools(); err != nil {
		t.Fatal(err)
	}
	unlock := lock(t)
	t.Cleanup(unlock)
	// A run that was killed leaves its namespace and cgroup behind: start clean.
	if err := removeLeftovers(opts.Name); err != nil {
		t.Fatalf("could not remove what an earlier node %s left behind: %v", opts.Name, err)
	}
	// Under the lock, no other node runs: every scratch directory is a leftover.
	stale, _ := filepath.Glob(filepath.Join(os.TempDir(), scratchPrefix+"*"))
	for _, d := range stale {
		t.Logf("removing %s, left by an earlier node", d)
		if err := os.RemoveAll(d); err != nil {
			t.Fatal(err)
		}
	}
	dir, err := os.MkdirTemp("", scratchPrefix)
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{
		Name:     opts.Name,
		IP:       opts.Subnet + ".1",
		opts:     opts,
		dir:      dir,
		ns:       netns{name: opts.Name, path: "/run/netns/" + opts.Name},
		exposeIP: opts.Subnet + ".2",
	}
	t.Cleanup(func() { n.teardown(t) })
	start := time.Now()
	if err := n.start(t); err != nil {
		n.dumpLogs(t)
		t.Fatalf("could not start the real node %s: %v", n.Name, err)
	}
	t.Logf("real node %s Ready in %s", n.Name, time.Since(start).Round(10*time.Millisecond))
	return n
}

func (n *Node) start(t testing.TB) error {
	if err := n.makeNetwork(); err != nil {
		return err
	}
	var err error
	if n.cg, err = newCgroups(n.Name); err != nil {
		return err
	}
	if err := n.startHolder(); err != nil {
		return err
	}
	if err := n.writePKI(); err != nil {
		return err
	}
	if err := n.writeConfigs(); err != nil {
		return err
	}
	if err := n.forwardAPI(t); err != nil {
		return err
	}
	bin := cluster.BinaryDir()
	if err := n.run("etcd", filepath.Join(bin, "etcd"),
		"--data-dir="+n.path("etcd"),
		"--listen-client-urls=http://127.0.0.1:2379", "--advertise-client-urls=http://127.0.0.1:2379",
		"--listen-peer-urls=http://127.0.0.1:2380", "--unsafe-no-fsync", "--log-level=warn",
	); err != nil {
		return err
	}
	if err := n.run("containerd", filepath.Join(containerdDir(), "containerd"), "--config", n.path("containerd.toml")); err != nil {
		return err
	}
	if err := n.run("kube-apiserver", filepath.Join(bin, "kube-apiserver"), n.apiServerArgs()...); err != nil {
		return err
	}
	if err := n.waitReady(); err != nil {
		return err
	}
	// kube-controller-manager exits if it starts before the RBAC bootstrap is done,
	// and nothing would restart it: it starts after /readyz.
	pki := n.pki.path
	for _, c := range []struct {
		name string
		args []string
	}{
		{"kube-controller-manager", []string{
			"--kubeconfig=" + pki(controllerManager.file),
			"--service-account-private-key-file=" + pki("sa.key"), "--root-ca-file=" + pki("ca.crt"),
			"--use-service-account-credentials", "--leader-elect=false", "--bind-address=127.0.0.1",
			"--controllers=*,-nodeipam",
		}},
		{"kube-scheduler", []string{"--kubeconfig=" + pki(scheduler.file), "--leader-elect=false", "--bind-address=127.0.0.1"}},
		{"kubelet", []string{
			"--config=" + n.path("kubelet.yaml"), "--kubeconfig=" + pki(kubeletIdentity(n.Name).file),
			"--root-dir=" + n.path("kubelet"), "--hostname-override=" + n.Name, "--node-ip=" + n.IP,
		}},
		{"kube-proxy", []string{"--config=" + n.path("proxy.yaml"), "--hostname-override=" + n.Name}},
	} {
		if err := n.run(c.name, filepath.Join(bin, c.name), c.args...); err != nil {
			return err
		}
	}
	if err := n.importImages(t); err != nil {
		return err
	}
	return n.waitNode()
}

// path is a file or directory under the node's scratch directory.
func (n *Node) path(elem ...string) string { return filepath.Join(append([]string{n.dir}, elem...)...) }

// makeNetwork makes the namespace and its veth pair. Nothing links to the host.
func (n *Node) makeNetwork() error {
	if err := ip("netns", "add", n.Name); err != nil {
		return err
	}
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", "node0", "type", "veth", "peer", "name", "node1"},
		{"addr", "add", n.IP + "/24", "dev", "node0"},
		{"addr", "add", n.exposeIP + "/24", "dev", "node1"},
		{"link", "set", "node0", "up"},
		{"link", "set", "node1", "up"},
		// kubelet refuses a loopback node IP, and the API server wants a default route.
		{"route", "add", "default", "dev", "node0"},
	} {
		if err := ip(append([]string{"-n", n.Name}, args...)...); err != nil {
			return err
		}
	}
	return nil
}

func ip(args ...string) error {
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// startHolder starts the process that owns the node's mount namespace, inside its
// network namespace; every node process joins both. `ip netns exec` would remount
// /sys and hide the cgroup mounts, so nsenter and unshare do it.
func (n *Node) startHolder() error {
	for _, d := range []string{"log", "varlib/upper", "varlib/work", "sysctl"} {
		if err := os.MkdirAll(n.path(d), 0o755); err != nil {
			return err
		}
	}
	// kubelet rewrites these three host-wide settings; inside the namespace it
	// writes to files holding the values it wants, over which they are bound.
	sysctls := map[string]string{"vm/overcommit_memory": "1", "kernel/panic": "10", "kernel/panic_on_oops": "1"}
	script := []string{"set -e",
		"mount -t tmpfs -o mode=755 tmpfs /run",
		// kubelet hard-codes /var/log/containers, libcni /var/lib/cni.
		"mount --bind " + n.path("log") + " /var/log",
		fmt.Sprintf("mount -t overlay overlay -o lowerdir=/var/lib,upperdir=%s,workdir=%s /var/lib", n.path("varlib/upper"), n.path("varlib/work")),
		"echo 1 > /proc/sys/net/ipv4/ip_forward",
		"echo 1 > /proc/sys/net/bridge/bridge-nf-call-iptables",
	}
	for key, v := range sysctls {
		f := n.path("sysctl", filepath.Base(key))
		if err := os.WriteFile(f, []byte(v+"\n"), 0o644); err != nil {
			return err
		}
		script = append(script, "mount --bind "+f+" /proc/sys/"+key)
	}
	script = append(script, "echo ready", "exec sleep infinity")
	cmd := exec.Command("nsenter", "--net="+n.ns.path, "--", "unshare", "--mount", "--propagation", "private", "--",
		"/bin/sh", "-c", strings.Join(script, "\n"))
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	p, err := n.startProcess("holder", cmd)
	if err != nil {
		return err
	}
	n.holder = p
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(out).ReadString('\n')
		line <- s
	}()
	select {
	case s := <-line:
		if strings.TrimSpace(s) != "ready" {
			return fmt.Errorf("the node's namespaces could not be set up: %s", n.tail("holder"))
		}
		return nil
	case <-time.After(10 * time.Second):
		return errors.New("the node's namespaces were not set up within 10s")
	}
}

// process is one of the node's processes.
type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

// run starts a node process inside the node's namespaces, logging to logs/NAME.log.
func (n *Node) run(name, bin string, args ...string) error {
	cmd := n.command(bin, args...)
	_, err := n.startProcess(name, cmd)
	return err
}

// command is a command that runs inside the node's namespaces, as the node's own
// processes do.
func (n *Node) command(bin string, args ...string) *exec.Cmd {
	cmd := exec.Command("nsenter", append([]string{
		fmt.Sprintf("--target=%d", n.holder.cmd.Process.Pid), "--net", "--mount", "--", bin,
	}, args...)...)
	cmd.Env = append(os.Environ(), "PATH="+containerdDir()+":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	return cmd
}

func (n *Node) startProcess(name string, cmd *exec.Cmd) (*process, error) {
	if err := os.MkdirAll(n.path("logs"), 0o755); err != nil {
		return nil, err
	}
	log, err := os.Create(n.path("logs", name+".log"))
	if err != nil {
		return nil, err
	}
	if cmd.Stdout == nil {
		cmd.Stdout = log
	}
	cmd.Stderr = log
	// If the test binary dies, so does the node; the next Start clears the rest.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("could not start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		log.Close()
		close(p.done)
	}()
	n.mu.Lock()
	n.procs = append(n.procs, p)
	n.mu.Unlock()
	// Born in the test's cgroup, it moves to the node's before it forks anything.
	if err := n.cg.adopt(cmd.Process.Pid); err != nil {
		return nil, fmt.Errorf("could not move %s into cgroup %s: %w", name, n.Name, err)
	}
	return p, nil
}

// forwardAPI forwards a loopback port of the host to the API server in the
// namespace, for the test, kubectl and helm.
func (n *Node) forwardAPI(t testing.TB) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	target := net.JoinHostPort(n.IP, fmt.Sprint(apiPort))
	forward(t, ln, func(ctx context.Context) (net.Conn, error) { return n.ns.dial(ctx, target) })
	n.Kubeconfig, err = n.pki.kubeconfig(adminIdentity, "https://"+ln.Addr().String())
	if err != nil {
		return err
	}
	if n.Config, err = clientcmd.BuildConfigFromFlags("", n.Kubeconfig); err != nil {
		return err
	}
	// Load tests create many pods at once.
	n.Config.QPS, n.Config.Burst = 200, 400
	n.Client, err = kubernetes.NewForConfig(n.Config)
	return err
}

// Expose makes target, a host:port on the host's loopback, reachable from pods at
// the returned address inside the node's namespace. A TLS server behind it must
// have a certificate for that address's IP: ExposeIP.
func (n *Node) Expose(t testing.TB, target string) string {
	t.Helper()
	ln, err := n.ns.listen(net.JoinHostPort(n.exposeIP, "0"))
	if err != nil {
		t.Fatalf("could not listen in the node's namespace: %v", err)
	}
	forward(t, ln, func(ctx context.Context) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", target)
	})
	return ln.Addr().String()
}

// DialContext opens a TCP connection from inside the node's network namespace, as
// a pod or the API server would: to a ClusterIP or a pod IP. It fits
// http.Transport.DialContext.
func (n *Node) DialContext(ctx context.Context, _, addr string) (net.Conn, error) {
	return n.ns.dial(ctx, addr)
}

// ExposeIP is the address inside the node's namespace where Expose listens.
func ExposeIP(opts Options) string { return opts.withDefaults().Subnet + ".2" }

func (n *Node) waitReady() error {
	return poll(time.Minute, func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		body, err := n.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err == nil && string(body) == "ok", n.exited()
	})
}

// waitNode waits for the node to be Ready and for the default ServiceAccount, which
// every pod of the default namespace needs.
func (n *Node) waitNode() error {
	ctx := context.Background()
	return poll(time.Minute, func() (bool, error) {
		node, err := n.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil || !ready(node) {
			return false, n.exited()
		}
		_, err = n.Client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, n.exited()
		}
		return err == nil, err
	})
}

func ready(node *corev1.Node) bool {
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// Suspend stops the named node process with SIGSTOP until the returned func is
// called, or the test ends: a kube-proxy whose rules lag behind the endpoints, say.
func (n *Node) Suspend(t testing.TB, name string) (resume func()) {
	t.Helper()
	n.mu.Lock()
	var proc *process
	for _, p := range n.procs {
		if p.name == name {
			proc = p
		}
	}
	n.mu.Unlock()
	if proc == nil {
		t.Fatalf("no node process %q", name)
	}
	if err := proc.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("could not stop %s: %v", name, err)
	}
	var once sync.Once
	resume = func() {
		once.Do(func() {
			if err := proc.cmd.Process.Signal(syscall.SIGCONT); err != nil {
				t.Errorf("could not resume %s: %v", name, err)
			}
		})
	}
	t.Cleanup(resume)
	return resume
}

// exited reports a node process that has ended: none of them should.
func (n *Node) exited() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, p := range n.procs {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited: %s", p.name, n.tail(p.name))
		default:
		}
	}
	return nil
}

// poll calls cond every 100ms until it is true, returns an error, or timeout passes.
func poll(timeout time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s", timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// tail is the end of a process's log.
func (n *Node) tail(name string) string {
	data, _ := os.ReadFile(n.path("logs", name+".log"))
	const max = 3000
	if len(data) > max {
		data = data[len(data)-max:]
	}
	return string(data)
}

// dumpLogs puts the end of every process's log into the test's output.
func (n *Node) dumpLogs(t testing.TB) {
	n.mu.Lock()
	procs := append([]*process(nil), n.procs...)
	n.mu.Unlock()
	for _, p := range procs {
		t.Logf("--- %s log (end) ---\n%s", p.name, n.tail(p.name))
	}
}

// teardown kills every process the node started, and everything in its cgroup,
// pods included, by PID; then removes the cgroup, the namespace and the scratch
// directory. Nothing outlives the test: no process, mount, namespace or cgroup.
func (n *Node) teardown(t testing.TB) {
	if t.Failed() {
		n.dumpLogs(t)
	}
	var errs []error
	n.mu.Lock()
	procs := n.procs
	n.mu.Unlock()
	for _, p := range procs {
		_ = p.cmd.Process.Kill()
	}
	if n.cg != nil {
		errs = append(errs, n.cg.destroy(30*time.Second))
	}
	for _, p := range procs {
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			errs = append(errs, fmt.Errorf("%s did not exit", p.name))
		}
	}
	if _, err := os.Stat(n.ns.path); err == nil {
		errs = append(errs, ip("netns", "delete", n.Name))
	}
	if os.Getenv("KEEP") == "" {
		errs = append(errs, os.RemoveAll(n.dir))
	} else {
		t.Logf("KEEP is set: the node's files stay in %s", n.dir)
	}
	if err := errors.Join(errs...); err != nil {
		t.Errorf("tearing down the real node %s: %v", n.Name, err)
	}
}

// removeLeftovers kills and removes what a node of this name that was not torn
// down left behind: its cgroup's processes, the cgroup and the namespace.
func removeLeftovers(name string) error {
	var errs []error
	if hs, err := hierarchies(); err == nil {
		cg := &cgroups{name: name}
		for _, h := range hs {
			if _, err := os.Stat(filepath.Join(h, name)); err == nil {
				cg.roots = append(cg.roots, filepath.Join(h, name))
			}
		}
		errs = append(errs, cg.destroy(30*time.Second))
	}
	if _, err := os.Stat("/run/netns/" + name); err == nil {
		errs = append(errs, ip("netns", "delete", name))
	}
	return errors.Join(errs...)
}

// lock takes the machine-wide node lock, waiting while another test binary runs a
// node (two would share 2 cores and the machine's conntrack table), and returns its
// release.
func lock(t testing.TB) func() {
	t.Helper()
	path := filepath.Join(os.TempDir(), "secret-relay-node.lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Minute)
	for logged := false; ; {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			t.Fatalf("could not lock %s: %v", path, err)
		}
		if !logged {
			t.Logf("waiting for %s: another real node is running", path)
			logged = true
		}
		time.Sleep(time.Second)
	}
	return func() { f.Close() }
}

func containerdDir() string { return cluster.ToolDir("containerd-" + ContainerdVersion) }

// checkTools says what to run when a tool the node needs is missing.
func checkTools() error {
	need := []string{"/usr/sbin/runc", "/usr/lib/cni/bridge", "/usr/lib/cni/host-local", "/usr/lib/cni/portmap"}
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"} {
		need = append(need, filepath.Join(cluster.BinaryDir(), b))
	}
	for _, b := range []string{"containerd", "containerd-shim-runc-v2", "ctr"} {
		need = append(need, filepath.Join(containerdDir(), b))
	}
	for _, b := range need {
		if _, err := os.Stat(b); err != nil {
			return fmt.Errorf("the real node needs %s: run `make tools-node`", b)
		}
	}
	for _, b := range []string{"iptables", "conntrack", "nsenter", "unshare", "ip"} {
		if _, err := exec.LookPath(b); err != nil {
			return fmt.Errorf("the real node needs %s on PATH: run `make tools-node`", b)
		}
	}
	return nil
}
