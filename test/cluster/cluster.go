// Package cluster is the two-cluster test bed: real kube-apiserver and etcd processes,
// built from Go modules by `make tools`, started through controller-runtime's envtest.
// One control plane plays the upstream cluster that holds the Secrets, the other the
// downstream cluster where pods are admitted.
//
// Every process and directory belongs to the test that started it and is cleaned up
// with t.Cleanup, so tests can run in parallel.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/secret-relay/secret-relay/certs/certstest"
)

// K8sVersion is the version of the control-plane binaries the test bed runs.
const K8sVersion = "v1.37.2"

// BinaryDir is where `make tools` puts kube-apiserver, etcd and kubectl (and, with
// `make tools-node`, the real node's kubelet and its peers). The Makefile exports
// KUBEBUILDER_ASSETS; without it the default cache path of hack/tools.sh is used.
func BinaryDir() string {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir
	}
	return ToolDir("k8s-" + K8sVersion)
}

// ToolDir is the directory of one versioned tool in hack/tools.sh's cache, such as
// "containerd-v2.4.2".
func ToolDir(versioned string) string {
	cache := os.Getenv("SECRET_RELAY_TOOLS_CACHE")
	if cache == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			base = os.TempDir()
		}
		cache = filepath.Join(base, "secret-relay", "tools")
	}
	return filepath.Join(cache, versioned)
}

// Options shape one control plane.
type Options struct {
	// AuditLog records every request at Metadata level, so that tests can count
	// upstream calls with AuditEvents.
	AuditLog bool
	// CRDDirs are installed once the API server is up.
	CRDDirs []string
	// APIServerArgs are extra kube-apiserver flags, without the leading dashes.
	APIServerArgs map[string]string
	// ServingHosts are addresses, beyond 127.0.0.1 and localhost, that the API
	// server's serving certificate covers: where pods on the real node reach it.
	ServingHosts []string
	// Port is the API server's port on 127.0.0.1; 0 picks one.
	Port int
}

// ControlPlane is one running cluster: etcd and kube-apiserver, no kubelet and no
// controller-manager. Pods are admitted and stored but never run.
type ControlPlane struct {
	// Name is "upstream" or "downstream" in logs and directory names.
	Name string
	// Config is an admin (system:masters) client configuration.
	Config *rest.Config
	// Client is a clientset on Config.
	Client kubernetes.Interface
	// Kubeconfig is a kubeconfig file for Config, for kubectl and helm.
	Kubeconfig string

	env      *envtest.Environment
	dir      string
	auditLog string

	mu      sync.Mutex
	stopped bool
}

// Start starts one control plane and registers its shutdown with t.Cleanup.
func Start(t testing.TB, name string, opts Options) *ControlPlane {
	t.Helper()
	cp, err := start(t, name, opts)
	if err != nil {
		t.Fatalf("could not start the %s control plane: %v", name, err)
	}
	return cp
}

// StartPair starts the upstream and downstream control planes side by side. The
// upstream one keeps an audit log.
func StartPair(t testing.TB, downstream Options) (up, down *ControlPlane) {
	t.Helper()
	var (
		wg             sync.WaitGroup
		upErr, downErr error
	)
	wg.Add(2)
	go func() { defer wg.Done(); up, upErr = start(t, "upstream", Options{AuditLog: true}) }()
	go func() { defer wg.Done(); down, downErr = start(t, "downstream", downstream) }()
	wg.Wait()
	if err := errors.Join(upErr, downErr); err != nil {
		t.Fatalf("could not start the control planes: %v", err)
	}
	return up, down
}

// quietEnvtest keeps controller-runtime from warning that no logger was set: the
// test bed reports through t instead.
var quietEnvtest sync.Once

