package webhook

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/secret-relay/secret-relay/relay"
)

// seedSecrets is the seed scenario's reference, as a user would annotate the pod.
const seedSecrets = `
- name: pulled-secrets
  data:
  - secretKey: username
    remoteRef:
      key: user-credentials
      property: username
`

var seedStore = relay.StoreRef{Kind: relay.SecretStoreKind, Name: "remote-k8s-store"}

// podAnnotations builds a pod's annotations; an empty store leaves secret-relay.io/store off.
func podAnnotations(store, secrets string) map[string]string {
	a := map[string]string{relay.AnnotationSecrets: secrets}
	if store != "" {
		a[relay.AnnotationStore] = store
	}
	return a
}

// seedRequest is what the seed annotation parses to.
func seedRequest() relay.SecretRequest {
	return relay.SecretRequest{
		Name:  "pulled-secrets",
		Store: seedStore,
		Data: []relay.DataEntry{{
			SecretKey: "username",
			RemoteRef: relay.RemoteRef{Key: "user-credentials", Property: "username"},
		}},
	}
}

// objectItem is a minimal valid object item with extra YAML fields spliced in.
func objectItem(name, extra string) string {
	return fmt.Sprintf("- name: %s\n  dataFrom:\n  - extract: {key: db-credentials}\n%s", name, extra)
}

