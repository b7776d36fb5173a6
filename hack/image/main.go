// Command image writes secret-relay's container image as a tarball, without a
// Docker engine (make image):
//
//	go run ./hack/image -binary bin/secret-relay -ref ghcr.io/secret-relay/secret-relay:dev -out bin/secret-relay-image.tar
//
// Load it with `ctr -n k8s.io images import` or `docker load`.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/secret-relay/secret-relay/test/image"
)

func main() {
	binary := flag.String("binary", "bin/secret-relay", "the static secret-relay binary")
	ref := flag.String("ref", "ghcr.io/secret-relay/secret-relay:dev", "the image's name and tag")
	out := flag.String("out", "bin/secret-relay-image.tar", "where to write the tarball")
	ca := flag.String("ca-bundle", "/etc/ssl/certs/ca-certificates.crt", "the CA certificates the image carries")
	flag.Parse()
	if err := run(*binary, *ref, *out, *ca); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(binary, ref, out, ca string) error {
	spec, err := image.SecretRelay(ref, binary, ca)
	if err != nil {
		return err
	}
	digest, err := image.Build(spec, out)
	if err != nil {
		return err
	}
	fmt.Printf("image: wrote %s (%s, %s)\n", out, ref, digest)
	return nil
}
