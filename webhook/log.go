package webhook

import (
	"context"
	"fmt"
	"strings"

	kwhlog "github.com/slok/kubewebhook/v2/pkg/log"
	"go.uber.org/zap"
)

// KubewebhookLogger adapts zap to kubewebhook's logger. kubewebhook logs the whole
// JSON patch at debug level; secret-relay's patches hold only names and hashes, but
// the adapter still drops any message that carries a patch, so that no future
// mutation can leak data through a log line.
type KubewebhookLogger struct {
	z *zap.SugaredLogger
}

// NewKubewebhookLogger wraps a zap logger.
func NewKubewebhookLogger(z *zap.Logger) *KubewebhookLogger {
	return &KubewebhookLogger{z: z.Sugar()}
}

func (l *KubewebhookLogger) log(level func(string, ...any), format string, args []any) {
	if strings.Contains(format, "Patch") || strings.Contains(format, "patch") {
		level("webhook review finished (patch not logged)")
		return
	}
	level(fmt.Sprintf(format, args...))
}

// Infof logs at info level.
func (l *KubewebhookLogger) Infof(format string, args ...any) { l.log(l.z.Infow, format, args) }

// Warningf logs at warn level.
func (l *KubewebhookLogger) Warningf(format string, args ...any) { l.log(l.z.Warnw, format, args) }

// Errorf logs at error level.
func (l *KubewebhookLogger) Errorf(format string, args ...any) { l.log(l.z.Errorw, format, args) }

// Debugf logs at debug level.
func (l *KubewebhookLogger) Debugf(format string, args ...any) { l.log(l.z.Debugw, format, args) }

// WithValues returns a logger with the given fields.
func (l *KubewebhookLogger) WithValues(values map[string]any) kwhlog.Logger {
	kv := make([]any, 0, 2*len(values))
	for k, v := range values {
		kv = append(kv, k, v)
	}
	return &KubewebhookLogger{z: l.z.With(kv...)}
}

// WithCtxValues returns a logger with the fields kubewebhook stored on ctx.
func (l *KubewebhookLogger) WithCtxValues(ctx context.Context) kwhlog.Logger {
	return l.WithValues(kwhlog.ValuesFromCtx(ctx))
}

// SetValuesOnCtx stores fields on ctx for later WithCtxValues calls.
func (l *KubewebhookLogger) SetValuesOnCtx(parent context.Context, values map[string]any) context.Context {
	return kwhlog.CtxWithValues(parent, values)
}
