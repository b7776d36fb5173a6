package webhook

import "fmt"

// DenyPrefix starts every denial message.
const DenyPrefix = "secret-relay: "

// DenyError is a reason to refuse a pod that the user should read, found on the
// admission side itself: an annotation that does not parse, a review no API server
// would send, a pod a mutation cannot apply to. The review is answered with
// allowed=false and this message, never with an HTTP error. Together with the
// relay.Errors that Describe words, it is a denial; any other error from the
// mutator is a fault of secret-relay.
//
// A DenyError message never holds a secret value: only names of annotations,
// stores, Secrets and keys.
type DenyError struct {
	msg string
}

// Denyf makes a DenyError; the message gets the "secret-relay: " prefix when shown.
func Denyf(format string, args ...any) *DenyError {
	return &DenyError{msg: fmt.Sprintf(format, args...)}
}

// Error returns the message with its "secret-relay: " prefix.
func (e *DenyError) Error() string { return DenyPrefix + e.msg }
