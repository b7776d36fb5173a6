package cluster

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// auditPolicy records who did what to which object, never a request or response body,
// so the log holds no secret value.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
`

// AuditEvent is the part of an audit.k8s.io/v1 Event that tests count by.
type AuditEvent struct {
	Verb       string `json:"verb"`
	RequestURI string `json:"requestURI"`
	UserAgent  string `json:"userAgent"`
	User       struct {
		Username string `json:"username"`
	} `json:"user"`
	ObjectRef struct {
		Resource  string `json:"resource"`
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"objectRef"`
	ResponseStatus struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
	Stage string `json:"stage"`
	// RequestReceived and StageAt time the request: at ResponseComplete, their
	// difference is how long the API server took to answer it.
	RequestReceived metav1.MicroTime `json:"requestReceivedTimestamp"`
	StageAt         metav1.MicroTime `json:"stageTimestamp"`
}

// Took is how long the API server took, up to the event's stage.
func (ev AuditEvent) Took() time.Duration { return ev.StageAt.Sub(ev.RequestReceived.Time) }

func (cp *ControlPlane) configureAudit(api *envtest.APIServer) error {
	policy := filepath.Join(cp.dir, "audit-policy.yaml")
	if err := os.WriteFile(policy, []byte(auditPolicy), 0o600); err != nil {
		return err
	}
	cp.auditLog = filepath.Join(cp.dir, "audit.log")
	api.Configure().
		Set("audit-policy-file", policy).
		Set("audit-log-path", cp.auditLog).
		Set("audit-log-mode", "blocking")
	return nil
}

// RawAuditLog is the audit log as the API server wrote it, to scan for what must
// never be in it.
func (cp *ControlPlane) RawAuditLog(t testing.TB) []byte {
	t.Helper()
	data, err := os.ReadFile(cp.auditPath(t))
	if err != nil {
		t.Fatalf("could not read the audit log: %v", err)
	}
	return data
}

// AuditEvents returns the completed requests the API server has logged so far. It
// needs Options.AuditLog.
func (cp *ControlPlane) AuditEvents(t testing.TB) []AuditEvent {
	t.Helper()
	var done []AuditEvent
	for _, ev := range cp.AuditLog(t) {
		if ev.Stage == "ResponseComplete" {
			done = append(done, ev)
		}
	}
	return done
}

// AuditLog returns every event the API server has logged so far, of every stage:
// a watch still open shows as ResponseStarted only.
func (cp *ControlPlane) AuditLog(t testing.TB) []AuditEvent {
	t.Helper()
	return cp.AuditLogSince(t, 0)
}

// AuditOffset is how much of the audit log is written now: AuditLogSince it reads
// only what comes after, when the whole log is too long to read again.
func (cp *ControlPlane) AuditOffset(t testing.TB) int64 {
	t.Helper()
	fi, err := os.Stat(cp.auditPath(t))
	if err != nil {
		t.Fatalf("could not read the audit log: %v", err)
	}
	return fi.Size()
}

// AuditLogSince is AuditLog from offset, as AuditOffset gave it.
func (cp *ControlPlane) AuditLogSince(t testing.TB, offset int64) []AuditEvent {
	t.Helper()
	f, err := os.Open(cp.auditPath(t))
	if err != nil {
		t.Fatalf("could not open the audit log: %v", err)
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		t.Fatalf("could not read the audit log: %v", err)
	}
	var events []AuditEvent
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var ev AuditEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			// The API server may be mid-write on the last line.
			continue
		}
		events = append(events, ev)
	}
	return events
}

func (cp *ControlPlane) auditPath(t testing.TB) string {
	t.Helper()
	if cp.auditLog == "" {
		t.Fatalf("the %s control plane keeps no audit log: start it with Options.AuditLog", cp.Name)
	}
	return cp.auditLog
}
