// Package manifests_test checks the shipped install manifests and Helm chart without
// a cluster: they lint, render, and carry what the contract (§7) fixes.
package manifests_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// chartDir is the chart's path relative to the repository root.
const chartDir = "manifests/charts/secret-relay"

// repoRoot is the repository root, found from this file's path.
func repoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	require.True(t, ok, "cannot locate the test source file")
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// repoPath joins parts onto the repository root.
func repoPath(t testing.TB, parts ...string) string {
	t.Helper()
	return filepath.Join(append([]string{repoRoot(t)}, parts...)...)
}

// tool returns the path of a pinned tool built by hack/tools.sh. It fails, rather
// than skips, when the tool is missing: make test builds the tools first.
func tool(t testing.TB, name string) string {
	t.Helper()
	root := repoRoot(t)
	cmd := exec.Command(filepath.Join(root, "hack", "tools.sh"), "--print", name)
	cmd.Dir = root
	out, err := cmd.Output()
	require.NoError(t, err, "hack/tools.sh --print %s", name)
	path := strings.TrimSpace(string(out))
	if name == "k8s" {
		path = filepath.Join(path, "kubectl")
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("%s is missing at %s: build the tools with `hack/tools.sh` (make test does): %v", name, path, err)
	}
	return path
}

// run runs a command from the repository root and returns its stdout; it fails the
// test, showing stderr, when the command fails.
func run(t testing.TB, bin string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = repoRoot(t)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", filepath.Base(bin), strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.Bytes()
}

// helm runs the pinned helm binary.
func helm(t testing.TB, args ...string) []byte {
	t.Helper()
	return run(t, tool(t, "helm"), args...)
}

// helmTemplate renders the chart into namespace ns with the given --set values.
func helmTemplate(t testing.TB, ns string, set ...string) objects {
	t.Helper()
	args := []string{"template", "secret-relay", chartDir, "--namespace", ns}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	return decodeObjects(t, helm(t, args...))
}

// object is one decoded manifest: its kind, name and namespace, and its YAML.
type object struct {
	Kind, APIVersion, Name, Namespace string
	raw                               []byte
}

// objects is a rendered stream of manifests.
type objects []object

// decodeObjects splits a multi-document YAML stream, dropping empty documents.
func decodeObjects(t testing.TB, data []byte) objects {
	t.Helper()
	var objs objects
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		var head struct {
			metav1.TypeMeta `json:",inline"`
			Metadata        metav1.ObjectMeta `json:"metadata"`
		}
		require.NoError(t, yaml.Unmarshal(doc, &head), "decoding:\n%s", doc)
		if head.Kind == "" {
			continue // only comments
		}
		objs = append(objs, object{
			Kind: head.Kind, APIVersion: head.APIVersion,
			Name: head.Metadata.Name, Namespace: head.Metadata.Namespace, raw: doc,
		})
	}
	return objs
}

// readObjects decodes a manifest file given relative to the repository root.
func readObjects(t testing.TB, rel string) objects {
	t.Helper()
	data, err := os.ReadFile(repoPath(t, rel))
	require.NoError(t, err)
	return decodeObjects(t, data)
}

// all returns the objects of a kind.
func (objs objects) all(kind string) objects {
	var out objects
	for _, o := range objs {
		if o.Kind == kind {
			out = append(out, o)
		}
	}
	return out
}

// one decodes the single object of kind named name into into, failing when there is
// not exactly one.
func (objs objects) one(t testing.TB, kind, name string, into any) {
	t.Helper()
	var found []object
	for _, o := range objs.all(kind) {
		if o.Name == name {
			found = append(found, o)
		}
	}
	require.Len(t, found, 1, "want exactly one %s %q", kind, name)
	require.NoError(t, yaml.UnmarshalStrict(found[0].raw, into), "decoding %s %s", kind, name)
}
