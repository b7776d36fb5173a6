package image

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// SecretRelay is secret-relay's image, as the Dockerfile's final stage declares it:
// the static binary at /secret-relay on a distroless base, run as nonroot, serving.
// TestSecretRelayMatchesDockerfile holds the two together.
func SecretRelay(ref, binary, caBundle string) (Spec, error) {
	bin, err := Binary(binary, "/secret-relay")
	if err != nil {
		return Spec{}, err
	}
	base, err := Distroless(caBundle)
	if err != nil {
		return Spec{}, err
	}
	return Spec{
		Ref:        ref,
		Files:      append(base, bin),
		Entrypoint: []string{"/secret-relay"},
		Cmd:        []string{"serve"},
		User:       NonRoot,
	}, nil
}

// BuildSecretRelay compiles cmd/secret-relay as `make build` does (static, trimmed,
// stamped version) into dir, and writes its image, named ref, as
// dir/secret-relay-image.tar, whose path it returns.
func BuildSecretRelay(ref, version, dir string) (string, error) {
	bin := filepath.Join(dir, "secret-relay")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version="+version, "-o", bin,
		"github.com/secret-relay/secret-relay/cmd/secret-relay")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("could not build secret-relay: %v\n%s", err, out)
	}
	spec, err := SecretRelay(ref, bin, CACertificatesPath)
	if err != nil {
		return "", err
	}
	tar := filepath.Join(dir, "secret-relay-image.tar")
	_, err = Build(spec, tar)
	return tar, err
}
