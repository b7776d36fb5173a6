package controllers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/secret-relay/secret-relay/relay"
)

// Restart pacing (contract §6, "Restart on change"; README, "Restarts").
const (
	// RestartQuiet is how long a restart waits after the first change of a
	// workload's copies, so that one upstream change that reaches several of its
	// copies gives one restart.
	RestartQuiet = 2 * time.Second
	// RestartMinInterval is the least time between two restarts of one workload,
	// by the restarted-at annotation on its template: changes meanwhile make one
	// restart when it is up. An upstream that changes every second rolls a
	// workload once a minute at most.
	RestartMinInterval = time.Minute
)

// restartable are the workload kinds a restart rolls, by their pod template.
var restartable = []schema.GroupKind{
	{Group: "apps", Kind: "Deployment"}, {Group: "apps", Kind: "StatefulSet"}, {Group: "apps", Kind: "DaemonSet"},
}

// RestartConfig configures a Restarter.
type RestartConfig struct {
	// Copies is the informer of managed copies, whose data changes it follows.
	Copies cache.SharedIndexInformer
	// Client reads workloads and patches their templates.
	Client   kubernetes.Interface
	Recorder record.EventRecorder
	Metrics  *Metrics
	Logger   *zap.Logger
	// Quiet and MinInterval pace restarts; RestartQuiet and RestartMinInterval
	// unless set (tests shorten them).
	Quiet, MinInterval time.Duration
	// Now is the clock.
	Now func() time.Time
}

// workloadKey names one workload whose copies changed.
type workloadKey struct {
	namespace string
	ref       metav1.OwnerReference
}

// Restarter rolls the workloads that ask for it (restart-on-change on their pod
// template) when a copy they own changes data, on the leader, one term at a time.
// A change is a copy whose data changed while its source did not: a copy that
// follows a new declaration belongs to a workload already rolling out, and a
// change of metadata alone, a new token over the same data included (a new token
// key re-annotates every copy), is no change. Changes seen in one term are
// forgotten with it.
type Restarter struct {
	cfg   RestartConfig
	queue workqueue.TypedDelayingInterface[workloadKey]
	reg   cache.ResourceEventHandlerRegistration

	mu sync.Mutex
	// changed holds, per workload waiting for its restart, the copies that changed.
	changed map[workloadKey][]string
}