func start(t testing.TB, name string, opts Options) (*ControlPlane, error) {
	quietEnvtest.Do(func() { ctrllog.SetLogger(logr.Discard()) })
	bin := BinaryDir()
	if _, err := os.Stat(filepath.Join(bin, "kube-apiserver")); err != nil {
		return nil, fmt.Errorf("no kube-apiserver in %s: run `make tools` first", bin)
	}
	dir, err := os.MkdirTemp("", "secret-relay-"+name+"-")
	if err != nil {
		return nil, err
	}
	cp := &ControlPlane{Name: name, dir: dir}
	// A fixed cert dir keeps the serving CA and keys across Stop and Restart, so that
	// clients built from a store's CA keep working after an outage.
	api := &envtest.APIServer{CertDir: filepath.Join(dir, "apiserver")}
	if err := os.MkdirAll(api.CertDir, 0o700); err != nil {
		return nil, err
	}
	if len(opts.ServingHosts) > 0 {
		if err := servingCerts(api, opts.ServingHosts); err != nil {
			return nil, err
		}
	}
	if opts.AuditLog {
		if err := cp.configureAudit(api); err != nil {
			return nil, err
		}
	}
	if opts.Port != 0 {
		api.SecureServing.ListenAddr = envtest.ListenAddr{Address: "127.0.0.1", Port: strconv.Itoa(opts.Port)}
	}
	for k, v := range opts.APIServerArgs {
		api.Configure().Set(k, v)
	}
	cp.env = &envtest.Environment{
		BinaryAssetsDirectory:    bin,
		ControlPlane:             envtest.ControlPlane{APIServer: api},
		CRDDirectoryPaths:        opts.CRDDirs,
		ErrorIfCRDPathMissing:    len(opts.CRDDirs) > 0,
		ControlPlaneStartTimeout: time.Minute,
		ControlPlaneStopTimeout:  time.Minute,
	}
	cfg, err := cp.env.Start()
	// Register the cleanup before checking the error: a half-started plane still
	// has processes to stop.
	t.Cleanup(func() { cp.shutdown(t) })
	if err != nil {
		return nil, err
	}
	cp.Config = cfg
	if cp.Client, err = kubernetes.NewForConfig(cfg); err != nil {
		return nil, err
	}
	cp.Kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(cp.Kubeconfig, cp.env.KubeConfig, 0o600); err != nil {
		return nil, err
	}
	return cp, nil
}

// servingCerts writes the files envtest would generate, with a serving certificate
// that also covers hosts: envtest keeps certificates it finds in the cert dir.
func servingCerts(api *envtest.APIServer, hosts []string) error {
	ca, err := certstest.NewCA("secret-relay-test-apiserver-ca")
	if err != nil {
		return err
	}
	serving, err := ca.ServingCert(append([]string{"127.0.0.1", "localhost"}, hosts...)...)
	if err != nil {
		return err
	}
	signer, err := ca.ClientCert("service-account-signer")
	if err != nil {
		return err
	}
	for name, data := range map[string][]byte{
		"apiserver.crt": serving.CertPEM, "apiserver.key": serving.KeyPEM,
		"sa-signer.crt": signer.CertPEM, "sa-signer.key": signer.KeyPEM,
	} {
		if err := os.WriteFile(filepath.Join(api.CertDir, name), data, 0o600); err != nil {
			return err
		}
	}
	api.SecureServing.CA = ca.CertPEM()
	return nil
}

func (cp *ControlPlane) shutdown(t testing.TB) {
	if err := cp.env.Stop(); err != nil {
		t.Logf("could not stop the %s control plane: %v", cp.Name, err)
	}
	if err := os.RemoveAll(cp.dir); err != nil {
		t.Logf("could not remove %s: %v", cp.dir, err)
	}
}

// URL is the https address of the API server, as a SecretStore's server.url holds it.
func (cp *ControlPlane) URL() string { return cp.Config.Host }

// CA is the PEM bundle that verifies the API server's serving certificate.
func (cp *ControlPlane) CA() []byte { return cp.Config.CAData }

// Dir is a scratch directory that lives as long as the control plane.
func (cp *ControlPlane) Dir() string { return cp.dir }

// Stop kills the API server, leaving etcd and its data alone: an outage, from a
// client's point of view, with no graceful goodbye (a graceful stop would wait up to
// a minute for open watches to drain). Restart brings it back on the same address
// and certificates.
func (cp *ControlPlane) Stop(t testing.TB) {
	t.Helper()
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.stopped {
		return
	}
	api := cp.env.ControlPlane.APIServer
	if pid := findProcess("--cert-dir=" + api.CertDir); pid > 0 {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if err := api.Stop(); err != nil {
		t.Fatalf("could not stop the %s API server: %v", cp.Name, err)
	}
	cp.stopped = true
}

// findProcess returns the PID of the process whose command line has arg, or 0.
func findProcess(arg string) int {
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err != nil {
			continue
		}
		for _, a := range strings.Split(string(cmdline), "\x00") {
			if a == arg {
				return pid
			}
		}
	}
	return 0
}

// Restart starts an API server stopped by Stop and waits until it is healthy.
func (cp *ControlPlane) Restart(t testing.TB) {
	t.Helper()
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if !cp.stopped {
		return
	}
	if err := cp.env.ControlPlane.APIServer.Start(); err != nil {
		t.Fatalf("could not restart the %s API server: %v", cp.Name, err)
	}
	cp.stopped = false
}

// Context is a context for one test step: cancelled at the end of the test, and
// bounded so that a hung API call fails the test instead of the whole run.
func Context(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// ClientWithWarnings is an admin clientset that hands the API server's warnings
// (admission warnings among them) to h.
func (cp *ControlPlane) ClientWithWarnings(t testing.TB, h rest.WarningHandler) kubernetes.Interface {
	t.Helper()
	cfg := rest.CopyConfig(cp.Config)
	cfg.WarningHandler = h
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
