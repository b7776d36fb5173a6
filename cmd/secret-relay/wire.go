package main

import (
	"context"
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/secret-relay/secret-relay/api/client/clientset/versioned"
	"github.com/secret-relay/secret-relay/controllers"
	"github.com/secret-relay/secret-relay/relay"
	"github.com/secret-relay/secret-relay/remote"
	"github.com/secret-relay/secret-relay/webhook"
)

var _ webhook.StoreResolver = (*remote.Resolver)(nil)

// relayParts are secret-relay's moving parts, wired together: the caches every
// replica keeps, the mutator that admission calls, and the two controllers.
type relayParts struct {
	kube      kubernetes.Interface
	stores    *remote.StoreCache
	local     *relay.ManagedSecrets
	workloads *relay.ControllerCache
	pods      *relay.PodUsage
	// sweeper and restarter make the orphan sweeper and the restarter of one
	// leadership term.
	sweeper    func() (*controllers.OrphanSweeper, error)
	restarter  func() (*controllers.Restarter, error)
	tokens     *relay.KeyedTokens
	namespaces informers.SharedInformerFactory
	validator  *controllers.StoreValidator
	syncer     *controllers.SyncController
	mutator    *webhook.Mutator
	events     record.EventBroadcaster
	nsSynced   cache.InformerSynced
}

// downstream are the downstream clients: kube and stores for caches and background
// work, admission for the writes made while a review waits, and meta for the
// controllers above pods.
type downstream struct {
	kube, admission kubernetes.Interface
	stores          versioned.Interface
	meta            metadata.Interface
}

func wire(ctx context.Context, f Flags, down downstream, reg prometheus.Registerer, logger *zap.Logger) (*relayParts, error) {
	kube := down.kube
	p := &relayParts{kube: kube}
	metrics := remote.NewMetrics(reg)
	p.events = record.NewBroadcaster(record.WithContext(ctx))
	recorder := p.events.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "secret-relay"})

	p.stores = remote.NewStoreCache(down.stores, f.StoreValidationInterval)
	controllerMetrics := controllers.NewMetrics(reg, p.stores)
	p.local = relay.NewManagedSecrets(kube)
	p.workloads = relay.NewControllerCache(down.meta)
	p.pods = relay.NewPodUsage(down.meta)
	refs := remote.NewRefCache(ctx, kube)
	clients := remote.NewClients(refs, metrics)
	// Tokens are requested while a review waits for its store's client: at
	// admission's limits.
	tokens := remote.NewTokens(down.admission)
	tokens.RenewAfter(f.TokenRenewal)
	clients.MintTokensWith(tokens)
	upstreams := remote.NewUpstreams(ctx, clients, metrics)
	p.namespaces = informers.NewSharedInformerFactoryWithOptions(kube, 0)
	nsInformer := p.namespaces.Core().V1().Namespaces()
	p.nsSynced = nsInformer.Informer().HasSynced
	authz := remote.NewAuthorizer(p.stores, remote.NamespacesFrom(nsInformer.Lister(), kube))
	p.tokens = relay.NewKeyedTokens(kube, f.Namespace, logger.Named("tokens"), func() { p.syncer.ResyncAll() })

	var err error
	if p.validator, err = controllers.NewStoreValidator(controllers.StoreValidatorConfig{
		Stores: p.stores, Clients: clients, Recorder: recorder, Logger: logger.Named("stores"),
		Interval: f.StoreValidationInterval,
	}); err != nil {
		return nil, err
	}
	if p.syncer, err = controllers.NewSyncController(controllers.SyncConfig{
		Local: p.local, Stores: p.stores, Authorizer: authz, Upstreams: upstreams, Tokens: p.tokens, Pods: p.pods, Owners: p.workloads,
		Metrics: controllerMetrics, Recorder: recorder, Describe: webhook.Describe, Logger: logger.Named("sync"),
		WaitFor: []cache.InformerSynced{p.nsSynced, p.tokens.Loaded},
	}); err != nil {
		return nil, err
	}
	// A store's change, or a change of what it references, reaches its status and
	// its copies; a deleted store's upstream cache and client go with it.
	if err := p.stores.Watch(refs, remote.StoreHandlers{
		Changed: func(s *remote.Store) { p.validator.Revalidate(s); p.syncer.StoreChanged(s) },
		Deleted: func(s *remote.Store) { upstreams.Forget(s.String()) },
	}); err != nil {
		return nil, err
	}
	p.sweeper = func() (*controllers.OrphanSweeper, error) {
		return controllers.NewOrphanSweeper(controllers.OrphanConfig{
			Copies: p.local.Informer(), Pods: p.pods, Client: kube, Grace: f.OrphanGracePeriod,
			Recorder: recorder, Metrics: controllerMetrics, Logger: logger.Named("orphans"),
		})
	}
	p.restarter = func() (*controllers.Restarter, error) {
		return controllers.NewRestarter(controllers.RestartConfig{
			Copies: p.local.Informer(), Client: kube, Recorder: recorder, Metrics: controllerMetrics, Logger: logger.Named("restarts"),
		})
	}
	upstreams.OnHealth(p.validator.RevalidateSoon)
	if err := p.syncer.WatchNamespaces(nsInformer.Informer()); err != nil {
		return nil, err
	}
	p.mutator, err = webhook.NewMutator(webhook.MutatorConfig{
		Stores:             remote.NewResolver(authz, upstreams),
		Local:              p.local.WritingWith(down.admission),
		Tokens:             p.tokens,
		Workloads:          p.workloads,
		Users:              p.pods,
		Templates:          relay.TemplateReader{Client: down.admission},
		Recorder:           recorder,
		UnservedNamespaces: append([]string{metav1.NamespaceSystem, f.Namespace}, f.ExcludedNamespaces...),
		UpstreamTimeout:    f.UpstreamTimeout,
		Logger:             logger.Named("mutator"),
	})
	return p, err
}

