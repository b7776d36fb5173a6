package manifests_test

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestGeneratedFilesAreCurrent runs the generators into a scratch directory and
// fails when what they write differs from what is committed: the DeepCopy methods,
// the typed client under api/client and the CRDs (and the chart's copy of them).
// Run `make manifests` after changing api/v1alpha1.
func TestGeneratedFilesAreCurrent(t *testing.T) {
	out := t.TempDir()
	cmd := exec.Command(repoPath(t, "hack", "generate.sh"), out)
	cmd.Dir = repoRoot(t)
	logs, err := cmd.CombinedOutput()
	require.NoError(t, err, "hack/generate.sh: %s", logs)

	var generated []string
	require.NoError(t, filepath.WalkDir(out, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(out, path)
			generated = append(generated, rel)
		}
		return err
	}))
	require.NotEmpty(t, generated)
	for _, rel := range generated {
		want, err := os.ReadFile(filepath.Join(out, rel))
		require.NoError(t, err)
		got, err := os.ReadFile(repoPath(t, rel))
		if !assert.NoError(t, err, "%s is generated but not committed: run make manifests", rel) {
			continue
		}
		assert.True(t, bytes.Equal(want, got), "%s is stale: run make manifests", rel)
	}

	// Nothing under api/client that the generators no longer write.
	require.NoError(t, filepath.WalkDir(repoPath(t, "api", "client"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(repoRoot(t), path)
		_, statErr := os.Stat(filepath.Join(out, rel))
		assert.NoError(t, statErr, "%s is not generated any more: delete it (make manifests)", rel)
		return nil
	}))
}
