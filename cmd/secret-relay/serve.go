package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/go-logr/zapr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/secret-relay/secret-relay/api/client/clientset/versioned"
	"github.com/secret-relay/secret-relay/certs"
	"github.com/secret-relay/secret-relay/webhook"
)

// Downstream client rate limits, set explicitly (client-go's defaults are 5 QPS,
// burst 10). Caches, events, leader election and background sync share the first
// pair; it bounds how fast one upstream change reaches its copies: at 100 QPS, 1,000
// copies took 8 s, and the goal is 1,000 in 5 s and 10,000 in 30 s (333 writes/s).
// Above that, the API server's priority and fairness decides: a 429 makes client-go
// wait its Retry-After, and a copy that still fails is retried by the sync queue.
// Admission writes have their own, higher pair: they are paced by the pod
// creations the API server has already let in under its own priority and fairness,
// and a bucket below that pace only turns a burst into failed reviews (600 pods with
// distinct Secrets at once: 203 failed at 100/200, when admission shared it).
const (
	downstreamQPS   = 500
	downstreamBurst = 1000
	admissionQPS    = 1000
	admissionBurst  = 2000
)

// Server timeouts. The API server gives a webhook at most 30 s; reviews finish within
// --upstream-timeout plus a second, so these only bound misbehaving clients.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 15 * time.Second
	writeTimeout      = 35 * time.Second
	idleTimeout       = 90 * time.Second
	shutdownTimeout   = 25 * time.Second
)

// serve runs the webhook and the sync controller until ctx ends.
func serve(ctx context.Context, f Flags) error {
	logger, err := newLogger(f)
	if err != nil {
		return err
	}
	defer func() { _ = logger.Sync() }()
	if err := setRuntimeLimits(); err != nil {
		return err
	}

	cfg, err := downstreamConfig(f.Kubeconfig)
	if err != nil {
		return err
	}
	down, err := downstreamClients(cfg)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics, err := newMetrics(reg)
	if err != nil {
		return err
	}

	// Everything but leader election outlives the signal: reviews are still answered
	// while the replica drains, and need the caches.
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	parts, err := wire(runCtx, f, down, reg, logger)
	if err != nil {
		return err
	}
	gc := newGCTuner()
	handler, err := webhook.NewHandler(webhook.HandlerConfig{
		Mutator: parts.mutator,
		Logger:  logger.Named("webhook"),
		Metrics: metrics.kwh,
		Observe: func(result string) {
			metrics.admissions.WithLabelValues(result).Inc()
			gc.observe()
		},
	})
	if err != nil {
		return err
	}
	tlsFiles := newTLSFiles(f)
	var draining atomic.Bool
	webhookSrv := newWebhookServer(handler, tlsFiles, &draining, logger)
	probeSrv := newProbeServer(reg, f.Profiling, []readyCheck{
		{name: "not shutting down", ok: func(context.Context) error { return boolErr(!draining.Load(), "draining") }},
		{name: "serving certificate", ok: func(context.Context) error { return boolErr(tlsFiles.cert.Loaded(), "not loaded") }},
		{name: "client CA bundle", ok: func(context.Context) error {
			return boolErr(tlsFiles.clientCAs == nil || tlsFiles.clientCAs.Loaded(), "not loaded")
		}},
		{name: "caches", ok: func(context.Context) error { return parts.synced() }},
		downstreamAnswers(down.kube),
	})
	webhookLn, err := net.Listen("tcp", f.WebhookAddress)
	if err != nil {
		return fmt.Errorf("could not listen on %s: %w", f.WebhookAddress, err)
	}
	probeLn, err := net.Listen("tcp", f.ProbeAddress)
	if err != nil {
		_ = webhookLn.Close()
		return fmt.Errorf("could not listen on %s: %w", f.ProbeAddress, err)
	}
	logger.Info("serving", zap.String("version", version), zap.String("webhook", webhookLn.Addr().String()), zap.String("probe", probeLn.Addr().String()))

	// A part that fails stops the others: the group's context ends with it.
	g, gctx := errgroup.WithContext(runCtx)
	run := func(name string, fn func(context.Context) error) {
		g.Go(func() error {
			if err := fn(gctx); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			return nil
		})
	}
	tlsFiles.start(run, logger)
	parts.start(gctx, run)
	// The lease is released as soon as the signal comes, so that another replica
	// takes over background writes at once.
	leading, stopLeading := context.WithCancel(gctx)
	defer context.AfterFunc(ctx, stopLeading)()
	g.Go(func() error { return runLeading(leading, f, down.kube, logger.Named("leader"), parts.lead) })
	run("webhook server", func(context.Context) error { return serveUntilShutdown(webhookSrv.ServeTLS(webhookLn, "", "")) })
	run("probe server", func(context.Context) error { return serveUntilShutdown(probeSrv.Serve(probeLn)) })
	run("collector tuner", func(ctx context.Context) error { return gc.run(ctx, logger) })

	select {
	case <-ctx.Done():
		drain(&draining, f.ShutdownDelay, logger)
	case <-gctx.Done():
		logger.Error("stopping: a part failed")
	}
	// Finish the reviews in flight before anything they use goes away.
	shutdownCtx, done := context.WithTimeout(context.Background(), shutdownTimeout)
	defer done()
	err = errors.Join(webhookSrv.Shutdown(shutdownCtx), probeSrv.Shutdown(shutdownCtx))
	cancel()
	return errors.Join(g.Wait(), err)
}

