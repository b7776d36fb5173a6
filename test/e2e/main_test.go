// Package e2e_test runs secret-relay end to end: the real binary, registered through
// a real MutatingWebhookConfiguration on a downstream API server, reading from an
// upstream API server with a real ServiceAccount token.
package e2e_test

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/secret-relay/secret-relay/test/cluster"
)

var (
	// relayBinary is secret-relay, built once for the suite.
	relayBinary string
	// suiteDir outlives every test, so that logs can be scanned at the end.
	suiteDir string

	logsMu   sync.Mutex
	logFiles []string
)

// fixtureValues are the secret values the fixtures put upstream. No log line, event
// or message may ever contain one, raw or base64-encoded.
var fixtureValues = []string{"peter", "asdf1234", "s3cr3t-db-password", "s3cr3t-api-key", "s3cr3t-rotated-username"}

func TestMain(m *testing.M) {
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) int {
	var err error
	if suiteDir, err = os.MkdirTemp("", "secret-relay-e2e-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	code := 1
	defer func() {
		if code == 0 {
			os.RemoveAll(suiteDir)
		} else {
			fmt.Fprintf(os.Stderr, "secret-relay logs kept in %s\n", suiteDir)
		}
	}()
	if relayBinary, err = cluster.BuildRelay(suiteDir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	code = m.Run()
	if code == 0 {
		if leaks := scanLogsForSecrets(); len(leaks) > 0 {
			fmt.Fprintf(os.Stderr, "FAIL: secret values found in webhook logs:\n%s\n", strings.Join(leaks, "\n"))
			code = 1
			return code
		}
		fmt.Printf("scanned %d webhook log files (debug level) for %d fixture values: none found\n", len(logFiles), len(fixtureValues))
	}
	return code
}

// newWorld starts the two clusters and secret-relay, whose log the suite scans at
// the end.
func newWorld(t testing.TB, relayArgs ...string) *cluster.World {
	t.Helper()
	w := cluster.NewWorld(t, relayBinary, suiteDir, relayArgs...)
	registerLog(w.Relay.LogFile)
	return w
}

func registerLog(path string) {
	logsMu.Lock()
	defer logsMu.Unlock()
	logFiles = append(logFiles, path)
}

// scanLogsForSecrets returns one line per fixture value found in a webhook log.
func scanLogsForSecrets() []string {
	logsMu.Lock()
	defer logsMu.Unlock()
	var leaks []string
	for _, f := range logFiles {
		data, err := os.ReadFile(f)
		if err != nil {
			leaks = append(leaks, fmt.Sprintf("%s: unreadable: %v", f, err))
			continue
		}
		leaks = append(leaks, findSecrets(f, data)...)
	}
	return leaks
}

// findSecrets looks for each fixture value, raw and base64-encoded, in data.
func findSecrets(where string, data []byte) []string {
	var leaks []string
	for _, v := range fixtureValues {
		for _, form := range []string{v, base64.StdEncoding.EncodeToString([]byte(v))} {
			if i := bytes.Index(data, []byte(form)); i >= 0 {
				start, end := max(0, i-80), min(len(data), i+len(form)+80)
				leaks = append(leaks, fmt.Sprintf("%s: %q found near %q", where, form, data[start:end]))
			}
		}
	}
	return leaks
}
