package relay

import (
	"context"
	"encoding/json"
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/tools/cache"
)

// Pods is the resource of the pods PodUsage watches.
var Pods = schema.GroupVersionResource{Version: "v1", Resource: "pods"}

// PodUsage is a metadata cache of the pods admission relayed to (those with
// LabelRelayed), indexed by the copies their status annotation names: which live
// pods use a copy, without an API call. It keeps of each pod its name, UID,
// controller reference and those copy names; the rest of its metadata, its
// annotation text included, never reaches it.
type PodUsage struct {
	informer cache.SharedIndexInformer
	handled  cache.ResourceEventHandlerRegistration
	// users finds the pods whose status names a copy (namespace/name). An informer
	// index would keep a set for each copy, most of them of one pod: at 10,000
	// copies, 3-4 MB of the fleet measurement's live heap.
	users *KeyIndex
}

// NewPodUsage returns a cache that reads through client.
func NewPodUsage(client metadata.Interface) *PodUsage {
	inf := metadatainformer.NewFilteredMetadataInformer(client, Pods, metav1.NamespaceAll, 0, cache.Indexers{},
		func(o *metav1.ListOptions) { o.LabelSelector = LabelRelayed + "=true" }).Informer()
	_ = inf.SetTransform(slimPod) // cannot fail before the informer runs
	u := &PodUsage{informer: inf, users: NewKeyIndex()}
	// Cannot fail before the informer runs either.
	u.handled, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { u.index(nil, obj) },
		UpdateFunc: u.index,
		DeleteFunc: func(obj any) { u.index(obj, nil) },
	})
	return u
}

// index keeps users in step with a pod that was old and is now obj (either nil).
func (u *PodUsage) index(old, obj any) {
	before, now := usingPodOf(old), usingPodOf(obj)
	p := now
	if p == nil {
		p = before
	}
	if p == nil {
		return
	}
	u.users.Set(p.namespace+"/"+p.name, before.copyKeys(), now.copyKeys())
}

// usingPodOf is the pod of an informer's object or tombstone, or nil.
func usingPodOf(obj any) *usingPod {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	p, _ := obj.(*usingPod)
	return p
}

// Run runs the informer until ctx ends.
func (u *PodUsage) Run(ctx context.Context) { u.informer.RunWithContext(ctx) }

// Synced reports whether the first list is in and indexed.
func (u *PodUsage) Synced() bool {
	return u.informer.HasSynced() && (u.handled == nil || u.handled.HasSynced())
}

// Used reports whether a pod's status names the copy namespace/name: a pod being
// deleted too, since its containers may still read the copy.
func (u *PodUsage) Used(namespace, name string) bool {
	return len(u.pods(namespace, name)) > 0
}

// UsedByLive reports whether a pod that is not being deleted names the copy: one
// whose workload still wants it.
func (u *PodUsage) UsedByLive(namespace, name string) bool {
	for _, p := range u.pods(namespace, name) {
		if !p.terminating {
			return true
		}
	}
	return false
}

// Users returns the controller reference of each pod whose status names the copy
// namespace/name, a pod being deleted too: nil for a pod without a controller. It
// reports false when the cache cannot say yet.
func (u *PodUsage) Users(namespace, name string) ([]*metav1.OwnerReference, bool) {
	if !u.Synced() {
		return nil, false
	}
	pods := u.pods(namespace, name)
	users := make([]*metav1.OwnerReference, 0, len(pods))
	for _, p := range pods {
		users = append(users, p.controller)
	}
	return users, true
}

// pods are the cached pods whose status names the copy namespace/name.
func (u *PodUsage) pods(namespace, name string) []*usingPod {
	keys := u.users.Of(namespace + "/" + name)
	pods := make([]*usingPod, 0, len(keys))
	for _, key := range keys {
		obj, exists, err := u.informer.GetStore().GetByKey(key)
		if p, ok := obj.(*usingPod); ok && exists && err == nil && slices.Contains(p.copies, name) {
			pods = append(pods, p) // the cache has it, and it still names the copy
		}
	}
	return pods
}

// usingPod is what the cache keeps of a relayed pod.
type usingPod struct {
	namespace, name string
	uid             types.UID
	resourceVersion string
	// copies are the local Secrets its status annotation names, sorted.
	copies []string
	// terminating is set once the pod is being deleted.
	terminating bool
	// controller is the pod's controller reference: its kind, name and UID.
	controller *metav1.OwnerReference
}

// GetObjectMeta gives the informer the pod's key and version.
func (p *usingPod) GetObjectMeta() metav1.Object {
	return &metav1.ObjectMeta{Namespace: p.namespace, Name: p.name, UID: p.uid, ResourceVersion: p.resourceVersion}
}

// copyKeys are the namespace/name of each copy the pod names; none for nil.
func (p *usingPod) copyKeys() []string {
	if p == nil {
		return nil
	}
	keys := make([]string, len(p.copies))
	for i, c := range p.copies {
		keys[i] = p.namespace + "/" + c
	}
	return keys
}

// slimPod is the cache's transform. A status annotation that does not parse names
// no copy: only admission writes it, and it writes JSON.
func slimPod(obj any) (any, error) {
	m, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok {
		return obj, nil // a tombstone, or a pod already slimmed
	}
	p := &usingPod{namespace: m.Namespace, name: m.Name, uid: m.UID, resourceVersion: m.ResourceVersion,
		terminating: m.DeletionTimestamp != nil}
	if ref := metav1.GetControllerOf(m); ref != nil {
		p.controller = &metav1.OwnerReference{APIVersion: ref.APIVersion, Kind: ref.Kind, Name: ref.Name, UID: ref.UID}
	}
	var status map[string]string
	if err := json.Unmarshal([]byte(m.Annotations[AnnotationStatus]), &status); err == nil {
		for name := range status {
			p.copies = append(p.copies, name)
		}
		slices.Sort(p.copies)
	}
	return p, nil
}
