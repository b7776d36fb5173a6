package main

import (
	"context"
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/secret-relay/secret-relay/remote"
	"github.com/secret-relay/secret-relay/webhook"
)

// relayParts are secret-relay's moving parts, wired together: the caches every
// replica keeps, the mutator that admission calls, and the two controllers.
type relayParts struct {
	kube       kubernetes.Interface
	stores     *remote.StoreCache
	local      *webhook.ManagedSecrets
	upstreams  *remote.Upstreams
	namespaces informers.SharedInformerFactory
	validator  *remote.StoreValidator
	syncer     *remote.SyncController
	mutator    *webhook.Mutator
	events     record.EventBroadcaster
}

// downstream are the downstream clients: kube and dyn for caches and background
// work, admission for the writes made while a review waits.
type downstream struct {
	kube, admission kubernetes.Interface
	dyn             dynamic.Interface
}

func wire(ctx context.Context, f Flags, down downstream, reg prometheus.Registerer, logger *zap.Logger) (*relayParts, error) {
	kube, dyn := down.kube, down.dyn
	p := &relayParts{kube: kube}
	metrics := remote.NewMetrics(reg)
	p.events = record.NewBroadcaster(record.WithContext(ctx))
	recorder := p.events.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "secret-relay"})

	p.stores = remote.NewStoreCache(dyn, f.StoreValidationInterval)
	p.local = webhook.NewManagedSecrets(kube)
	clients := remote.NewClients(remote.NewRefCache(ctx, kube), metrics)
	p.upstreams = remote.NewUpstreams(ctx, clients, metrics)
	p.namespaces = informers.NewSharedInformerFactoryWithOptions(kube, 0)
	nsLister := p.namespaces.Core().V1().Namespaces().Lister()

	var err error
	if p.validator, err = remote.NewStoreValidator(remote.StoreValidatorConfig{
		Dynamic: dyn, Stores: p.stores, Clients: clients, Recorder: recorder, Logger: logger.Named("stores"),
	}); err != nil {
		return nil, err
	}
	if p.syncer, err = remote.NewSyncController(remote.SyncConfig{
		Local: p.local, Stores: p.stores, Upstreams: p.upstreams, Metrics: metrics, Recorder: recorder, Logger: logger.Named("sync"),
	}); err != nil {
		return nil, err
	}
	// A deleted store's upstream cache and client go with it.
	for _, inf := range p.stores.Informers() {
		if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{DeleteFunc: func(obj any) {
			if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = tomb.Obj
			}
			if u, ok := obj.(*unstructured.Unstructured); ok {
				if s, err := remote.StoreFromUnstructured(u); err == nil {
					p.upstreams.Forget(s.String())
				}
			}
		}}); err != nil {
			return nil, err
		}
	}
	namespaceLabels := func(ctx context.Context, ns string) (map[string]string, error) {
		obj, err := nsLister.Get(ns)
		if apierrors.IsNotFound(err) {
			// Created a moment ago: the informer has not seen it yet.
			live, err := kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
			if err != nil {
				return nil, err
			}
			return live.Labels, nil
		}
		if err != nil {
			return nil, err
		}
		return obj.Labels, nil
	}
	p.mutator, err = webhook.NewMutator(webhook.MutatorConfig{
		Stores:          remote.NewResolver(p.stores, p.upstreams, namespaceLabels, p.validator.Revalidate),
		Local:           p.local.WritingWith(down.admission),
		UpstreamTimeout: f.UpstreamTimeout,
		Logger:          logger.Named("mutator"),
	})
	return p, err
}

// start runs what every replica runs: the caches and the sync controller, which
// keeps the upstream caches warm and writes only while leading.
func (p *relayParts) start(ctx context.Context, goRun func(string, func(context.Context) error)) {
	p.events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: p.kube.CoreV1().Events("")})
	p.stores.Start(ctx)
	p.namespaces.Start(ctx.Done())
	goRun("managed Secrets cache", func(ctx context.Context) error { p.local.Run(ctx); return nil })
	goRun("sync controller", p.syncer.Run)
	go func() {
		<-ctx.Done()
		p.events.Shutdown()
	}()
}

// lead runs while this replica holds the lease: background writes.
func (p *relayParts) lead(ctx context.Context) error {
	p.syncer.SetLeader(true)
	defer p.syncer.SetLeader(false)
	return p.validator.Run(ctx)
}

// synced is the caches' part of /readyz.
func (p *relayParts) synced() error {
	switch {
	case !p.stores.Synced():
		return errors.New("store informers not synced")
	case !p.local.Synced():
		return errors.New("managed Secrets not synced")
	case !p.syncer.Primed():
		return errors.New("local copies not yet checked against their stores")
	case !p.upstreams.Synced():
		return errors.New("upstream caches not synced")
	}
	return nil
}
