package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	kwhprometheus "github.com/slok/kubewebhook/v2/pkg/metrics/prometheus"
	"k8s.io/client-go/kubernetes"
)

type metrics struct {
	kwh        *kwhprometheus.Recorder
	admissions *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	kwh, err := kwhprometheus.NewRecorder(kwhprometheus.RecorderConfig{Registry: reg})
	if err != nil {
		return nil, fmt.Errorf("could not create the webhook metrics: %w", err)
	}
	m := &metrics{
		kwh: kwh,
		admissions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "secret_relay_admissions_total",
			Help: "Pod admission reviews, by result: admitted, denied, untouched or error.",
		}, []string{"result"}),
	}
	reg.MustRegister(m.admissions)
	return m, nil
}

// readyCheck is one condition of /readyz.
type readyCheck struct {
	name string
	ok   func(context.Context) error
}

// probeMux serves /healthz, /readyz and /metrics, and with profiling the pprof
// handlers. Profiles hold stacks and sizes, never the contents of memory.
func probeMux(gatherer prometheus.Gatherer, checks []readyCheck, profiling bool) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		for _, c := range checks {
			if err := c.ok(ctx); err != nil {
				http.Error(w, fmt.Sprintf("not ready: %s: %v", c.name, err), http.StatusServiceUnavailable)
				return
			}
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	if profiling {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return mux
}

func downstreamAnswers(kube kubernetes.Interface) readyCheck {
	return readyCheck{name: "downstream API", ok: func(ctx context.Context) error {
		return kube.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).Error()
	}}
}
