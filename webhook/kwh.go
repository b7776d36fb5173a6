package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"

	kwhhttp "github.com/slok/kubewebhook/v2/pkg/http"
	kwhlog "github.com/slok/kubewebhook/v2/pkg/log"
	kwhmodel "github.com/slok/kubewebhook/v2/pkg/model"
	kwhwebhook "github.com/slok/kubewebhook/v2/pkg/webhook"
	"go.uber.org/zap"
	admissionv1 "k8s.io/api/admission/v1"
	admissionv1beta1 "k8s.io/api/admission/v1beta1"
	corev1 "k8s.io/api/core/v1"
	sigsjson "sigs.k8s.io/json"

	"github.com/secret-relay/secret-relay/relay"
)

// This is the only file that knows kubewebhook's webhook and HTTP types: it wires the
// Mutator into a handler and turns denials (DenyErrors and relay.Errors) into
// allowed=false.

// WebhookID names the webhook in kubewebhook's logs and metrics.
const WebhookID = "secret-relay-pods"

// HandlerConfig configures the admission HTTP handler.
type HandlerConfig struct {
	Mutator *Mutator
	Logger  *zap.Logger
	// Metrics records each review; nil records nothing.
	Metrics kwhwebhook.MetricsRecorder
	// Observe, when set, is told the outcome of every review: "admitted", "denied" or
	// "error".
	Observe func(result string)
}

// NewHandler returns the http.Handler for POST /mutate-pods.
func NewHandler(cfg HandlerConfig) (http.Handler, error) {
	if cfg.Mutator == nil {
		return nil, errors.New("invalid configuration: mutator is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Observe == nil {
		cfg.Observe = func(string) {}
	}
	logger := NewKubewebhookLogger(cfg.Logger)
	var wh kwhwebhook.Webhook = podWebhook{mutator: cfg.Mutator, logger: cfg.Logger}
	wh = denyDecorator{next: wh, observe: cfg.Observe}
	if cfg.Metrics != nil {
		wh = kwhwebhook.NewMeasuredWebhook(cfg.Metrics, wh)
	}
	h, err := kwhhttp.HandlerFor(kwhhttp.HandlerConfig{Webhook: wh, Logger: logger})
	if err != nil {
		return nil, err
	}
	return limitBodies(recoverBadReviews(h, cfg.Logger), MaxReviewBytes, freeReviewBytes, reviewBudgetBytes), nil
}

// recoverBadReviews answers 400 when a request makes kubewebhook panic, as an
// AdmissionReview with no request does (found by FuzzReview), instead of dropping
// the connection with a stack trace in the log.
func recoverBadReviews(next http.Handler, logger *zap.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if p := recover(); p != nil {
				logger.Error("malformed admission review", zap.Any("panic", p))
				http.Error(w, "secret-relay: malformed AdmissionReview", http.StatusBadRequest)
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// podWebhook is the mutating webhook: it decodes the pod, relays it, and answers
// with the JSON patch podPatch builds. It stands in for kubewebhook's mutating
// webhook, which encodes the mutated pod and diffs it against the review's JSON:
// a quarter of a warm review, for a patch secret-relay knows already.
type podWebhook struct {
	mutator *Mutator
	logger  *zap.Logger
}

func (podWebhook) ID() string                 { return WebhookID }
func (podWebhook) Kind() kwhmodel.WebhookKind { return kwhmodel.WebhookKindMutating }

func (w podWebhook) Review(ctx context.Context, ar kwhmodel.AdmissionReview) (kwhmodel.AdmissionResponse, error) {
	pod := &corev1.Pod{}
	// Case-sensitive, as the API server and kubewebhook decode.
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(ar.NewObjectRaw, pod); err != nil {
		return nil, Denyf("the review's object is not a pod: %v", err)
	}
	before := pod.DeepCopy()
	res, err := w.mutator.Relay(ctx, ar.Namespace, pod, ar.DryRun)
	if err != nil {
		return nil, err
	}
	if len(res.Written) > 0 {
		w.logger.Debug("relayed", zap.String("namespace", ar.Namespace), zap.String("pod", pod.Name+pod.GenerateName),
			zap.Strings("written", res.Written))
	}
	patch, err := podPatch(before, pod)
	if err != nil {
		return nil, fmt.Errorf("could not make the pod's patch: %w", err)
	}
	return &kwhmodel.MutatingAdmissionResponse{ID: ar.ID, JSONPatchPatch: patch, Warnings: res.Warnings}, nil
}

// denyDecorator answers pods that carry no secret-relay.io/secrets with an empty
// patch, and turns a denial into allowed=false with its message: HTTP 200, so the
// user reads why, instead of an HTTP 500 that the API server reports as a failed
// webhook call.
type denyDecorator struct {
	next    kwhwebhook.Webhook
	observe func(result string)
}

func (d denyDecorator) ID() string                 { return d.next.ID() }
func (d denyDecorator) Kind() kwhmodel.WebhookKind { return d.next.Kind() }

func (d denyDecorator) Review(ctx context.Context, ar kwhmodel.AdmissionReview) (kwhmodel.AdmissionResponse, error) {
	if !isPodCreate(ar) || !wantsRelay(ar.NewObjectRaw) {
		d.observe("untouched")
		return &kwhmodel.MutatingAdmissionResponse{ID: ar.ID}, nil
	}
	resp, err := d.next.Review(ctx, ar)
	if msg, ok := denial(err); ok {
		d.observe("denied")
		return &kwhmodel.ValidatingAdmissionResponse{ID: ar.ID, Allowed: false, Message: msg}, nil
	}
	switch {
	case err != nil:
		d.observe("error")
		return nil, err
	}
	d.observe("admitted")
	return resp, nil
}

// isPodCreate reports whether a review is of a pod being created, the only review
// the shipped webhook configuration sends. kubewebhook would decode any object into
// a Pod; anything else passes untouched, as a review posted by hand might be.
func isPodCreate(ar kwhmodel.AdmissionReview) bool {
	gvr := ar.RequestGVR
	if ar.Operation != kwhmodel.OperationCreate || gvr == nil || gvr.Group != "" || gvr.Resource != "pods" {
		return false
	}
	switch r := ar.OriginalAdmissionReview.(type) {
	case *admissionv1.AdmissionReview:
		return r.Request.SubResource == ""
	case *admissionv1beta1.AdmissionReview:
		return r.Request.SubResource == ""
	}
	return false
}

// wantsRelay passes pods that cannot carry the secret-relay.io/secrets annotation
// through untouched, with an empty patch, without decoding them. A pod that has the
// key's text elsewhere goes on to the mutator, which finds no annotation and leaves
// it as it is.
func wantsRelay(raw []byte) bool {
	return bytes.Contains(raw, secretsKeyJSON)
}

var secretsKeyJSON = []byte(`"` + relay.AnnotationSecrets + `"`)

var (
	_ kwhwebhook.Webhook = denyDecorator{}
	_ kwhwebhook.Webhook = podWebhook{}
)
var _ kwhlog.Logger = (*KubewebhookLogger)(nil)