// NewRestarter returns a restarter for one leadership term, following cfg.Copies
// from now on.
func NewRestarter(cfg RestartConfig) (*Restarter, error) {
	if cfg.Copies == nil || cfg.Client == nil || cfg.Recorder == nil {
		return nil, errors.New("invalid configuration: copies, client and recorder are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Quiet <= 0 {
		cfg.Quiet = RestartQuiet
	}
	if cfg.MinInterval <= 0 {
		cfg.MinInterval = RestartMinInterval
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	r := &Restarter{cfg: cfg, queue: workqueue.NewTypedDelayingQueue[workloadKey](), changed: map[workloadKey][]string{}}
	var err error
	r.reg, err = cfg.Copies.AddEventHandler(cache.ResourceEventHandlerFuncs{UpdateFunc: r.copyChanged})
	if err != nil {
		return nil, fmt.Errorf("could not watch managed Secrets: %w", err)
	}
	return r, nil
}

// copyChanged queues a restart of each restartable owner of a copy whose data
// changed.
func (r *Restarter) copyChanged(oldObj, newObj any) {
	old, ok1 := relay.SecretOf(oldObj)
	cur, ok2 := relay.SecretOf(newObj)
	if !ok1 || !ok2 || relay.SameData(old, cur) || old.Annotations[relay.AnnotationSource] != cur.Annotations[relay.AnnotationSource] {
		return
	}
	for _, o := range cur.OwnerReferences {
		if !slices.Contains(restartable, relay.GroupKindOf(o)) {
			continue
		}
		key := workloadKey{namespace: cur.Namespace, ref: metav1.OwnerReference{APIVersion: o.APIVersion, Kind: o.Kind, Name: o.Name, UID: o.UID}}
		r.mu.Lock()
		if !slices.Contains(r.changed[key], cur.Name) {
			r.changed[key] = append(r.changed[key], cur.Name)
		}
		r.mu.Unlock()
		// A key already waiting keeps its earlier time: the first change starts
		// the quiet period, and those after it join that restart.
		r.queue.AddAfter(key, r.cfg.Quiet)
	}
}

// Run restarts workloads until ctx ends, then stops following the copies.
func (r *Restarter) Run(ctx context.Context) error {
	go func() {
		<-ctx.Done()
		r.queue.ShutDown()
	}()
	defer func() { _ = r.cfg.Copies.RemoveEventHandler(r.reg) }()
	for {
		key, quit := r.queue.Get()
		if quit {
			return nil
		}
		if wait := r.restart(ctx, key); wait > 0 {
			r.queue.AddAfter(key, wait)
		}
		r.queue.Done(key)
	}
}

// restart rolls one workload, if its template asks for it, and returns how long
// to wait when its last restart was too recent (0 when done).
func (r *Restarter) restart(ctx context.Context, key workloadKey) time.Duration {
	what := key.ref.Kind + "/" + key.ref.Name
	template, err := relay.TemplateReader{Client: r.cfg.Client}.TemplateOf(ctx, key.namespace, key.ref)
	switch {
	case err != nil:
		r.cfg.Logger.Warn("could not read a workload whose copies changed", zap.String("namespace", key.namespace),
			zap.String("workload", what), zap.Error(err))
		return r.cfg.Quiet // tried again, with the copies it holds
	case template == nil || template.Annotations[relay.AnnotationRestartOnChange] != "true":
		r.take(key)
		return 0
	}
	now := r.cfg.Now()
	if last, err := time.Parse(time.RFC3339, template.Annotations[relay.AnnotationRestartedAt]); err == nil {
		if wait := last.Add(r.cfg.MinInterval).Sub(now); wait > 0 {
			return wait
		}
	}
	copies := r.take(key)
	err = r.patch(ctx, key, now)
	switch {
	case apierrors.IsForbidden(err):
		for _, name := range copies {
			r.cfg.Recorder.Eventf(&corev1.ObjectReference{APIVersion: "v1", Kind: "Secret", Namespace: key.namespace, Name: name},
				corev1.EventTypeWarning, "RestartForbidden",
				"%s asks for restart-on-change, but secret-relay may not patch %ss: install the chart with restartOnChange.enabled=true, or add the kustomize component manifests/components/restart-on-change",
				what, strings.ToLower(key.ref.Kind))
		}
		r.cfg.Logger.Warn("may not restart a workload that asks for it", zap.String("namespace", key.namespace), zap.String("workload", what))
	case apierrors.IsNotFound(err), apierrors.IsInvalid(err): // gone, or another with its name
	case err != nil:
		r.cfg.Logger.Warn("could not restart a workload", zap.String("namespace", key.namespace), zap.String("workload", what), zap.Error(err))
		r.give(key, copies)
		return r.cfg.Quiet
	default:
		r.cfg.Metrics.restarted(key.ref.Kind)
		r.cfg.Recorder.Eventf(&corev1.ObjectReference{APIVersion: key.ref.APIVersion, Kind: key.ref.Kind, Namespace: key.namespace, Name: key.ref.Name, UID: key.ref.UID},
			corev1.EventTypeNormal, "Restarted", "secret-relay restarted %s: its copies %s changed", what, strings.Join(copies, ", "))
		r.cfg.Logger.Info("restarted a workload", zap.String("namespace", key.namespace), zap.String("workload", what), zap.Strings("copies", copies))
	}
	return 0
}

// patch sets the restarted-at annotation on the workload's pod template, only on
// the object of key's UID.
func (r *Restarter) patch(ctx context.Context, key workloadKey, now time.Time) error {
	body, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"uid": key.ref.UID},
		"spec": map[string]any{"template": map[string]any{"metadata": map[string]any{"annotations": map[string]string{
			relay.AnnotationRestartedAt: now.UTC().Format(time.RFC3339),
		}}}},
	})
	if err != nil {
		return err
	}
	apps, opts := r.cfg.Client.AppsV1(), metav1.PatchOptions{FieldManager: relay.ManagedByValue}
	switch key.ref.Kind {
	case "Deployment":
		_, err = apps.Deployments(key.namespace).Patch(ctx, key.ref.Name, types.MergePatchType, body, opts)
	case "StatefulSet":
		_, err = apps.StatefulSets(key.namespace).Patch(ctx, key.ref.Name, types.MergePatchType, body, opts)
	case "DaemonSet":
		_, err = apps.DaemonSets(key.namespace).Patch(ctx, key.ref.Name, types.MergePatchType, body, opts)
	}
	return err
}

// take returns and forgets the copies that changed for key.
func (r *Restarter) take(key workloadKey) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	copies := r.changed[key]
	delete(r.changed, key)
	slices.Sort(copies)
	return copies
}

// give puts back the copies of a restart that failed, for the next try.
func (r *Restarter) give(key workloadKey, copies []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range copies {
		if !slices.Contains(r.changed[key], c) {
			r.changed[key] = append(r.changed[key], c)
		}
	}
}