// start runs what every replica runs: the caches and the sync controller, which
// keeps the upstream caches warm and writes only while leading.
func (p *relayParts) start(ctx context.Context, goRun func(string, func(context.Context) error)) {
	p.events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: p.kube.CoreV1().Events("")})
	p.stores.Start(ctx)
	p.namespaces.Start(ctx.Done())
	goRun("token key", func(ctx context.Context) error { p.tokens.Run(ctx); return nil })
	goRun("managed Secrets cache", func(ctx context.Context) error { p.local.Run(ctx); return nil })
	goRun("controllers cache", func(ctx context.Context) error { p.workloads.Run(ctx); return nil })
	goRun("relayed pods cache", func(ctx context.Context) error { p.pods.Run(ctx); return nil })
	goRun("sync controller", p.syncer.Run)
	go func() {
		<-ctx.Done()
		p.events.Shutdown()
	}()
}

// lead runs one leadership term: background writes, until ctx ends.
func (p *relayParts) lead(ctx context.Context) error {
	p.syncer.SetLeader(true)
	defer p.syncer.SetLeader(false)
	sweeper, err := p.sweeper()
	if err != nil {
		return err
	}
	restarter, err := p.restarter()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	swept, restarted := make(chan error, 1), make(chan error, 1)
	go func() { swept <- sweeper.Run(ctx) }()
	go func() { restarted <- restarter.Run(ctx) }()
	err = p.validator.Run(ctx)
	cancel()
	return errors.Join(err, <-swept, <-restarted)
}

// synced is the caches' part of /readyz. It depends on the downstream cluster
// alone: no upstream, however broken, makes a replica unready (contract §2).
func (p *relayParts) synced() error {
	switch {
	case !p.stores.Synced():
		return errors.New("store informers not synced")
	case !p.local.Synced():
		return errors.New("managed Secrets not synced")
	case !p.nsSynced():
		return errors.New("namespaces not synced")
	case !p.tokens.Loaded():
		return errors.New("token key not loaded")
	case !p.syncer.Primed():
		return errors.New("local copies not yet indexed")
	}
	return nil
}