func TestParseAnnotations(t *testing.T) {
	tests := map[string]struct {
		annotations map[string]string
		exp         []relay.SecretRequest
	}{
		"A pod without annotations should get nothing relayed.": {
			annotations: nil,
			exp:         nil,
		},
		"A pod with only a store annotation should get nothing relayed.": {
			annotations: map[string]string{relay.AnnotationStore: "remote-k8s-store"},
			exp:         nil,
		},
		"A pod without secrets should not have its store annotation checked.": {
			annotations: map[string]string{relay.AnnotationStore: "Bad/Store/"},
			exp:         nil,
		},
		"The seed example should take its store from the pod's default.": {
			annotations: podAnnotations("remote-k8s-store", seedSecrets),
			exp:         []relay.SecretRequest{seedRequest()},
		},
		"The seed example written as JSON should parse the same.": {
			annotations: podAnnotations("SecretStore/remote-k8s-store",
				`[{"name":"pulled-secrets","data":[{"secretKey":"username","remoteRef":{"key":"user-credentials","property":"username"}}]}]`),
			exp: []relay.SecretRequest{seedRequest()},
		},
		"JSON indented with tabs and escaping a slash should parse.": {
			annotations: podAnnotations("remote-k8s-store",
				"[\n\t{\"name\": \"db\", \"mountPath\": \"\\/etc\\/db\", \"dataFrom\": [{\"extract\": {\"key\": \"db-credentials\"}}]}\n]"),
			exp: []relay.SecretRequest{{
				Name:      "db",
				Store:     seedStore,
				DataFrom:  []relay.DataFromEntry{{Extract: relay.RemoteRef{Key: "db-credentials"}}},
				MountPath: "/etc/db",
			}},
		},
		"A string item should copy the whole remote Secret of that name.": {
			annotations: podAnnotations("remote-k8s-store", "- user-credentials"),
			exp: []relay.SecretRequest{{
				Name:        "user-credentials",
				Store:       seedStore,
				DataFrom:    []relay.DataFromEntry{{Extract: relay.RemoteRef{Key: "user-credentials"}}},
				WholeSecret: true,
			}},
		},
		"A JSON list of strings should parse.": {
			annotations: podAnnotations("remote-k8s-store", `["a", "b.c"]`),
			exp: []relay.SecretRequest{
				{Name: "a", Store: seedStore, DataFrom: []relay.DataFromEntry{{Extract: relay.RemoteRef{Key: "a"}}}, WholeSecret: true},
				{Name: "b.c", Store: seedStore, DataFrom: []relay.DataFromEntry{{Extract: relay.RemoteRef{Key: "b.c"}}}, WholeSecret: true},
			},
		},
		"An item naming a ClusterSecretStore should use it over the pod's default.": {
			annotations: podAnnotations("remote-k8s-store", `
- name: shared
  store: ClusterSecretStore/shared-store
  dataFrom:
  - extract: {key: db-credentials}
- plain
`),
			exp: []relay.SecretRequest{
				{
					Name:     "shared",
					Store:    relay.StoreRef{Kind: relay.ClusterSecretStoreKind, Name: "shared-store"},
					DataFrom: []relay.DataFromEntry{{Extract: relay.RemoteRef{Key: "db-credentials"}}},
				},
				{Name: "plain", Store: seedStore, DataFrom: []relay.DataFromEntry{{Extract: relay.RemoteRef{Key: "plain"}}}, WholeSecret: true},
			},
		},
		"Items naming their stores should need no pod default.": {
			annotations: podAnnotations("", `
- name: a
  store: other-store
  dataFrom: [{extract: {key: a}}]
- name: b
  store: SecretStore/other-store
  dataFrom: [{extract: {key: b}}]
`),
			exp: []relay.SecretRequest{
				{Name: "a", Store: relay.StoreRef{Kind: relay.SecretStoreKind, Name: "other-store"}, DataFrom: []relay.DataFromEntry{{Extract: relay.RemoteRef{Key: "a"}}}},
				{Name: "b", Store: relay.StoreRef{Kind: relay.SecretStoreKind, Name: "other-store"}, DataFrom: []relay.DataFromEntry{{Extract: relay.RemoteRef{Key: "b"}}}},
			},
		},
		"An item with every field should keep them all.": {
			annotations: podAnnotations("ClusterSecretStore/shared", `
- name: app
  store: app-store
  data:
  - secretKey: user
    remoteRef: {key: user-credentials, property: username}
  - secretKey: whole.json
    remoteRef: {key: user-credentials}
  dataFrom:
  - extract: {key: db-credentials}
  - extract: {key: api-keys}
  env: true
  mountPath: /etc/creds
`),
			exp: []relay.SecretRequest{{
				Name:  "app",
				Store: relay.StoreRef{Kind: relay.SecretStoreKind, Name: "app-store"},
				Data: []relay.DataEntry{
					{SecretKey: "user", RemoteRef: relay.RemoteRef{Key: "user-credentials", Property: "username"}},
					{SecretKey: "whole.json", RemoteRef: relay.RemoteRef{Key: "user-credentials"}},
				},
				DataFrom: []relay.DataFromEntry{
					{Extract: relay.RemoteRef{Key: "db-credentials"}},
					{Extract: relay.RemoteRef{Key: "api-keys"}},
				},
				Env:       true,
				MountPath: "/etc/creds",
			}},
		},
		"env false should be accepted.": {
			annotations: podAnnotations("s", objectItem("a", "  env: false\n")),
			exp: []relay.SecretRequest{{
				Name: "a", Store: relay.StoreRef{Kind: relay.SecretStoreKind, Name: "s"},
				DataFrom: []relay.DataFromEntry{{Extract: relay.RemoteRef{Key: "db-credentials"}}},
			}},
		},
		"An empty YAML list should relay nothing.": {
			annotations: podAnnotations("", "[]"),
			exp:         []relay.SecretRequest{},
		},
		"An empty JSON list with spaces should relay nothing.": {
			annotations: podAnnotations("remote-k8s-store", " [ ] "),
			exp:         []relay.SecretRequest{},
		},
		"A YAML document start marker should be accepted.": {
			annotations: podAnnotations("s", "---\n- a\n"),
			exp: []relay.SecretRequest{
				{Name: "a", Store: relay.StoreRef{Kind: relay.SecretStoreKind, Name: "s"}, DataFrom: []relay.DataFromEntry{{Extract: relay.RemoteRef{Key: "a"}}}, WholeSecret: true},
			},
		},
		"Exactly 64 items should be accepted.": {
			annotations: podAnnotations("s", manyItems(64)),
			exp:         manyRequests(64),
		},
	}

	for name, test := range tests {
		t.Run(name, func(t *testing.T) {
			assert := assert.New(t)
			require := require.New(t)

			got, err := ParseAnnotations(test.annotations)
			require.NoError(err)
			if test.exp == nil {
				assert.Nil(got)
				return
			}
			require.NotNil(got)
			assert.Equal(test.exp, got)
		})
	}
}

