package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/secret-relay/secret-relay/remote"
)

// Flags are the options of `secret-relay serve`, as the contract lists them.
type Flags struct {
	Kubeconfig      string
	WebhookAddress  string
	TLSCertFile     string
	TLSKeyFile      string
	ProbeAddress    string
	Namespace       string
	UpstreamTimeout time.Duration
	// OrphanGracePeriod is how long a copy nothing uses is kept before the leader
	// deletes it.
	OrphanGracePeriod time.Duration
	LeaderElect       bool
	LogLevel          zapcore.Level
	LogFormat         string
	// ClientCAFile, when set, makes the webhook listener require client
	// certificates that this bundle verifies.
	ClientCAFile string
	// ExcludedNamespaces are never relayed into, beside kube-system and
	// --namespace: those the webhook configuration's namespaceSelector leaves out.
	ExcludedNamespaces []string

	// Profiling serves Go's pprof profiles under /debug/pprof/ on --probe-address.
	Profiling bool

	// Not in the contract's table: tuning knobs, mostly for tests.
	StoreValidationInterval time.Duration
	CertReloadInterval      time.Duration
	// ShutdownDelay is how long a replica keeps answering reviews after SIGTERM,
	// unready and closing each connection after its response, before it stops.
	ShutdownDelay time.Duration
	Lease         LeaseTiming
	// TokenRenewal is how long a ServiceAccount token secret-relay requested is
	// used before it requests another (tokens last an hour).
	TokenRenewal time.Duration
}

// LeaseTiming is the leader election's timing, as in client-go's LeaderElectionConfig.
type LeaseTiming struct {
	Duration, RenewDeadline, RetryPeriod time.Duration
}

