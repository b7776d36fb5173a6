package webhook

import (
	"context"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/secret-relay/secret-relay/relay"
)

// takeover is a managed copy's move from its old source to the pod's declaration,
// approved for the copy as the admission found it (contract §5, "Rollouts").
type takeover struct {
	// from is the copy's source annotation, as found.
	from string
	// old names that source for people: its canonical text, or that it was unreadable.
	old      string
	workload relay.Workload
	// users are the workloads of the pods that used the copy.
	users []relay.Workload
}

// takeover decides whether existing, a managed copy from another source, may follow
// the declaration of pod, whose workload is w. It returns nil when it may not, or
// when it cannot tell in time: the pod is then denied as before, and its controller
// retries.
func (m *Mutator) takeover(ctx context.Context, ns string, pod *corev1.Pod, w relay.Workload, existing *corev1.Secret) *takeover {
	if m.cfg.Users == nil || m.cfg.Templates == nil || m.cfg.Workloads == nil {
		return nil
	}
	refs, ok := m.cfg.Users.Users(ns, existing.Name)
	if !ok {
		return nil
	}
	users := make([]relay.Workload, 0, len(refs))
	above := map[types.UID]relay.Workload{}
	for _, ref := range refs {
		if ref == nil {
			users = append(users, relay.Workload{}) // a pod without a controller
			continue
		}
		u, ok := above[ref.UID]
		if !ok {
			var err error
			if u, err = relay.WorkloadAbove(ctx, ns, ref, m.cfg.Workloads); err != nil {
				m.cfg.Logger.Warn("could not read the controller of a pod that uses the copy; it keeps its source",
					zap.String("namespace", ns), zap.String("secret", existing.Name), zap.Error(err))
				return nil
			}
			above[ref.UID] = u
		}
		users = append(users, u)
	}
	if !relay.MayFollow(w, existing, users) {
		return nil
	}
	if w.Ref.UID != "" {
		template, err := m.cfg.Templates.TemplateOf(ctx, ns, w.Ref)
		if err != nil {
			m.cfg.Logger.Warn("could not read the workload's pod template; the copy keeps its source",
				zap.String("namespace", ns), zap.String("workload", w.Ref.Kind+"/"+w.Ref.Name), zap.Error(err))
			return nil
		}
		if template == nil || !relay.Declares(template, pod) {
			return nil // a forged controller reference, or an old revision's pod
		}
	}
	t := &takeover{from: existing.Annotations[relay.AnnotationSource], workload: w, users: users,
		old: "a source its " + relay.AnnotationSource + " annotation does not say"}
	if src, err := relay.ParseSource(t.from); err == nil {
		t.old = src.String()
	}
	return t
}

// stillAdmits reports whether the copy, read again after a conflict, is still the
// one t approved taking over: from the same source, with owners and users still
// the pod's workload alone.
func (t *takeover) stillAdmits(latest *corev1.Secret) bool {
	return t != nil && latest.Annotations[relay.AnnotationSource] == t.from && relay.MayFollow(t.workload, latest, t.users)
}

// String keys shared writes: a takeover is shared only with the same takeover.
func (t *takeover) String() string {
	if t == nil {
		return ""
	}
	return string(t.workload.Ref.UID) + "\x00" + t.from
}

// recordTakeover records, on the copy and on the pod's controller, that the copy
// follows a new declaration, naming the old source.
func (m *Mutator) recordTakeover(ns string, pod *corev1.Pod, name string, t *takeover) {
	if t == nil || m.cfg.Recorder == nil {
		return
	}
	by := "the pod"
	if t.workload.Ref.Name != "" {
		by = t.workload.Ref.Kind + "/" + t.workload.Ref.Name
	}
	const reason = "SourceChanged"
	const format = "Secret %q follows the new declaration of %s; it was relayed from %s"
	m.cfg.Recorder.Eventf(&corev1.ObjectReference{APIVersion: "v1", Kind: "Secret", Namespace: ns, Name: name},
		corev1.EventTypeNormal, reason, format, name, by, t.old)
	if c := metav1.GetControllerOf(pod); c != nil {
		m.cfg.Recorder.Eventf(&corev1.ObjectReference{APIVersion: c.APIVersion, Kind: c.Kind, Namespace: ns, Name: c.Name, UID: c.UID},
			corev1.EventTypeNormal, reason, format, name, by, t.old)
	}
}
