package cluster

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/secret-relay/secret-relay/certs/certstest"
)

// FreePort returns a loopback TCP port that was free a moment ago. Servers under test
// should prefer listening on :0 themselves; this is for processes that take a flag.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("could not find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// ServingCert is a throwaway CA and a serving certificate for 127.0.0.1 and
// localhost, written to a directory as tls.crt, tls.key and ca.crt.
type ServingCert struct {
	CA       *certstest.CA
	KeyPair  certstest.KeyPair
	Dir      string
	CertFile string
	KeyFile  string
}

// NewServingCert makes a CA and a 127.0.0.1 serving certificate in a test directory.
func NewServingCert(t testing.TB) *ServingCert {
	t.Helper()
	ca, err := certstest.NewCA("secret-relay-test-ca")
	if err != nil {
		t.Fatal(err)
	}
	kp, err := ca.ServingCert("127.0.0.1", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sc := &ServingCert{CA: ca, KeyPair: kp, Dir: dir, CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key")}
	sc.Write(t, kp)
	must(t, os.WriteFile(filepath.Join(dir, "ca.crt"), ca.CertPEM(), 0o600))
	return sc
}

// Write replaces the certificate files, as cert-manager does on rotation.
func (sc *ServingCert) Write(t testing.TB, kp certstest.KeyPair) {
	t.Helper()
	must(t, os.WriteFile(sc.KeyFile, kp.KeyPEM, 0o600))
	must(t, os.WriteFile(sc.CertFile, kp.CertPEM, 0o600))
	sc.KeyPair = kp
}
