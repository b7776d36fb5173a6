package relay

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
)

// Contract §5, "Rollouts": a managed copy from another source follows the newest
// declaration of the one workload that uses it. Three things make that safe against
// a tenant who may create pods but not write Secrets:
//   - the copy's owners and the live pods that use it all belong to the pod's
//     workload (MayFollow), so no other workload's copy changes under it;
//   - the workload exists, and its pod template declares what the pod asks for
//     (Declares): a pod whose ownerReference was forged, or that an old revision
//     made, is not the workload's newest declaration;
//   - a bare pod never moves a copy. It is a workload of its own, and the pods of
//     other bare admissions still in flight are in no cache yet: nothing durable
//     says that no other pod uses the copy.

// Templates reads, downstream, the pod template of the workload a reference names.
type Templates interface {
	// TemplateOf returns the pod template of the object ref names in namespace, or
	// nil when no object of that name has ref's UID. A kind it cannot read is an
	// error.
	TemplateOf(ctx context.Context, namespace string, ref metav1.OwnerReference) (*corev1.PodTemplateSpec, error)
}

// MayFollow reports whether the managed copy existing may follow a new declaration
// of workload w: every owner it has is w, which exists, and every pod that uses it
// (users, one per pod, by its workload) belongs to w. A pod without a controller
// is a workload of its own, and never the same as the pod being admitted; such a
// pod never moves a copy.
func MayFollow(w Workload, existing *corev1.Secret, users []Workload) bool {
	if !w.Owns || w.Ref.UID == "" {
		return false
	}
	for _, o := range existing.OwnerReferences {
		if o.UID != w.Ref.UID {
			return false
		}
	}
	for _, u := range users {
		if u.Ref.UID == "" || u.Ref.UID != w.Ref.UID {
			return false
		}
	}
	return true
}

// Declares reports whether the pod asks for what its workload's template declares:
// the same secret-relay annotations, byte for byte.
func Declares(template *corev1.PodTemplateSpec, pod *corev1.Pod) bool {
	for _, key := range []string{AnnotationSecrets, AnnotationStore} {
		if template.Annotations[key] != pod.Annotations[key] {
			return false
		}
	}
	return true
}

// FollowWarning is the admission warning of a copy that follows a new declaration:
// it names the copy and the source it was relayed from.
func FollowWarning(name, oldSource string) string {
	return fmt.Sprintf("secret-relay: Secret %q follows the workload's new declaration; it was relayed from %s", name, oldSource)
}

// TemplateReader reads workloads' pod templates through the typed API, one GET each:
// only a copy that changes source needs one.
type TemplateReader struct {
	Client kubernetes.Interface
}

var _ Templates = TemplateReader{}

// TemplateOf implements Templates for Deployments, StatefulSets, DaemonSets,
// ReplicaSets, Jobs and CronJobs.
func (r TemplateReader) TemplateOf(ctx context.Context, namespace string, ref metav1.OwnerReference) (*corev1.PodTemplateSpec, error) {
	apps, batch := r.Client.AppsV1(), r.Client.BatchV1()
	switch gk := GroupKindOf(ref); gk {
	case schema.GroupKind{Group: "apps", Kind: "Deployment"}:
		return templateOf(ctx, apps.Deployments(namespace).Get, ref, func(o *appsv1.Deployment) *corev1.PodTemplateSpec { return &o.Spec.Template })
	case schema.GroupKind{Group: "apps", Kind: "StatefulSet"}:
		return templateOf(ctx, apps.StatefulSets(namespace).Get, ref, func(o *appsv1.StatefulSet) *corev1.PodTemplateSpec { return &o.Spec.Template })
	case schema.GroupKind{Group: "apps", Kind: "DaemonSet"}:
		return templateOf(ctx, apps.DaemonSets(namespace).Get, ref, func(o *appsv1.DaemonSet) *corev1.PodTemplateSpec { return &o.Spec.Template })
	case schema.GroupKind{Group: "apps", Kind: "ReplicaSet"}:
		return templateOf(ctx, apps.ReplicaSets(namespace).Get, ref, func(o *appsv1.ReplicaSet) *corev1.PodTemplateSpec { return &o.Spec.Template })
	case schema.GroupKind{Group: "batch", Kind: "Job"}:
		return templateOf(ctx, batch.Jobs(namespace).Get, ref, func(o *batchv1.Job) *corev1.PodTemplateSpec { return &o.Spec.Template })
	case schema.GroupKind{Group: "batch", Kind: "CronJob"}:
		return templateOf(ctx, batch.CronJobs(namespace).Get, ref, func(o *batchv1.CronJob) *corev1.PodTemplateSpec { return &o.Spec.JobTemplate.Spec.Template })
	default:
		return nil, fmt.Errorf("secret-relay cannot read the pod template of a %s", gk)
	}
}

// templateOf reads the object ref names with get and returns its pod template, or
// nil when it does not exist with ref's UID.
func templateOf[T metav1.Object](ctx context.Context, get func(context.Context, string, metav1.GetOptions) (T, error),
	ref metav1.OwnerReference, template func(T) *corev1.PodTemplateSpec) (*corev1.PodTemplateSpec, error) {
	o, err := get(ctx, ref.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, err
	case o.GetUID() != ref.UID:
		return nil, nil
	}
	return template(o), nil
}
