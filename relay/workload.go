package relay

import (
	"context"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
)

// Workload is the top of a pod's controller chain (contract §5, "Rollouts"): the
// Deployment of its ReplicaSet, the CronJob of its Job, or its StatefulSet,
// DaemonSet, Job or ReplicaSet. A pod without a controller is its own workload, and
// its Ref is empty.
type Workload struct {
	// Ref names the workload: API version, kind, name and UID.
	Ref metav1.OwnerReference
	// Owns is set when the workload is known to exist, so that the copies it uses
	// may carry an ownerReference to it. A reference to an object that does not
	// exist would have the garbage collector delete the copy at once, and a pod's
	// ownerReferences are whatever its creator wrote.
	Owns bool
}

// Controllers finds, downstream, the object that a pod's controller reference
// names.
type Controllers interface {
	// ControllerOf reports whether the object that ref names exists in namespace
	// with ref's UID, and returns that object's own controller reference, if any.
	ControllerOf(ctx context.Context, namespace string, ref metav1.OwnerReference) (parent *metav1.OwnerReference, exists bool, err error)
}

// Controller kinds whose objects secret-relay can check: a pod's controller of
// another kind is named but never made an owner.
var (
	ReplicaSets  = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "replicasets"}
	StatefulSets = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "statefulsets"}
	DaemonSets   = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "daemonsets"}
	Jobs         = schema.GroupVersionResource{Group: "batch", Version: "v1", Resource: "jobs"}

	// ControllerResources are the resources of the controller kinds secret-relay checks.
	ControllerResources = map[schema.GroupKind]schema.GroupVersionResource{
		{Group: "apps", Kind: "ReplicaSet"}:  ReplicaSets,
		{Group: "apps", Kind: "StatefulSet"}: StatefulSets,
		{Group: "apps", Kind: "DaemonSet"}:   DaemonSets,
		{Group: "batch", Kind: "Job"}:        Jobs,
	}
)

// climbs are the kinds whose own controller, when they have one, is the workload: a
// Deployment above its ReplicaSets, a CronJob above its Jobs.
var climbs = map[schema.GroupKind]bool{{Group: "apps", Kind: "ReplicaSet"}: true, {Group: "batch", Kind: "Job"}: true}

// GroupKindOf returns the group and kind that an owner reference names.
func GroupKindOf(ref metav1.OwnerReference) schema.GroupKind {
	gv, err := schema.ParseGroupVersion(ref.APIVersion)
	if err != nil {
		return schema.GroupKind{Kind: ref.Kind}
	}
	return schema.GroupKind{Group: gv.Group, Kind: ref.Kind}
}

// WorkloadOf works out the workload of a pod being admitted in namespace. A
// controller that does not exist, or whose kind secret-relay cannot check, is the
// workload but owns nothing.
func WorkloadOf(ctx context.Context, namespace string, pod *corev1.Pod, c Controllers) (Workload, error) {
	return WorkloadAbove(ctx, namespace, metav1.GetControllerOf(pod), c)
}

// WorkloadAbove works out the workload of a pod whose controller reference is ref
// (nil for a pod without one), as WorkloadOf does.
func WorkloadAbove(ctx context.Context, namespace string, ref *metav1.OwnerReference, c Controllers) (Workload, error) {
	if ref == nil {
		return Workload{}, nil
	}
	gk := GroupKindOf(*ref)
	if _, ok := ControllerResources[gk]; !ok {
		return Workload{Ref: ownerRef(*ref)}, nil
	}
	parent, exists, err := c.ControllerOf(ctx, namespace, *ref)
	switch {
	case err != nil:
		return Workload{Ref: ownerRef(*ref)}, err
	case !exists:
		return Workload{Ref: ownerRef(*ref)}, nil
	case parent != nil && climbs[gk]:
		// The ReplicaSet exists and names its Deployment, which its controller
		// wrote; an ownerReference to a Deployment since deleted is one the garbage
		// collector removes with the ReplicaSet.
		return Workload{Ref: ownerRef(*parent), Owns: true}, nil
	}
	return Workload{Ref: ownerRef(*ref), Owns: true}, nil
}

// ownerRef is a copy's reference to its workload: never its controller, and never
// blocking the workload's deletion.
func ownerRef(r metav1.OwnerReference) metav1.OwnerReference {
	return metav1.OwnerReference{APIVersion: r.APIVersion, Kind: r.Kind, Name: r.Name, UID: r.UID,
		Controller: ptr.To(false), BlockOwnerDeletion: ptr.To(false)}
}

// Own makes the workload an owner of desired, when it may own copies.
func (w Workload) Own(desired *corev1.Secret) {
	if w.Owns {
		desired.OwnerReferences = []metav1.OwnerReference{w.Ref}
	}
}

// missingOwners returns the references of want that have lacks, by UID.
func missingOwners(have, want []metav1.OwnerReference) []metav1.OwnerReference {
	var missing []metav1.OwnerReference
	for _, w := range want {
		if !slices.ContainsFunc(have, func(h metav1.OwnerReference) bool { return h.UID == w.UID }) {
			missing = append(missing, w)
		}
	}
	return missing
}

// mergedOwners is have with the references of want it lacks added.
func mergedOwners(have, want []metav1.OwnerReference) []metav1.OwnerReference {
	missing := missingOwners(have, want)
	if len(missing) == 0 {
		return have
	}
	return append(slices.Clip(have), missing...)
}
