package webhook

import (
	"context"
	"fmt"
	"strings"

	kwhlog "github.com/slok/kubewebhook/v2/pkg/log"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// KubewebhookLogger adapts zap to kubewebhook's logger. kubewebhook logs the whole
// JSON patch at debug level; secret-relay's patches hold only names and hashes, but
// the adapter still drops any message that carries a patch, so that no future
// mutation can leak data through a log line.
//
// kubewebhook attaches a dozen fields to a logger on every review. The adapter only
// collects them, and hands them to zap when a line is actually written: most reviews
// write none, and building zap fields for nothing was a tenth of a warm review.
type KubewebhookLogger struct {
	z *zap.Logger
	// values are field sets, oldest first; ctx may hold more, set by SetValuesOnCtx.
	// The logger keeps the ctx WithCtxValues gave it because kubewebhook's Logger
	// interface binds a context once and logs without one.
	values []map[string]any
	ctx    context.Context
}

// ctxValuesKey keys the field sets SetValuesOnCtx stores, by reference, uncopied.
type ctxValuesKey struct{}

// NewKubewebhookLogger wraps a zap logger.
func NewKubewebhookLogger(z *zap.Logger) *KubewebhookLogger {
	return &KubewebhookLogger{z: z}
}

func (l *KubewebhookLogger) log(level zapcore.Level, format string, args []any) {
	ce := l.z.Check(level, "")
	if ce == nil {
		return
	}
	ce.Message = fmt.Sprintf(format, args...)
	if strings.Contains(format, "Patch") || strings.Contains(format, "patch") {
		ce.Message = "webhook review finished (patch not logged)"
	}
	var fields []zap.Field
	if l.ctx != nil {
		for _, m := range ctxValues(l.ctx) {
			fields = appendFields(fields, m)
		}
	}
	for _, m := range l.values {
		fields = appendFields(fields, m)
	}
	ce.Write(fields...)
}

func appendFields(fields []zap.Field, m map[string]any) []zap.Field {
	for k, v := range m {
		fields = append(fields, zap.Any(k, v))
	}
	return fields
}

func ctxValues(ctx context.Context) []map[string]any {
	v, _ := ctx.Value(ctxValuesKey{}).([]map[string]any)
	return v
}

// Infof logs at debug level: kubewebhook's one info line is "Admission review
// request handled", once per review. On the admission path that costs more than it
// tells; secret_relay_admissions_total counts the same.
func (l *KubewebhookLogger) Infof(format string, args ...any) {
	l.log(zapcore.DebugLevel, format, args)
}

// Warningf logs at warn level.
func (l *KubewebhookLogger) Warningf(format string, args ...any) {
	l.log(zapcore.WarnLevel, format, args)
}

// Errorf logs at error level.
func (l *KubewebhookLogger) Errorf(format string, args ...any) {
	l.log(zapcore.ErrorLevel, format, args)
}

// Debugf logs at debug level.
func (l *KubewebhookLogger) Debugf(format string, args ...any) {
	l.log(zapcore.DebugLevel, format, args)
}

// WithValues returns a logger with the given fields.
func (l *KubewebhookLogger) WithValues(values map[string]any) kwhlog.Logger {
	return &KubewebhookLogger{z: l.z, ctx: l.ctx, values: append(l.values[:len(l.values):len(l.values)], values)}
}

// WithCtxValues returns a logger with the fields stored on ctx.
func (l *KubewebhookLogger) WithCtxValues(ctx context.Context) kwhlog.Logger {
	return &KubewebhookLogger{z: l.z, ctx: ctx, values: l.values}
}

// SetValuesOnCtx stores fields on ctx for later WithCtxValues calls.
func (l *KubewebhookLogger) SetValuesOnCtx(parent context.Context, values map[string]any) context.Context {
	prev := ctxValues(parent)
	return context.WithValue(parent, ctxValuesKey{}, append(prev[:len(prev):len(prev)], values))
}