func TestParseAnnotationsErrors(t *testing.T) {
	tests := map[string]struct {
		annotations map[string]string
		// expAnnotation is the annotation the message must name; secrets unless set.
		expAnnotation string
		// expMsg must appear in the message, after "annotation <name>: ".
		expMsg string
	}{
		// The secrets annotation as a whole.
		"An empty secrets annotation should be denied.": {
			annotations: podAnnotations("s", ""),
			expMsg:      "not a YAML or JSON list: the value is empty",
		},
		"A secrets annotation of blanks should be denied.": {
			annotations: podAnnotations("s", " \n\t"),
			expMsg:      "not a YAML or JSON list: the value is empty",
		},
		"A secrets annotation of YAML null should be denied.": {
			annotations: podAnnotations("s", "~"),
			expMsg:      "not a YAML or JSON list: got null",
		},
		"A secrets annotation that is a map should be denied.": {
			annotations: podAnnotations("s", "name: a\ndataFrom: []"),
			expMsg:      "not a YAML or JSON list: got an object",
		},
		"A secrets annotation that is a bare name should be denied.": {
			annotations: podAnnotations("s", "user-credentials"),
			expMsg:      "not a YAML or JSON list: got a string",
		},
		"Broken YAML should be denied.": {
			annotations: podAnnotations("s", "- name: [a\n"),
			expMsg:      "not a YAML or JSON list: yaml:",
		},
		"Broken JSON should be denied.": {
			annotations: podAnnotations("s", `[{"name": "a",]`),
			expMsg:      "not a YAML or JSON list:",
		},
		"A duplicate key in YAML should be denied.": {
			annotations: podAnnotations("s", "- name: a\n  name: b\n  dataFrom: [{extract: {key: a}}]"),
			expMsg:      `not a YAML or JSON list: yaml: unmarshal errors: line 2: key "name" already set in map`,
		},
		"Several YAML documents should be denied rather than all but one dropped.": {
			annotations: podAnnotations("s", "- a\n---\n- b\n"),
			expMsg:      "not a YAML or JSON list: more than one YAML document",
		},
		"More than 64 items should be denied.": {
			annotations: podAnnotations("s", manyItems(65)),
			expMsg:      "the list has 65 items, over the limit of 64",
		},
		"A value over 64 KiB should be denied.": {
			annotations: podAnnotations("s", "- "+strings.Repeat("a", 64<<10)),
			expMsg:      "bytes, over the limit of 65536 (64 KiB)",
		},

		// The store annotation.
		"An empty store annotation should be denied.": {
			annotations:   map[string]string{relay.AnnotationStore: "", relay.AnnotationSecrets: "- a"},
			expAnnotation: relay.AnnotationStore,
			expMsg:        "the store reference is empty",
		},
		"A store annotation of an unknown kind should be denied.": {
			annotations:   podAnnotations("Vault/x", "- a"),
			expAnnotation: relay.AnnotationStore,
			expMsg:        `store kind "Vault" in "Vault/x" is not SecretStore or ClusterSecretStore`,
		},
		"A store annotation with a lower-case kind should be denied.": {
			annotations:   podAnnotations("clustersecretstore/x", "- a"),
			expAnnotation: relay.AnnotationStore,
			expMsg:        `store kind "clustersecretstore"`,
		},
		"A store annotation with an invalid name should be denied.": {
			annotations:   podAnnotations("ClusterSecretStore/Not_Valid", "- a"),
			expAnnotation: relay.AnnotationStore,
			expMsg:        `store name "Not_Valid" is not a valid name`,
		},
		"A store annotation with a kind and no name should be denied.": {
			annotations:   podAnnotations("SecretStore/", "- a"),
			expAnnotation: relay.AnnotationStore,
			expMsg:        `store name "" is not a valid name`,
		},
		"A store annotation with two slashes should be denied.": {
			annotations:   podAnnotations("SecretStore/a/b", "- a"),
			expAnnotation: relay.AnnotationStore,
			expMsg:        `store name "a/b" is not a valid name`,
		},

		// Item types.
		"A null item should be denied.": {
			annotations: podAnnotations("s", "- a\n- null"),
			expMsg:      "item 2: must be a string or an object, got null",
		},
		"An empty YAML item should be denied.": {
			annotations: podAnnotations("s", "- a\n-\n"),
			expMsg:      "item 2: must be a string or an object, got null",
		},
		"A YAML boolean item should be denied with a hint to quote it.": {
			annotations: podAnnotations("s", "- yes"),
			expMsg:      "item 1: must be a string or an object, got a boolean (quote names",
		},
		"A number item should be denied.": {
			annotations: podAnnotations("s", "[1234]"),
			expMsg:      "item 1: must be a string or an object, got a number",
		},
		"A list item should be denied.": {
			annotations: podAnnotations("s", "- [a]"),
			expMsg:      "item 1: must be a string or an object, got a list",
		},

		// The string form.
		"An empty string item should be denied.": {
			annotations: podAnnotations("s", `- ""`),
			expMsg:      "item 1: is an empty string",
		},
		"A string item with an invalid name should be denied.": {
			annotations: podAnnotations("s", "- a\n- User_Credentials"),
			expMsg:      `item 2: "User_Credentials" is not a valid Secret name`,
		},
		"A string item with no store anywhere should be denied.": {
			annotations: podAnnotations("", "- user-credentials"),
			expMsg:      `item 1 ("user-credentials"): no store: set store on the item or annotate the pod with secret-relay.io/store`,
		},
		"A very long invalid name should be echoed cut short.": {
			annotations: podAnnotations("s", "- "+strings.Repeat("A", 300)),
			expMsg:      `item 1: "` + strings.Repeat("A", 64) + `"... is not a valid Secret name`,
		},

		// Unknown, duplicate and misspelt fields.
		"An unknown field on an item should be denied.": {
			annotations: podAnnotations("s", seedSecrets+"  foo: bar\n"),
			expMsg:      `item 1 ("pulled-secrets"): unknown field "foo"`,
		},
		"A field in the wrong case should be denied as unknown.": {
			annotations: podAnnotations("s", objectItem("a", "  mountpath: /etc/a\n")),
			expMsg:      `item 1 ("a"): unknown field "mountpath"`,
		},
		"A JSON field in the wrong case should be denied as unknown.": {
			annotations: podAnnotations("s", `[{"name":"a","Name":"b","dataFrom":[{"extract":{"key":"a"}}]}]`),
			expMsg:      `item 1 ("a"): unknown field "Name"`,
		},
		"A duplicate field in JSON should be denied.": {
			annotations: podAnnotations("s", `[{"name":"a","name":"a","dataFrom":[{"extract":{"key":"a"}}]}]`),
			expMsg:      `item 1 ("a"): duplicate field "name"`,
		},
		"An unknown field in remoteRef should be denied with its path.": {
			annotations: podAnnotations("s", `
- name: db
  data:
  - secretKey: a
    remoteRef: {key: a, version: "1"}
`),
			expMsg: `item 1 ("db"): unknown field "data[0].remoteRef.version"`,
		},
		"A property in extract should be denied.": {
			annotations: podAnnotations("s", "- name: db\n  dataFrom:\n  - extract: {key: a, property: b}\n"),
			expMsg:      `item 1 ("db"): unknown field "dataFrom[0].extract.property"`,
		},
		"ExternalSecret's target field should be denied.": {
			annotations: podAnnotations("s", objectItem("a", "  target: {name: b}\n")),
			expMsg:      `item 1 ("a"): unknown field "target"`,
		},

		// Wrong types.
		"env as a string should be denied.": {
			annotations: podAnnotations("s", objectItem("a", "  env: \"true\"\n")),
			expMsg:      `item 1 ("a"): env must be a boolean, got a string`,
		},
		"A number as a secret key should be denied.": {
			annotations: podAnnotations("s", "- name: a\n  data:\n  - secretKey: 1234\n    remoteRef: {key: a}\n"),
			expMsg:      `item 1 ("a"): data.secretKey must be a string, got a number`,
		},
		"data as an object should be denied.": {
			annotations: podAnnotations("s", "- name: a\n  data: {secretKey: a, remoteRef: {key: a}}\n"),
			expMsg:      `item 1 ("a"): data must be a list, got an object`,
		},
		"remoteRef as a string should be denied.": {
			annotations: podAnnotations("s", "- name: a\n  data:\n  - {secretKey: a, remoteRef: user-credentials}\n"),
			expMsg:      `item 1 ("a"): data.remoteRef must be an object, got a string`,
		},
		"A YAML boolean as a name should be denied, not read as \"true\".": {
			annotations: podAnnotations("s", "- name: yes\n  dataFrom: [{extract: {key: a}}]\n"),
			expMsg:      `item 1: name must be a string, got a boolean`,
		},

		// Empty values.
		"A missing name should be denied.": {
			annotations: podAnnotations("s", "- dataFrom: [{extract: {key: a}}]\n"),
			expMsg:      "item 1: name is required",
		},
		"An empty name should be denied.": {
			annotations: podAnnotations("s", "- name: \"\"\n  dataFrom: [{extract: {key: a}}]\n"),
			expMsg:      "item 1: name is empty",
		},
		"An empty store on an item should be denied, not defaulted.": {
			annotations: podAnnotations("s", objectItem("a", "  store: \"\"\n")),
			expMsg:      `item 1 ("a"): store is empty`,
		},
		"A null mountPath should be denied.": {
			annotations: podAnnotations("s", objectItem("a", "  mountPath:\n")),
			expMsg:      `item 1 ("a"): mountPath is empty`,
		},
		"An empty property should be denied.": {
			annotations: podAnnotations("s", "- name: a\n  data:\n  - {secretKey: a, remoteRef: {key: a, property: \"\"}}\n"),
			expMsg:      `item 1 ("a"): data[0].remoteRef.property is empty`,
		},
		"A null data entry should be denied.": {
			annotations: podAnnotations("s", "- name: a\n  data: [null]\n"),
			expMsg:      `item 1 ("a"): data[0] is empty`,
		},
		"A missing secretKey should be denied.": {
			annotations: podAnnotations("s", "- name: a\n  data:\n  - remoteRef: {key: a}\n"),
			expMsg:      `item 1 ("a"): data[0].secretKey is required`,
		},
		"A missing remoteRef should be denied.": {
			annotations: podAnnotations("s", "- name: a\n  data:\n  - secretKey: a\n"),
			expMsg:      `item 1 ("a"): data[0].remoteRef.key is required`,
		},
		"An empty extract should be denied.": {
			annotations: podAnnotations("s", "- name: a\n  dataFrom:\n  - extract: {}\n"),
			expMsg:      `item 1 ("a"): dataFrom[0].extract.key is required`,
		},

		// The object form's rules.
		"An object with no data nor dataFrom should be denied.": {
			annotations: podAnnotations("s", "- name: a\n  env: true\n"),
			expMsg:      `item 1 ("a"): needs at least one data or dataFrom entry`,
		},
		"An object with empty data and dataFrom lists should be denied.": {
			annotations: podAnnotations("s", "- name: a\n  data: []\n  dataFrom: []\n"),
			expMsg:      `item 1 ("a"): needs at least one data or dataFrom entry`,
		},
		"An object with an invalid name should be denied.": {
			annotations: podAnnotations("s", "- a\n- name: -db\n  dataFrom: [{extract: {key: a}}]\n"),
			expMsg:      `item 2: name "-db" is not a valid Secret name`,
		},
		"An invalid secret key should be denied with the item's position and name.": {
			annotations: podAnnotations("s", `
- other
- name: db
  data:
  - secretKey: ok
    remoteRef: {key: a}
  - secretKey: x y
    remoteRef: {key: a}
`),
			expMsg: `item 2 ("db"): data[1].secretKey "x y" is not a valid Secret key`,
		},
		"An invalid remote key should be denied.": {
			annotations: podAnnotations("s", "- name: a\n  data:\n  - {secretKey: a, remoteRef: {key: Upper}}\n"),
			expMsg:      `item 1 ("a"): data[0].remoteRef.key "Upper" is not a valid Secret name`,
		},
		"An invalid property should be denied.": {
			annotations: podAnnotations("s", "- name: a\n  data:\n  - {secretKey: a, remoteRef: {key: a, property: a/b}}\n"),
			expMsg:      `item 1 ("a"): data[0].remoteRef.property "a/b" is not a valid Secret key`,
		},
		"An invalid extract key should be denied.": {
			annotations: podAnnotations("s", "- name: a\n  dataFrom:\n  - extract: {key: a_b}\n"),
			expMsg:      `item 1 ("a"): dataFrom[0].extract.key "a_b" is not a valid Secret name`,
		},
		"Two data entries with one secretKey should be denied.": {
			annotations: podAnnotations("s", "- name: a\n  data:\n  - {secretKey: k, remoteRef: {key: a, property: p}}\n  - {secretKey: k, remoteRef: {key: b, property: q}}\n"),
			expMsg:      `item 1 ("a"): data[1].secretKey "k" is already used by data[0]`,
		},
		"Two dataFrom entries of one remote Secret should be denied.": {
			annotations: podAnnotations("s", "- name: a\n  dataFrom:\n  - extract: {key: x}\n  - extract: {key: x}\n"),
			expMsg:      `item 1 ("a"): dataFrom[1].extract.key "x" is already used by dataFrom[0]`,
		},
		"An item naming an unknown store kind should be denied.": {
			annotations: podAnnotations("s", objectItem("a", "  store: Vault/x\n")),
			expMsg:      `item 1 ("a"): store kind "Vault" in "Vault/x" is not SecretStore or ClusterSecretStore`,
		},
		"An object with no store anywhere should be denied.": {
			annotations: podAnnotations("", seedSecrets),
			expMsg:      `item 1 ("pulled-secrets"): no store`,
		},

		// mountPath.
		"A relative mountPath should be denied.": {
			annotations: podAnnotations("s", objectItem("a", "  mountPath: etc/creds\n")),
			expMsg:      `item 1 ("a"): mountPath "etc/creds" is not an absolute path`,
		},
		"A mountPath of / should be denied.": {
			annotations: podAnnotations("s", objectItem("a", "  mountPath: /\n")),
			expMsg:      `item 1 ("a"): mountPath must not be "/"`,
		},
		"A mountPath with .. should be denied.": {
			annotations: podAnnotations("s", objectItem("a", "  mountPath: /etc/../root\n")),
			expMsg:      `item 1 ("a"): mountPath "/etc/../root" is not a clean path`,
		},
		"A mountPath with a trailing slash should be denied.": {
			annotations: podAnnotations("s", objectItem("a", "  mountPath: /etc/creds/\n")),
			expMsg:      `item 1 ("a"): mountPath "/etc/creds/" is not a clean path`,
		},
		"A mountPath with a colon should be denied.": {
			annotations: podAnnotations("s", objectItem("a", "  mountPath: \"/etc/a:b\"\n")),
			expMsg:      `item 1 ("a"): mountPath "/etc/a:b" must not contain ':'`,
		},

		// Across items.
		"Two items with one name should be denied.": {
			annotations: podAnnotations("s", "- db\n- other\n"+objectItem("db", "")),
			expMsg:      `item 3 ("db"): name "db" is already used by item 1 ("db")`,
		},
		"Two items mounted at one path should be denied.": {
			annotations: podAnnotations("s", objectItem("a", "  mountPath: /etc/creds\n")+objectItem("b", "  mountPath: /etc/creds\n")),
			expMsg:      `item 2 ("b"): mountPath "/etc/creds" is already used by item 1 ("a")`,
		},
	}

	for name, test := range tests {
		t.Run(name, func(t *testing.T) {
			assert := assert.New(t)
			require := require.New(t)

			got, err := ParseAnnotations(test.annotations)
			require.Error(err)
			assert.Nil(got)

			var deny *DenyError
			require.True(errors.As(err, &deny), "error %q is not a DenyError", err)
			annotation := test.expAnnotation
			if annotation == "" {
				annotation = relay.AnnotationSecrets
			}
			assert.Contains(err.Error(), DenyPrefix+"annotation "+annotation+": ")
			assert.Contains(err.Error(), test.expMsg)
			assert.NotContains(err.Error(), "\n")
			assert.Less(len(err.Error()), 400, "a denial should stay short")
		})
	}
}

