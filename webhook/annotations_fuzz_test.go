package webhook

import (
	"errors"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/secret-relay/secret-relay/relay"
)

// FuzzParseAnnotations feeds the parser arbitrary store and secrets annotations. An empty
// store leaves secret-relay.io/store off the pod. The seed corpus is in
// testdata/fuzz/FuzzParseAnnotations.
func FuzzParseAnnotations(f *testing.F) {
	f.Add("remote-k8s-store", seedSecrets)
	f.Add("", "- name: a\n  store: ClusterSecretStore/shared\n  dataFrom: [{extract: {key: a}}]\n")
	f.Add("SecretStore/s", `["a", {"name": "b", "data": [{"secretKey": "k", "remoteRef": {"key": "c", "property": "p"}}], "env": true, "mountPath": "/etc/b"}]`)

	f.Fuzz(func(t *testing.T, store, secrets string) {
		annotations := podAnnotations(store, secrets)
		got, err := ParseAnnotations(annotations)
		if err != nil {
			var deny *DenyError
			if !errors.As(err, &deny) {
				t.Fatalf("error %q is not a DenyError", err)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, DenyPrefix+"annotation "+relay.AnnotationSecrets+": ") &&
				!strings.HasPrefix(msg, DenyPrefix+"annotation "+relay.AnnotationStore+": ") {
				t.Fatalf("error %q does not name the annotation", msg)
			}
			if len(msg) > 512 || strings.Contains(msg, "\n") {
				t.Fatalf("error is not one short line: %q", msg)
			}
			if got != nil {
				t.Fatalf("got requests with an error: %v", got)
			}
			return
		}
		if got == nil {
			t.Fatal("got nil requests for a pod with a secrets annotation")
		}

		names := map[string]bool{}
		for i, req := range got {
			if errs := validation.IsDNS1123Subdomain(req.Name); len(errs) > 0 {
				t.Fatalf("request %d has an invalid name %q: %v", i, req.Name, errs)
			}
			if names[req.Name] {
				t.Fatalf("request %d repeats the name %q", i, req.Name)
			}
			names[req.Name] = true
			if req.Store.Name == "" {
				t.Fatalf("request %d (%q) has no store", i, req.Name)
			}
			if req.Store.Kind != relay.SecretStoreKind && req.Store.Kind != relay.ClusterSecretStoreKind {
				t.Fatalf("request %d (%q) has store kind %q", i, req.Name, req.Store.Kind)
			}
			if len(req.Data)+len(req.DataFrom) == 0 {
				t.Fatalf("request %d (%q) has no data nor dataFrom", i, req.Name)
			}
			for _, d := range req.Data {
				if d.SecretKey == "" || d.RemoteRef.Key == "" {
					t.Fatalf("request %d (%q) has an incomplete data entry %+v", i, req.Name, d)
				}
			}
			for _, d := range req.DataFrom {
				if d.Extract.Key == "" || d.Extract.Property != "" {
					t.Fatalf("request %d (%q) has a bad dataFrom entry %+v", i, req.Name, d)
				}
			}
		}
	})
}
