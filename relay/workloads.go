package relay

import (
	"context"
	"time"

	"golang.org/x/sync/singleflight"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/tools/cache"
)

// readTimeout bounds one shared read of a controller.
const readTimeout = 5 * time.Second

// ControllerCache is a metadata cache of the downstream ReplicaSets, StatefulSets,
// DaemonSets and Jobs, so that admission works out a pod's workload without an API
// call. It keeps of each object its name, UID and controller reference alone: a
// ReplicaSet's pod template, which a typed informer would keep for each of the ten
// revisions a Deployment retains, never reaches it.
type ControllerCache struct {
	client    metadata.Interface
	informers map[schema.GroupKind]cache.SharedIndexInformer
	// flight shares the read of an object the cache does not hold yet among the
	// admissions that ask for it meanwhile: a new ReplicaSet's pods all at once.
	flight singleflight.Group
}

var _ Controllers = (*ControllerCache)(nil)

// NewControllerCache returns a cache that reads through client.
func NewControllerCache(client metadata.Interface) *ControllerCache {
	c := &ControllerCache{client: client, informers: map[schema.GroupKind]cache.SharedIndexInformer{}}
	for gk, gvr := range ControllerResources {
		inf := metadatainformer.NewFilteredMetadataInformer(client, gvr, metav1.NamespaceAll, 0, cache.Indexers{}, nil).Informer()
		_ = inf.SetTransform(slimController) // cannot fail before the informer runs
		c.informers[gk] = inf
	}
	return c
}

// Run runs the informers until ctx ends.
func (c *ControllerCache) Run(ctx context.Context) {
	done := make(chan struct{})
	for _, inf := range c.informers {
		go func() {
			inf.RunWithContext(ctx)
			done <- struct{}{}
		}()
	}
	for range c.informers {
		<-done
	}
}

// Synced reports whether every first list is in.
func (c *ControllerCache) Synced() bool {
	for _, inf := range c.informers {
		if !inf.HasSynced() {
			return false
		}
	}
	return true
}

// ControllerOf reports whether the object ref names exists in namespace with ref's
// UID, and returns its controller reference. An object the cache does not hold, or
// holds under another UID, is read: it may be newer than the cache.
func (c *ControllerCache) ControllerOf(ctx context.Context, namespace string, ref metav1.OwnerReference) (*metav1.OwnerReference, bool, error) {
	gk := GroupKindOf(ref)
	inf, ok := c.informers[gk]
	if !ok {
		return nil, false, nil
	}
	if obj, ok, _ := inf.GetStore().GetByKey(namespace + "/" + ref.Name); ok {
		if m := obj.(*metav1.PartialObjectMetadata); m.UID == ref.UID {
			return metav1.GetControllerOf(m), true, nil
		}
	}
	gvr := ControllerResources[gk]
	ch := c.flight.DoChan(gvr.String()+"/"+namespace+"/"+ref.Name, func() (any, error) {
		// Detached from any one caller, as the upstream cache's shared reads are.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), readTimeout)
		defer cancel()
		m, err := c.client.Resource(gvr).Namespace(namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return (*metav1.PartialObjectMetadata)(nil), nil
		}
		return m, err
	})
	var res singleflight.Result
	select {
	case res = <-ch:
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
	if res.Err != nil {
		return nil, false, res.Err
	}
	m := res.Val.(*metav1.PartialObjectMetadata)
	if m == nil || m.UID != ref.UID {
		return nil, false, nil
	}
	return metav1.GetControllerOf(m), true, nil
}

// workloadResources are the resources of every kind a copy's owner can be.
var workloadResources = map[schema.GroupKind]schema.GroupVersionResource{
	{Group: "apps", Kind: "Deployment"}: {Group: "apps", Version: "v1", Resource: "deployments"},
	{Group: "batch", Kind: "CronJob"}:   {Group: "batch", Version: "v1", Resource: "cronjobs"},
}

// LiveOwners returns the references among refs whose object exists in namespace,
// with the reference's UID, and is not being deleted. It reads each one live: only
// a copy deleted by someone needs it.
func (c *ControllerCache) LiveOwners(ctx context.Context, namespace string, refs []metav1.OwnerReference) ([]metav1.OwnerReference, error) {
	var live []metav1.OwnerReference
	for _, ref := range refs {
		gk := GroupKindOf(ref)
		gvr, ok := ControllerResources[gk]
		if !ok {
			if gvr, ok = workloadResources[gk]; !ok {
				continue
			}
		}
		m, err := c.client.Resource(gvr).Namespace(namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			continue
		case err != nil:
			return nil, err
		case m.UID == ref.UID && m.DeletionTimestamp == nil:
			live = append(live, ref)
		}
	}
	return live, nil
}

// slimController is the cache's transform: an object's name, namespace, UID,
// version and controller reference.
func slimController(obj any) (any, error) {
	m, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok {
		return obj, nil // a tombstone
	}
	slim := &metav1.PartialObjectMetadata{TypeMeta: m.TypeMeta, ObjectMeta: metav1.ObjectMeta{
		Name: m.Name, Namespace: m.Namespace, UID: m.UID, ResourceVersion: m.ResourceVersion,
	}}
	if ref := metav1.GetControllerOf(m); ref != nil {
		slim.OwnerReferences = []metav1.OwnerReference{*ref}
	}
	return slim, nil
}
