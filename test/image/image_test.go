package image

import (
	"archive/tar"
	"bufio"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// finalStage is what the Dockerfile's last stage declares.
type finalStage struct {
	from            string
	copies          map[string]string // destination to source in the build stage
	user            string
	entrypoint, cmd []string
}

func readDockerfile(t *testing.T, path string) finalStage {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	var last []string // the final stage's lines
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if instr, _, _ := strings.Cut(line, " "); strings.EqualFold(instr, "FROM") {
			last = nil
		}
		last = append(last, line)
	}
	require.NoError(t, sc.Err())
	var st finalStage
	for _, line := range last {
		instr, rest, _ := strings.Cut(line, " ")
		switch strings.ToUpper(instr) {
		case "FROM":
			st = finalStage{from: rest, copies: map[string]string{}}
		case "COPY":
			fields := strings.Fields(rest)
			require.Len(t, fields, 3, "COPY in the final stage: %s", line)
			require.Equal(t, "--from=build", fields[0], "the final stage copies only from the build stage: %s", line)
			st.copies[fields[2]] = fields[1]
		case "USER":
			st.user = rest
		case "ENTRYPOINT":
			require.NoError(t, json.Unmarshal([]byte(rest), &st.entrypoint), "ENTRYPOINT is in exec form")
		case "CMD":
			require.NoError(t, json.Unmarshal([]byte(rest), &st.cmd), "CMD is in exec form")
		default:
			t.Fatalf("the final stage has %s, which the image does not stand in for", line)
		}
	}
	return st
}

// layerFiles reads the image's single layer: each entry's header, and the content
// of regular files.
func layerFiles(t *testing.T, rc io.ReadCloser) (map[string]*tar.Header, map[string][]byte) {
	t.Helper()
	defer rc.Close()
	headers, data := map[string]*tar.Header{}, map[string][]byte{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return headers, data
		}
		require.NoError(t, err)
		p := "/" + strings.TrimSuffix(h.Name, "/")
		headers[p] = h
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			require.NoError(t, err)
			data[p] = b
		}
	}
}

func TestSecretRelayMatchesDockerfile(t *testing.T) {
	dir := t.TempDir()
	binary := filepath.Join(dir, "secret-relay")
	require.NoError(t, os.WriteFile(binary, []byte("\x7fELF not really"), 0o755))
	ca := filepath.Join(dir, "ca.crt")
	require.NoError(t, os.WriteFile(ca, []byte("-----BEGIN CERTIFICATE-----\n"), 0o644))
	spec, err := SecretRelay("ghcr.io/secret-relay/secret-relay:test", binary, ca)
	require.NoError(t, err)
	out := filepath.Join(dir, "image.tar")
	digest, err := Build(spec, out)
	require.NoError(t, err)

	img := readArchive(t, out, spec.Ref)
	got, err := img.Digest()
	require.NoError(t, err)
	assert.Equal(t, digest, got)
	mt, err := img.MediaType()
	require.NoError(t, err)
	assert.Equal(t, types.OCIManifestSchema1, mt)

	docker := readDockerfile(t, "../../Dockerfile")
	cfg, err := img.ConfigFile()
	require.NoError(t, err)
	assert.Equal(t, "gcr.io/distroless/static:nonroot", docker.from, "the image stands in for this base")
	assert.Equal(t, docker.entrypoint, cfg.Config.Entrypoint)
	assert.Equal(t, docker.cmd, cfg.Config.Cmd)
	assert.Equal(t, docker.user, cfg.Config.User)
	assert.Equal(t, "linux", cfg.OS)
	assert.Equal(t, "amd64", cfg.Architecture)

	layers, err := img.Layers()
	require.NoError(t, err)
	require.Len(t, layers, 1)
	rc, err := layers[0].Uncompressed()
	require.NoError(t, err)
	headers, data := layerFiles(t, rc)
	for dest := range docker.copies {
		h, ok := headers[dest]
		require.True(t, ok, "the Dockerfile copies %s into the image", dest)
		assert.Equal(t, int64(0o755), h.Mode, "%s is executable", dest)
		assert.Equal(t, []byte("\x7fELF not really"), data[dest])
	}
	assert.Contains(t, docker.copies, docker.entrypoint[0], "the entrypoint is the copied binary")

	// What distroless/static:nonroot gives that secret-relay relies on.
	uid, gid, _ := strings.Cut(docker.user, ":")
	assert.Contains(t, string(data["/etc/passwd"]), "nonroot:x:"+uid+":"+gid+":", "the user has a passwd entry")
	assert.Contains(t, string(data["/etc/group"]), "nonroot:x:"+gid+":")
	assert.Equal(t, "-----BEGIN CERTIFICATE-----\n", string(data[CACertificatesPath]), "the CA bundle is where Go looks for it")
	assert.Equal(t, int64(0o1777), headers["/tmp"].Mode, "/tmp is world-writable and sticky")
	assert.Equal(t, 65532, headers["/home/nonroot"].Uid)
	assert.Equal(t, byte(tar.TypeDir), headers["/etc/ssl"].Typeflag, "parents of files are directories")
}

// readArchive unpacks an OCI layout archive and returns the image it names ref.
func readArchive(t *testing.T, path, ref string) v1.Image {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	dir := t.TempDir()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		if h.Typeflag != tar.TypeReg {
			continue
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		b, err := io.ReadAll(tr)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(p, b, 0o644))
	}
	idx, err := layout.ImageIndexFromPath(dir)
	require.NoError(t, err, "the archive is an OCI image layout")
	m, err := idx.IndexManifest()
	require.NoError(t, err)
	require.Len(t, m.Manifests, 1)
	tag, err := name.NewTag(ref)
	require.NoError(t, err)
	desc := m.Manifests[0]
	assert.Equal(t, tag.Name(), desc.Annotations["io.containerd.image.name"], "containerd names the image by the whole reference")
	assert.Equal(t, tag.TagStr(), desc.Annotations["org.opencontainers.image.ref.name"])
	img, err := idx.Image(desc.Digest)
	require.NoError(t, err)
	return img
}

func TestBuildIsReproducible(t *testing.T) {
	dir := t.TempDir()
	spec := Spec{Ref: "example.test/app:v1", Files: []File{{Path: "/app", Mode: 0o755, Data: []byte("app")}}, Entrypoint: []string{"/app"}}
	a, err := Build(spec, filepath.Join(dir, "a.tar"))
	require.NoError(t, err)
	b, err := Build(spec, filepath.Join(dir, "b.tar"))
	require.NoError(t, err)
	assert.Equal(t, a, b, "the same inputs give the same image")
	spec.Files[0].Data = []byte("app2")
	c, err := Build(spec, filepath.Join(dir, "c.tar"))
	require.NoError(t, err)
	assert.NotEqual(t, a, c)
}
