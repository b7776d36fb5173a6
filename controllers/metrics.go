package controllers

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/secret-relay/secret-relay/api/v1alpha1"
	"github.com/secret-relay/secret-relay/remote"
)

// Metrics are the controllers' Prometheus metrics (contract §8). A nil *Metrics
// records nothing, so that tests need not set one up.
type Metrics struct {
	syncs          *prometheus.CounterVec
	syncLag        prometheus.Histogram
	orphansDeleted prometheus.Counter
	restarts       *prometheus.CounterVec
}

// NewMetrics registers the metrics with reg, with the store_ready collector over
// stores.
func NewMetrics(reg prometheus.Registerer, stores *remote.StoreCache) *Metrics {
	m := &Metrics{
		syncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "secret_relay_syncs_total",
			Help: "Background syncs of local copies, by result: updated, unchanged, deleted_upstream, denied or error.",
		}, []string{"result"}),
		syncLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "secret_relay_sync_lag_seconds",
			Help:    "Time from an upstream change arriving on the watch to the local copy being written.",
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
		}),
		orphansDeleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "secret_relay_orphans_deleted_total",
			Help: "Managed copies deleted because no live pod and no owner used them for --orphan-grace-period.",
		}),
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "secret_relay_restarts_total",
			Help: "Workloads rolled because a copy they use changed data, by kind: Deployment, StatefulSet or DaemonSet.",
		}, []string{"kind"}),
	}
	reg.MustRegister(m.syncs, m.syncLag, m.orphansDeleted, m.restarts, newStoreReadyCollector(stores))
	return m
}

func (m *Metrics) orphanDeleted() {
	if m != nil {
		m.orphansDeleted.Inc()
	}
}

func (m *Metrics) restarted(kind string) {
	if m != nil {
		m.restarts.WithLabelValues(kind).Inc()
	}
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
	stores *remote.StoreCache
	desc   *prometheus.Desc
}

func newStoreReadyCollector(stores *remote.StoreCache) prometheus.Collector {
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