func parseFlags(args []string, output io.Writer) (Flags, error) {
	var f Flags
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(output)
	fs.StringVar(&f.Kubeconfig, "kubeconfig", "", "kubeconfig of the downstream cluster; empty means in-cluster")
	fs.StringVar(&f.WebhookAddress, "webhook-address", ":9443", "HTTPS listener for POST /mutate-pods")
	fs.StringVar(&f.TLSCertFile, "tls-cert-file", "/etc/secret-relay/tls/tls.crt", "serving certificate, re-read when it changes")
	fs.StringVar(&f.TLSKeyFile, "tls-key-file", "/etc/secret-relay/tls/tls.key", "serving key, re-read when it changes")
	fs.StringVar(&f.ProbeAddress, "probe-address", ":8080", "plain HTTP listener for /healthz, /readyz and /metrics")
	fs.StringVar(&f.Namespace, "namespace", defaultNamespace(), "own namespace, for the leader lease and events")
	fs.DurationVar(&f.UpstreamTimeout, "upstream-timeout", 2*time.Second, "deadline for upstream calls made during one admission")
	fs.DurationVar(&f.OrphanGracePeriod, "orphan-grace-period", 10*time.Minute, "how long a managed copy that no live pod and no live owner uses is kept before the leader deletes it")
	fs.BoolVar(&f.LeaderElect, "leader-elect", true, "only the leader writes during background sync")
	fs.TextVar(&f.LogLevel, "log-level", zapcore.InfoLevel, "log level: debug, info, warn or error")
	fs.StringVar(&f.LogFormat, "log-format", "json", "log format: json or console")
	fs.StringVar(&f.ClientCAFile, "client-ca-file", "", "when set, the webhook listener requires a client certificate signed by this CA bundle (the API server's, from its AdmissionConfiguration kubeConfigFile); re-read when it changes")
	fs.Func("excluded-namespaces", "comma-separated namespaces never relayed into besides kube-system and --namespace, as the webhook configuration's namespaceSelector excludes them", func(v string) error {
		for _, ns := range strings.Split(v, ",") {
			if ns = strings.TrimSpace(ns); ns != "" {
				f.ExcludedNamespaces = append(f.ExcludedNamespaces, ns)
			}
		}
		return nil
	})
	fs.BoolVar(&f.Profiling, "profiling", false, "serve Go's pprof profiles under /debug/pprof/ on --probe-address (plain HTTP: keep that port off the network)")
	fs.DurationVar(&f.StoreValidationInterval, "store-validation-interval", 5*time.Minute, "how often every store is validated again")
	fs.DurationVar(&f.CertReloadInterval, "cert-reload-interval", 10*time.Second, "how often the serving certificate files are checked for changes")
	fs.DurationVar(&f.ShutdownDelay, "shutdown-delay", 3*time.Second, "after SIGTERM, how long to keep answering reviews while clients move to other replicas")
	fs.DurationVar(&f.TokenRenewal, "service-account-token-renewal", remote.TokenLifetime*4/5, "how long a ServiceAccount token requested for auth.serviceAccount is used before a new one is requested; at most its one-hour lifetime")
	fs.DurationVar(&f.Lease.Duration, "leader-elect-lease-duration", 15*time.Second, "how long other replicas wait before taking over a lease that was not renewed")
	fs.DurationVar(&f.Lease.RenewDeadline, "leader-elect-renew-deadline", 10*time.Second, "how long the leader keeps retrying to renew before it gives up leading")
	fs.DurationVar(&f.Lease.RetryPeriod, "leader-elect-retry-period", 2*time.Second, "how often replicas try to acquire or renew the lease")
	if err := fs.Parse(args); err != nil {
		return Flags{}, err
	}
	if fs.NArg() > 0 {
		return Flags{}, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	return f, f.validate()
}

func (f Flags) validate() error {
	var errs []error
	if f.WebhookAddress == "" {
		errs = append(errs, errors.New("--webhook-address must not be empty"))
	}
	if f.ProbeAddress == "" {
		errs = append(errs, errors.New("--probe-address must not be empty"))
	}
	if f.WebhookAddress != "" && f.WebhookAddress == f.ProbeAddress {
		errs = append(errs, errors.New("--webhook-address and --probe-address must differ"))
	}
	if f.TLSCertFile == "" || f.TLSKeyFile == "" {
		errs = append(errs, errors.New("--tls-cert-file and --tls-key-file are required"))
	}
	if f.Namespace == "" {
		errs = append(errs, errors.New("--namespace must not be empty"))
	}
	if f.UpstreamTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--upstream-timeout must be positive, got %s", f.UpstreamTimeout))
	}
	if f.OrphanGracePeriod <= 0 {
		errs = append(errs, fmt.Errorf("--orphan-grace-period must be positive, got %s", f.OrphanGracePeriod))
	}
	if f.StoreValidationInterval < time.Second || f.CertReloadInterval <= 0 {
		errs = append(errs, errors.New("--store-validation-interval must be at least 1s and --cert-reload-interval positive"))
	}
	if f.TokenRenewal < time.Second || f.TokenRenewal > remote.TokenLifetime {
		errs = append(errs, fmt.Errorf("--service-account-token-renewal must be between 1s and %s, got %s", remote.TokenLifetime, f.TokenRenewal))
	}
	if f.ShutdownDelay < 0 {
		errs = append(errs, fmt.Errorf("--shutdown-delay must not be negative, got %s", f.ShutdownDelay))
	}
	if l := f.Lease; l.RetryPeriod <= 0 || l.RenewDeadline <= l.RetryPeriod || l.Duration <= l.RenewDeadline {
		errs = append(errs, fmt.Errorf("leader election needs 0 < retry period (%s) < renew deadline (%s) < lease duration (%s)", l.RetryPeriod, l.RenewDeadline, l.Duration))
	}
	if f.LogFormat != "json" && f.LogFormat != "console" {
		errs = append(errs, fmt.Errorf("--log-format must be json or console, got %q", f.LogFormat))
	}
	return errors.Join(errs...)
}

func defaultNamespace() string {
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns
	}
	return "secret-relay"
}
