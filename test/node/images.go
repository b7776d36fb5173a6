package node

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/secret-relay/secret-relay/test/image"
)

// The images every node has, built from this module: no registry is reachable, so
// pods name them with imagePullPolicy Never or IfNotPresent.
const (
	// PauseImage is the pod sandbox: test/node/pause.
	PauseImage = "secret-relay.test/pause:v1"
	// ReaderImage is the test app that logs the Secret it reads: test/node/reader.
	ReaderImage = "secret-relay.test/reader:v1"
)

const module = "github.com/secret-relay/secret-relay"

// importImages builds the pause and reader images and imports them.
func (n *Node) importImages(t testing.TB) error {
	for _, img := range []struct{ ref, pkg, entry string }{
		{PauseImage, module + "/test/node/pause", "/pause"},
		{ReaderImage, module + "/test/node/reader", "/reader"},
	} {
		bin := n.path("images", filepath.Base(img.entry))
		if out, err := exec.Command("go", "build", "-trimpath", "-o", bin, img.pkg).CombinedOutput(); err != nil {
			return fmt.Errorf("could not build %s: %v\n%s", img.pkg, err, out)
		}
		f, err := image.Binary(bin, img.entry)
		if err != nil {
			return err
		}
		tar := bin + ".tar"
		spec := image.Spec{Ref: img.ref, Files: []image.File{f}, Entrypoint: []string{img.entry}, User: image.NonRoot}
		if _, err := image.Build(spec, tar); err != nil {
			return err
		}
		if err := n.importImage(tar); err != nil {
			return err
		}
	}
	return nil
}

// Import loads an image tarball (image.Build's, or `make image`'s) into the node's
// containerd, where kubelet finds it.
func (n *Node) Import(t testing.TB, tarball string) {
	t.Helper()
	start := time.Now()
	if err := n.importImage(tarball); err != nil {
		t.Fatal(err)
	}
	t.Logf("imported %s in %s", filepath.Base(tarball), time.Since(start).Round(time.Millisecond))
}

func (n *Node) importImage(tarball string) error {
	// containerd may still be starting: its socket appears when it is ready.
	var out []byte
	err := poll(30*time.Second, func() (bool, error) {
		var err error
		out, err = exec.Command(filepath.Join(containerdDir(), "ctr"), "--address", n.containerdSocket(),
			"--namespace", "k8s.io", "images", "import", tarball).CombinedOutput()
		return err == nil, n.exited()
	})
	if err != nil {
		return fmt.Errorf("could not import %s into containerd: %v\n%s", tarball, err, out)
	}
	return nil
}

// Ctr runs containerd's ctr against the node's containerd, in kubelet's namespace.
func (n *Node) Ctr(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(filepath.Join(containerdDir(), "ctr"), append([]string{"--address", n.containerdSocket(), "--namespace", "k8s.io"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ctr %v: %v\n%s", args, err, out)
	}
	return string(out)
}
