package cluster

import (
	"context"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// WebhookName is the webhook's name in the MutatingWebhookConfiguration, as the
// contract has it.
const WebhookName = "pods.secret-relay.io"

// RegisterPodWebhook registers a MutatingWebhookConfiguration named name that sends
// pod CREATE reviews to url, trusting caPEM. It mirrors the shipped configuration
// (contract §7), with a URL in place of the in-cluster Service, and is deleted when
// the test ends.
func (cp *ControlPlane) RegisterPodWebhook(t testing.TB, name, url string, caPEM []byte) {
	t.Helper()
	cfg := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    WebhookName,
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: caPEM},
			AdmissionReviewVersions: []string{"v1"},
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNoneOnDryRun),
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			TimeoutSeconds:          ptr.To[int32](5),
			ReinvocationPolicy:      ptr.To(admissionregistrationv1.IfNeededReinvocationPolicy),
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule: admissionregistrationv1.Rule{
					APIGroups:   []string{""},
					APIVersions: []string{"v1"},
					Resources:   []string{"pods"},
					Scope:       ptr.To(admissionregistrationv1.NamespacedScope),
				},
			}},
			MatchConditions: []admissionregistrationv1.MatchCondition{{
				Name:       "has-secret-relay-secrets",
				Expression: `has(object.metadata.annotations) && "secret-relay.io/secrets" in object.metadata.annotations`,
			}},
			NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
				Key:      "kubernetes.io/metadata.name",
				Operator: metav1.LabelSelectorOpNotIn,
				Values:   []string{"kube-system", "secret-relay"},
			}}},
		}},
	}
	webhooks := cp.Client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	if _, err := webhooks.Create(Context(t), cfg, metav1.CreateOptions{}); err != nil {
		t.Fatalf("could not register webhook %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		// The control plane may already be gone; that is fine.
		_ = webhooks.Delete(ctx, name, metav1.DeleteOptions{})
	})
}

// ProbeAnnotation marks the pods WaitForWebhook sends; a webhook under test may
// recognise them.
const ProbeAnnotation = "secret-relay.io/secrets"

// WaitForWebhook waits until the API server calls a freshly registered pod webhook.
// The API server picks up webhook configurations from an informer, so the first pods
// after a registration may slip past it. It sends server-side dry-run pods carrying
// ProbeAnnotation to namespace ns until called reports true.
func (cp *ControlPlane) WaitForWebhook(t testing.TB, ns string, called func() bool) {
	t.Helper()
	probe := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "webhook-probe-", Namespace: ns, Annotations: map[string]string{ProbeAnnotation: "[]"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "probe", Image: "probe"}}},
	}
	deadline := time.Now().Add(30 * time.Second)
	for !called() {
		if time.Now().After(deadline) {
			t.Fatalf("the %s API server did not call the webhook within 30s", cp.Name)
		}
		// The answer does not matter, only that the webhook saw the review.
		_, _ = cp.Client.CoreV1().Pods(ns).Create(Context(t), probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		time.Sleep(50 * time.Millisecond)
	}
}
