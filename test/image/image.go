// Package image builds container images without a Docker engine: a static binary,
// and the few files a distroless image adds, in one layer on an empty image, written
// as a tarball that `ctr images import` and `docker load` read. The test bed's real
// node runs secret-relay, its pause image and its test app from such images, since no
// registry is reachable.
package image

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// NonRoot is distroless's nonroot user, the one secret-relay's image runs as.
const NonRoot = "65532:65532"

// File is one file or directory of the image's layer.
type File struct {
	// Path is where the file is, absolute.
	Path string
	Mode int64
	Data []byte
	// Dir makes it a directory; directories a file needs are added, 0755 and root's.
	Dir      bool
	UID, GID int
}

// Spec is what an image holds and how it starts.
type Spec struct {
	// Ref is the image's name and tag, as pods name it.
	Ref        string
	Files      []File
	Entrypoint []string
	Cmd        []string
	// User is "uid:gid", or empty for root.
	User string
	// Labels are the image config's labels.
	Labels map[string]string
}

// epoch is every file's and the image's date: the same inputs give the same image.
var epoch = time.Unix(0, 0).UTC()

// Build writes the image of spec to out as an OCI image layout archive, and
// returns its digest. The index names the image twice, as containerd
// (io.containerd.image.name, the whole reference) and the OCI spec (the tag) do.
func Build(spec Spec, out string) (v1.Hash, error) {
	ref, err := name.NewTag(spec.Ref, name.WeakValidation)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("image reference %q: %w", spec.Ref, err)
	}
	img, err := imageOf(spec)
	if err != nil {
		return v1.Hash{}, err
	}
	dir, err := os.MkdirTemp("", "image-layout-")
	if err != nil {
		return v1.Hash{}, err
	}
	defer os.RemoveAll(dir)
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		return v1.Hash{}, err
	}
	err = lp.AppendImage(img, layout.WithAnnotations(map[string]string{
		"io.containerd.image.name":          ref.Name(),
		"org.opencontainers.image.ref.name": ref.TagStr(),
	}))
	if err != nil {
		return v1.Hash{}, fmt.Errorf("image layout: %w", err)
	}
	if err := tarDir(dir, out); err != nil {
		return v1.Hash{}, fmt.Errorf("writing %s: %w", out, err)
	}
	return img.Digest()
}

// tarDir writes the files under dir, in path order, as a tar at out.
func tarDir(dir, out string) error {
	var files []File
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		files = append(files, File{Path: "/" + filepath.ToSlash(rel), Mode: 0o644, Data: data})
		return nil
	})
	if err != nil {
		return err
	}
	archive, err := layerOf(files)
	if err != nil {
		return err
	}
	return os.WriteFile(out, archive, 0o644)
}

func imageOf(spec Spec) (v1.Image, error) {
	layerTar, err := layerOf(spec.Files)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{Layer: layer, History: v1.History{CreatedBy: "secret-relay test/image", Created: v1.Time{Time: epoch}}})
	if err != nil {
		return nil, fmt.Errorf("adding the layer: %w", err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.Architecture, cfg.OS = "amd64", "linux"
	cfg.Created = v1.Time{Time: epoch}
	cfg.Config.Entrypoint = spec.Entrypoint
	cfg.Config.Cmd = spec.Cmd
	cfg.Config.User = spec.User
	cfg.Config.Labels = spec.Labels
	cfg.Config.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "SSL_CERT_FILE=" + CACertificatesPath}
	return mutate.ConfigFile(img, cfg)
}

// layerOf is the tar of files (a layer, or an archive), with the directories they need, in path order.
func layerOf(files []File) ([]byte, error) {
	byPath := map[string]File{}
	for _, f := range files {
		byPath[f.Path] = f
	}
	for _, f := range files {
		for d := path.Dir(f.Path); d != "/"; d = path.Dir(d) {
			if _, ok := byPath[d]; !ok {
				byPath[d] = File{Path: d, Mode: 0o755, Dir: true}
			}
		}
	}
	paths := slices.Sorted(maps.Keys(byPath))
	var buf bytes.Buffer
	w := tar.NewWriter(&buf)
	for _, p := range paths {
		f := byPath[p]
		h := &tar.Header{Name: p[1:], Mode: f.Mode, Uid: f.UID, Gid: f.GID, ModTime: epoch, Format: tar.FormatPAX}
		if f.Dir {
			h.Typeflag, h.Name = tar.TypeDir, h.Name+"/"
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.Data))
		}
		if err := w.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := w.Write(f.Data); err != nil {
			return nil, err
		}
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Binary reads the static binary from into the file to of the image.
func Binary(from, to string) (File, error) {
	data, err := os.ReadFile(from)
	if err != nil {
		return File{}, err
	}
	return File{Path: to, Mode: 0o755, Data: data}, nil
}

// CACertificatesPath is where the image keeps the CA bundle, as distroless does.
const CACertificatesPath = "/etc/ssl/certs/ca-certificates.crt"

// Distroless is what gcr.io/distroless/static adds to a static binary, and
// secret-relay needs of it: the users root, nonroot (65532) and nobody, their home
// directories, a world-writable /tmp, and the CA bundle, read from caBundle on this
// machine.
func Distroless(caBundle string) ([]File, error) {
	ca, err := os.ReadFile(caBundle)
	if err != nil {
		return nil, fmt.Errorf("CA bundle: %w", err)
	}
	return []File{
		{Path: "/etc/passwd", Mode: 0o644, Data: []byte("root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")},
		{Path: "/etc/group", Mode: 0o644, Data: []byte("root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n")},
		{Path: CACertificatesPath, Mode: 0o644, Data: ca},
		{Path: "/root", Mode: 0o700, Dir: true},
		{Path: "/home/nonroot", Mode: 0o700, Dir: true, UID: 65532, GID: 65532},
		{Path: "/tmp", Mode: 0o1777, Dir: true},
	}, nil
}