// tlsFiles are the certificate files the webhook listener serves and verifies with,
// re-read as they change.
type tlsFiles struct {
	cert      *certs.Reloader
	clientCAs *certs.CABundle // nil without --client-ca-file
}

func newTLSFiles(f Flags) tlsFiles {
	t := tlsFiles{cert: certs.NewReloader(f.TLSCertFile, f.TLSKeyFile, f.CertReloadInterval)}
	if f.ClientCAFile != "" {
		t.clientCAs = certs.NewCABundle(f.ClientCAFile, f.CertReloadInterval)
	}
	return t
}

func (t tlsFiles) start(run func(string, func(context.Context) error), logger *zap.Logger) {
	log := zapr.NewLogger(logger.Named("certs"))
	run("certificate reloader", func(ctx context.Context) error { return t.cert.Start(ctx, log) })
	if t.clientCAs != nil {
		run("client CA reloader", func(ctx context.Context) error { return t.clientCAs.Start(ctx, log) })
	}
}

// newWebhookServer is the hardened HTTPS server of POST /mutate-pods.
func newWebhookServer(handler http.Handler, files tlsFiles, draining *atomic.Bool, logger *zap.Logger) *http.Server {
	mux := http.NewServeMux()
	mux.Handle("POST /mutate-pods", closeWhen(draining, handler))
	return &http.Server{
		Handler:           mux,
		TLSConfig:         files.cert.ServerTLSConfig(files.clientCAs),
		TLSNextProto:      map[string]func(*http.Server, *tls.Conn, http.Handler){}, // no HTTP/2
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          zap.NewStdLog(logger.Named("webhook-http")),
	}
}

// newProbeServer is the plain HTTP server of /healthz, /readyz and /metrics.
func newProbeServer(reg prometheus.Gatherer, profiling bool, checks []readyCheck) *http.Server {
	return &http.Server{
		Handler:           probeMux(reg, checks, profiling),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
	}
}

// drain keeps answering reviews for delay after a signal while /readyz fails, so
// that the Service stops sending new connections here, and closes each connection
// after its response, so that clients holding one move to another replica without
// racing a close of an idle connection.
func drain(draining *atomic.Bool, delay time.Duration, logger *zap.Logger) {
	draining.Store(true)
	logger.Info("shutting down", zap.Duration("drain", delay))
	time.Sleep(delay)
}

// closeWhen asks the client to close the connection after each response while flag
// is set.
func closeWhen(flag *atomic.Bool, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if flag.Load() {
			w.Header().Set("Connection", "close")
		}
		next.ServeHTTP(w, r)
	})
}

func serveUntilShutdown(err error) error {
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

func newLogger(f Flags) (*zap.Logger, error) {
	cfg := zap.NewProductionConfig()
	if f.LogFormat == "console" {
		cfg = zap.NewDevelopmentConfig()
	}
	cfg.Level = zap.NewAtomicLevelAt(f.LogLevel)
	cfg.Sampling = nil
	cfg.EncoderConfig.EncodeTime = zapcore.RFC3339NanoTimeEncoder
	return cfg.Build()
}

func downstreamConfig(kubeconfig string) (*rest.Config, error) {
	var (
		cfg *rest.Config
		err error
	)
	if kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("could not load the downstream cluster config: %w", err)
	}
	cfg.QPS, cfg.Burst = downstreamQPS, downstreamBurst
	cfg.UserAgent = "secret-relay/" + version
	return cfg, nil
}

func downstreamClients(cfg *rest.Config) (downstream, error) {
	var (
		down downstream
		err  error
	)
	if down.kube, err = kubernetes.NewForConfig(cfg); err != nil {
		return down, fmt.Errorf("could not create the downstream client: %w", err)
	}
	if down.stores, err = versioned.NewForConfig(cfg); err != nil {
		return down, fmt.Errorf("could not create the downstream store client: %w", err)
	}
	admission := rest.CopyConfig(cfg)
	admission.QPS, admission.Burst = admissionQPS, admissionBurst
	// A dialer of its own gives admission its own transport, and so its own HTTP/2
	// connection and streams: client-go shares one transport among the clients of a
	// config, and the sync controller's fan-out and the watches would otherwise hold
	// streams that a waiting review needs (webhook.MutatorConfig.ConcurrentWrites).
	admission.Dial = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	if down.admission, err = kubernetes.NewForConfig(admission); err != nil {
		return down, fmt.Errorf("could not create the downstream admission client: %w", err)
	}
	// The controllers' metadata is read while a review waits, when the cache does
	// not hold it yet: at admission's limits.
	if down.meta, err = metadata.NewForConfig(admission); err != nil {
		return down, fmt.Errorf("could not create the downstream metadata client: %w", err)
	}
	return down, nil
}

func boolErr(ok bool, msg string) error {
	if ok {
		return nil
	}
	return errors.New(msg)
}
