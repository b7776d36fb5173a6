// Package architecture_test enforces the import rules of docs/architecture.md.
package architecture_test

import (
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const module = "github.com/secret-relay/secret-relay"

// forbidden lists, for each production package, the packages of this module it
// must not depend on, directly or through others. The relay model and the
// certificate and API packages are leaves; the upstream side and the controllers
// never reach the admission side; admission reaches the upstream side only through
// the interfaces it declares; nothing but cmd wires the parts together.
var forbidden = map[string][]string{
	"relay":       {"webhook", "remote", "controllers", "certs", "cmd", "test", "api"},
	"certs":       {"relay", "webhook", "remote", "controllers", "cmd", "test", "api"},
	"api":         {"relay", "webhook", "remote", "controllers", "certs", "cmd", "test"},
	"remote":      {"webhook", "controllers", "cmd", "test"},
	"controllers": {"webhook", "cmd", "test"},
	"webhook":     {"remote", "controllers", "certs", "cmd", "test", "api"},
	"cmd":         {"test"},
}

// testOnly are packages of this module that only tests may import.
var testOnly = []string{"remote/remotetest", "certs/certstest"}

type pkg struct {
	ImportPath string
}

func rel(path string) string { return strings.TrimPrefix(strings.TrimPrefix(path, module), "/") }

// under reports whether package path (relative) is dir or below it.
func under(path, dir string) bool { return path == dir || strings.HasPrefix(path, dir+"/") }

func TestImportRules(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	cmd := exec.Command("go", "list", "-json", "./...")
	cmd.Dir = filepath.Join(filepath.Dir(file), "..", "..")
	out, err := cmd.Output()
	require.NoError(t, err)
	dec := json.NewDecoder(strings.NewReader(string(out)))
	var pkgs []pkg
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else {
			require.NoError(t, err)
		}
		pkgs = append(pkgs, p)
	}
	require.NotEmpty(t, pkgs)

	checked := 0
	for _, p := range pkgs {
		name := rel(p.ImportPath)
		if under(name, "test") {
			continue // the test bed and suites may use anything
		}
		all := transitive(t, cmd.Dir, p.ImportPath)
		for _, d := range all {
			if !strings.HasPrefix(d, module) || d == p.ImportPath {
				continue
			}
			dep := rel(d)
			for _, t2 := range testOnly {
				assert.False(t, under(dep, t2) && !slices.Contains(testOnly, name), "%s depends on %s, which only tests may import", name, dep)
			}
			for top, denied := range forbidden {
				if !under(name, top) || slices.Contains(testOnly, name) {
					continue
				}
				for _, f := range denied {
					assert.False(t, under(dep, f), "%s must not depend on %s (docs/architecture.md)", name, dep)
				}
			}
		}
		checked++
	}
	t.Logf("checked the dependencies of %d packages", checked)
	assert.Positive(t, checked)
}

// transitive lists the packages pkg depends on, directly or not.
func transitive(t *testing.T, dir, pkg string) []string {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", pkg)
	cmd.Dir = dir
	out, err := cmd.Output()
	require.NoError(t, err, "go list -deps %s", pkg)
	return strings.Fields(string(out))
}
