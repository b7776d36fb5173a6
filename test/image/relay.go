package image

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
