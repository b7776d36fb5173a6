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
	kwhmutating "github.com/slok/kubewebhook/v2/pkg/webhook/mutating"
	"go.uber.org/zap"
	admissionv1 "k8s.io/api/admission/v1"
	admissionv1beta1 "k8s.io/api/admission/v1beta1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

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
	mutate := kwhmutating.MutatorFunc(func(ctx context.Context, ar *kwhmodel.AdmissionReview, obj metav1.Object) (*kwhmutating.MutatorResult, error) {
		pod, ok := obj.(*corev1.Pod)
		if !ok {
			return nil, fmt.Errorf("expected a pod, got %T", obj)
		}
		res, err := cfg.Mutator.Relay(ctx, ar.Namespace, pod, ar.DryRun)
		if err != nil {
			return nil, err
		}
		if len(res.Written) > 0 {
			cfg.Logger.Debug("relayed", zap.String("namespace", ar.Namespace), zap.String("pod", pod.Name+pod.GenerateName),
				zap.Strings("written", res.Written))
		}
		return &kwhmutating.MutatorResult{MutatedObject: pod, Warnings: res.Warnings}, nil
	})
	wh, err := kwhmutating.NewWebhook(kwhmutating.WebhookConfig{
		ID:      WebhookID,
		Obj:     &corev1.Pod{},
		Mutator: mutate,
		Logger:  logger,
	})
	if err != nil {
		return nil, fmt.Errorf("could not create the webhook: %w", err)
	}
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

var _ kwhwebhook.Webhook = denyDecorator{}
var _ kwhlog.Logger = (*KubewebhookLogger)(nil)
