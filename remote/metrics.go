package remote

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/secret-relay/secret-relay/api/v1alpha1"
)

// Metrics are the upstream side's Prometheus metrics (contract §8). A nil *Metrics
// records nothing, so that tests need not set one up.
type Metrics struct {
	upstreamRequests *prometheus.CounterVec
	cacheHits        prometheus.Counter
	cacheMisses      prometheus.Counter
	syncs            *prometheus.CounterVec
	syncLag          prometheus.Histogram
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
		syncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "secret_relay_syncs_total",
			Help: "Background syncs of local copies, by result: updated, unchanged, deleted_upstream or error.",
		}, []string{"result"}),
		syncLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "secret_relay_sync_lag_seconds",
			Help:    "Time from an upstream change arriving on the watch to the local copy being written.",
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
		}),
		watchBroken: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "secret_relay_upstream_watch_broken",
			Help: "1 while a store's upstream watch is failing: admission then reads live, or falls back to managed copies.",
		}, []string{"store"}),
	}
	reg.MustRegister(m.upstreamRequests, m.cacheHits, m.cacheMisses, m.syncs, m.syncLag, m.watchBroken)
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

func (m *Metrics) sync(result string, lag time.Duration) {
	if m == nil {
		return
	}
	m.syncs.WithLabelValues(result).Inc()
	if lag > 0 {
		m.syncLag.Observe(lag.Seconds())
	}
}

// storeReady reports secret_relay_store_ready from the store informers at each
// scrape: every replica reports the status the leader wrote, and a deleted store's
// series goes with it.
type storeReady struct {
	stores *StoreCache
	desc   *prometheus.Desc
}

// NewStoreReadyCollector returns the collector of secret_relay_store_ready{kind,
// namespace,name}: 1 while a store's Ready condition is True, else 0.
func NewStoreReadyCollector(stores *StoreCache) prometheus.Collector {
	return storeReady{stores: stores, desc: prometheus.NewDesc("secret_relay_store_ready",
		"1 while a store's Ready condition is True, 0 otherwise (invalid, refused or unreachable upstream, or not validated yet).",
		[]string{"kind", "namespace", "name"}, nil)}
}

func (c storeReady) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c storeReady) Collect(ch chan<- prometheus.Metric) {
	report := func(kind, ns, name string, st v1alpha1.SecretStoreStatus) {
		ready := 0.0
		if meta.IsStatusConditionTrue(st.Conditions, v1alpha1.ConditionReady) {
			ready = 1
		}
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, ready, kind, ns, name)
	}
	stores, _ := c.stores.SecretStores.List(labels.Everything())
	for _, s := range stores {
		report(v1alpha1.SecretStoreKind, s.Namespace, s.Name, s.Status)
	}
	cluster, _ := c.stores.ClusterSecretStores.List(labels.Everything())
	for _, s := range cluster {
		report(v1alpha1.ClusterSecretStoreKind, "", s.Name, s.Status)
	}
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
