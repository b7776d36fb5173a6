package manifests_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDockerfile checks what can be checked without a Docker engine (none runs
// here, and no Dockerfile linter ships as a Go module): the build stage copies every
// package the binary needs, and the image is static, distroless and nonroot.
func TestDockerfile(t *testing.T) {
	raw, err := os.ReadFile(repoPath(t, "Dockerfile"))
	require.NoError(t, err)
	df := string(raw)

	t.Run("The build stage should copy every package the binary imports.", func(t *testing.T) {
		cmd := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", "./cmd/secret-relay")
		cmd.Dir = repoRoot(t)
		out, err := cmd.Output()
		require.NoError(t, err)
		const module = "github.com/secret-relay/secret-relay/"
		for _, pkg := range strings.Fields(string(out)) {
			if !strings.HasPrefix(pkg, module) {
				continue
			}
			top := strings.SplitN(strings.TrimPrefix(pkg, module), "/", 2)[0]
			assert.Contains(t, df, "COPY "+top+"/ "+top+"/", "the image build needs %s", pkg)
		}
	})

	t.Run("The image should be a static, distroless, nonroot binary.", func(t *testing.T) {
		assert.Equal(t, 2, strings.Count(df, "\nFROM ")+boolInt(strings.HasPrefix(df, "FROM ")), "multi-stage")
		assert.Contains(t, df, "CGO_ENABLED=0")
		assert.Contains(t, df, "FROM gcr.io/distroless/static:nonroot")
		assert.Contains(t, df, "USER 65532:65532")
		assert.Contains(t, df, `ENTRYPOINT ["/secret-relay"]`)
	})
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
