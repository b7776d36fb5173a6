package webhook

import (
	"errors"
	"fmt"
)

// DenyPrefix starts every denial message.
const DenyPrefix = "secret-relay: "

// DenyError is a reason to refuse a pod that the user should read: the review is
// answered with allowed=false and this message, never with an HTTP error. Any other
// error from the mutator is a fault of secret-relay itself.
//
// A DenyError message never holds a secret value: only names of annotations,
// stores, Secrets and keys.
type DenyError struct {
	msg string
	// cause, when set, is what the denial is about, for errors.Is: a sentinel such
	// as remote.ErrNotAllowed, so that callers decide by kind, not by wording.
	cause error
}

// Denyf makes a DenyError; the message gets the "secret-relay: " prefix when shown.
func Denyf(format string, args ...any) *DenyError {
	return &DenyError{msg: fmt.Sprintf(format, args...)}
}

// DenyBecause makes a DenyError for which errors.Is(err, cause) holds. The message
// is format alone: cause's own text is not shown.
func DenyBecause(cause error, format string, args ...any) *DenyError {
	return &DenyError{msg: fmt.Sprintf(format, args...), cause: cause}
}

// Error returns the message with its "secret-relay: " prefix.
func (e *DenyError) Error() string { return DenyPrefix + e.msg }

// Unwrap returns the cause given to DenyBecause, or nil.
func (e *DenyError) Unwrap() error { return e.cause }

// IsDeny reports whether err is, or wraps, a DenyError.
func IsDeny(err error) bool {
	var d *DenyError
	return errors.As(err, &d)
}
