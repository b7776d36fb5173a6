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
	kwhwebhook "github.com/slok/kubewebhook/v2/pkg/webhook"
	"k8s.io/client-go/kubernetes"
)

type metrics struct {
	kwh        kwhwebhook.MetricsRecorder
	admissions *prometheus.CounterVec
}

// withoutNamespace records kubewebhook's review metrics with an empty
// resource_namespace. Each namespace that sends reviews would otherwise get series
// of its own in three histograms: 3 MB of resident memory at 1,000 namespaces, about
// 300 B per copy of the bench's fleet, and series without bound for Prometheus.
// secret_relay_admissions_total counts the results cluster-wide too.
type withoutNamespace struct{ next kwhwebhook.MetricsRecorder }

func (w withoutNamespace) MeasureValidatingWebhookReviewOp(ctx context.Context, data kwhwebhook.MeasureValidatingOpData) {
	data.ResourceNamespace = ""
	w.next.MeasureValidatingWebhookReviewOp(ctx, data)
}

func (w withoutNamespace) MeasureMutatingWebhookReviewOp(ctx context.Context, data kwhwebhook.MeasureMutatingOpData) {
	data.ResourceNamespace = ""
	w.next.MeasureMutatingWebhookReviewOp(ctx, data)
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	kwh, err := kwhprometheus.NewRecorder(kwhprometheus.RecorderConfig{Registry: reg})
	if err != nil {
		return nil, fmt.Errorf("could not create the webhook metrics: %w", err)
	}
	m := &metrics{
		kwh: withoutNamespace{next: kwh},
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
