// Package webhook is the admission side of secret-relay: it parses the pod
// annotations, plans the local Secrets, mutates the pod and answers AdmissionReviews.
package webhook