func TestParseStoreRef(t *testing.T) {
	tests := map[string]struct {
		in     string
		exp    relay.StoreRef
		expErr string
	}{
		"A bare name should be a SecretStore.": {
			in:  "remote-k8s-store",
			exp: relay.StoreRef{Kind: relay.SecretStoreKind, Name: "remote-k8s-store"},
		},
		"SecretStore/NAME should be a SecretStore.": {
			in:  "SecretStore/remote-k8s-store",
			exp: relay.StoreRef{Kind: relay.SecretStoreKind, Name: "remote-k8s-store"},
		},
		"ClusterSecretStore/NAME should be a ClusterSecretStore.": {
			in:  "ClusterSecretStore/shared.example.com",
			exp: relay.StoreRef{Kind: relay.ClusterSecretStoreKind, Name: "shared.example.com"},
		},
		"An empty reference should be refused.": {
			in:     "",
			expErr: "the store reference is empty",
		},
		"An unknown kind should be refused.": {
			in:     "ExternalSecret/x",
			expErr: `store kind "ExternalSecret" in "ExternalSecret/x" is not SecretStore or ClusterSecretStore`,
		},
		"A leading slash should be refused.": {
			in:     "/x",
			expErr: `store kind "" in "/x"`,
		},
		"A name with spaces should be refused.": {
			in:     " x",
			expErr: `store name " x" is not a valid name`,
		},
		"A name over 253 characters should be refused.": {
			in:     strings.Repeat("a", 254),
			expErr: "is not a valid name",
		},
	}

	for name, test := range tests {
		t.Run(name, func(t *testing.T) {
			assert := assert.New(t)

			got, err := parseStoreRef(test.in)
			if test.expErr != "" {
				assert.ErrorContains(err, test.expErr)
				assert.Equal(relay.StoreRef{}, got)
				return
			}
			assert.NoError(err)
			assert.Equal(test.exp, got)
		})
	}
}

// manyItems is a YAML list of n string items.
func manyItems(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "- s%d\n", i)
	}
	return b.String()
}

// manyRequests is what manyItems(n) parses to with the store "s".
func manyRequests(n int) []relay.SecretRequest {
	reqs := make([]relay.SecretRequest, 0, n)
	for i := range n {
		name := fmt.Sprintf("s%d", i)
		reqs = append(reqs, relay.SecretRequest{
			Name:        name,
			Store:       relay.StoreRef{Kind: relay.SecretStoreKind, Name: "s"},
			DataFrom:    []relay.DataFromEntry{{Extract: relay.RemoteRef{Key: name}}},
			WholeSecret: true,
		})
	}
	return reqs
}
