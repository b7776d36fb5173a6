package remote

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the upstream side's Prometheus metrics (contract §8); the controllers
// keep their own. A nil *Metrics
// records nothing, so that tests need not set one up.
type Metrics struct {
	upstreamRequests *prometheus.CounterVec
	cacheHits        prometheus.Counter
	cacheMisses      prometheus.Counter
	watchBroken      *prometheus.GaugeVec
}

// NewMetrics registers the metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		upstreamRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "secret_relay_upstream_requests_total",
			Help: "Requests to upstream API servers, by store, verb and HTTP status code (\"error\" when none came back).",
		}, []string{"store", "verb", "code"}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "secret_relay_cache_hits_total",
			Help: "Upstream Secret reads answered from a watch cache.",
		}),
		cacheMisses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "secret_relay_cache_misses_total",
			Help: "Upstream Secret reads that had to go upstream.",
		}),
		watchBroken: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "secret_relay_upstream_watch_broken",
			Help: "1 while a store's upstream watch is failing: admission then reads live, or falls back to managed copies.",
		}, []string{"store"}),
	}
	reg.MustRegister(m.upstreamRequests, m.cacheHits, m.cacheMisses, m.watchBroken)
	return m
}

func (m *Metrics) cacheHit() {
	if m != nil {
		m.cacheHits.Inc()
	}
}

func (m *Metrics) cacheMiss() {
	if m != nil {
		m.cacheMisses.Inc()
	}
}

func (m *Metrics) setWatchBroken(store string, broken bool) {
	if m == nil {
		return
	}
	v := 0.0
	if broken {
		v = 1
	}
	m.watchBroken.WithLabelValues(store).Set(v)
}

// countRequests wraps an upstream client's transport to count its requests.
func (m *Metrics) countRequests(store string) func(http.RoundTripper) http.RoundTripper {
	return func(next http.RoundTripper) http.RoundTripper {
		if m == nil {
			return next
		}
		return roundTripFunc(func(req *http.Request) (*http.Response, error) {
			resp, err := next.RoundTrip(req)
			code := "error"
			if err == nil {
				code = strconv.Itoa(resp.StatusCode)
			}
			m.upstreamRequests.WithLabelValues(store, verbOf(req), code).Inc()
			return resp, err
		})
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// verbOf names a request the way the API server's audit log does.
func verbOf(req *http.Request) string {
	switch req.Method {
	case http.MethodGet:
		switch {
		case req.URL.Query().Get("watch") == "true" || req.URL.Query().Get("watch") == "1":
			return "watch"
		case strings.HasSuffix(req.URL.Path, "/secrets"):
			return "list"
		default:
			return "get"
		}
	case http.MethodPost:
		return "create"
	case http.MethodPut:
		return "update"
	case http.MethodPatch:
		return "patch"
	case http.MethodDelete:
		return "delete"
	default:
		return strings.ToLower(req.Method)
	}
}
