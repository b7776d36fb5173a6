package relay_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/secret-relay/secret-relay/relay"
	"github.com/secret-relay/secret-relay/webhook"
)

var testSyncedAt = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

var testStore = relay.StoreRef{Kind: relay.SecretStoreKind, Name: "remote-k8s-store"}

// upstream returns an upstream Secret as a remote client would read it.
func upstream(name string, typ corev1.SecretType, kv map[string]string) *corev1.Secret {
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Type:       typ,
		Data:       map[string][]byte{},
	}
	for k, v := range kv {
		s.Data[k] = []byte(v)
	}
	return s
}

func bytesData(kv map[string]string) map[string][]byte {
	d := map[string][]byte{}
	for k, v := range kv {
		d[k] = []byte(v)
	}
	return d
}

// planned is the Secret relay.PlanSecret should return.
func planned(name string, typ corev1.SecretType, src string, kv map[string]string) *corev1.Secret {
	data := bytesData(kv)
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name:      name,
			Namespace: "prod",
			Labels:    map[string]string{relay.LabelManagedBy: relay.ManagedByValue},
			Annotations: map[string]string{
				relay.AnnotationSource:   src,
				relay.AnnotationDataHash: testTokens.Token(data),
				relay.AnnotationSyncedAt: "2026-01-01T00:00:00Z",
			},
		},
		Type: typ,
		Data: data,
	}
}

func dataRef(secretKey, key, property string) relay.DataEntry {
	return relay.DataEntry{SecretKey: secretKey, RemoteRef: relay.RemoteRef{Key: key, Property: property}}
}

func extract(key string) relay.DataFromEntry {
	return relay.DataFromEntry{Extract: relay.RemoteRef{Key: key}}
}

// testTokens keys the tokens of the tests: 32 bytes of "k".
var testTokens = func() relay.TokenKey {
	k, err := relay.NewTokenKey(bytes.Repeat([]byte("k"), 32))
	if err != nil {
		panic(err)
	}
	return k
}()

func TestTokenKey(t *testing.T) {
	// streamToken builds the byte stream by hand, apart from Token's code.
	streamToken := func(key []byte, parts ...string) string {
		var stream []byte
		for _, p := range parts {
			stream = binary.BigEndian.AppendUint64(stream, uint64(len(p)))
			stream = append(stream, p...)
		}
		mac := hmac.New(sha256.New, key)
		mac.Write(stream)
		return relay.TokenPrefix + hex.EncodeToString(mac.Sum(nil))
	}
	key := bytes.Repeat([]byte("k"), 32)

	tests := map[string]struct {
		data     map[string][]byte
		expToken string
	}{
		"One key should give the published test vector.": {
			data: bytesData(map[string]string{"a": "1"}),
			// HMAC-SHA256 under "k"x32 of 00..01 'a' 00..01 '1', computed outside Go.
			expToken: "hmac-sha256:a18a8809328cd3281169e13ebb88d37be05906e8aea5883b975649db74eea989",
		},
		"One key should give the token of its explicit byte stream.": {
			data:     bytesData(map[string]string{"a": "1"}),
			expToken: streamToken(key, "a", "1"),
		},
		"No data should give the HMAC of nothing.": {
			data:     nil,
			expToken: "hmac-sha256:a4ad8e340e32bf1d916005cb1dc92795148897965e36ae56c0adc357474b5372",
		},
		"Keys should be encoded in sorted order.": {
			data:     bytesData(map[string]string{"username": "peter", "password": "asdf1234"}),
			expToken: streamToken(key, "password", "asdf1234", "username", "peter"),
		},
		"An empty value should still be length-delimited.": {
			data:     map[string][]byte{"empty": {}},
			expToken: streamToken(key, "empty", ""),
		},
		"A nil value should give the token of an empty one.": {
			data:     map[string][]byte{"empty": nil},
			expToken: streamToken(key, "empty", ""),
		},
		"Moving a byte from the key to the value should change the token.": {
			data:     bytesData(map[string]string{"ab": "c"}),
			expToken: "hmac-sha256:02da79c54ac65cad21e85fd6897eee9541cbb85926b40ab48ea048d9629d4af2",
		},
		"The value side of the moved byte should give another token.": {
			data:     bytesData(map[string]string{"a": "bc"}),
			expToken: "hmac-sha256:a5ad25f792cb49a995331bfd46ab03b6af696fc406d82f166990dbe82ae174ad",
		},
	}
	for name, test := range tests {
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, test.expToken, testTokens.Token(test.data))
		})
	}

	t.Run("Another key should give another token for the same data.", func(t *testing.T) {
		other, err := relay.NewTokenKey(bytes.Repeat([]byte("o"), 32))
		require.NoError(t, err)
		data := bytesData(map[string]string{"username": "peter"})
		assert.NotEqual(t, testTokens.Token(data), other.Token(data))
	})
	t.Run("The token should not hold the unkeyed digest of the data.", func(t *testing.T) {
		data := bytesData(map[string]string{"username": "peter"})
		unkeyed := hex.EncodeToString(relay.LengthDelimitedSum(sha256.New(), data))
		assert.NotContains(t, testTokens.Token(data), unkeyed)
	})
	t.Run("A short key should be refused.", func(t *testing.T) {
		_, err := relay.NewTokenKey([]byte("short"))
		assert.Error(t, err)
	})
	t.Run("Generated keys should differ.", func(t *testing.T) {
		a, err := relay.GenerateTokenKey()
		require.NoError(t, err)
		b, err := relay.GenerateTokenKey()
		require.NoError(t, err)
		data := bytesData(map[string]string{"k": "v"})
		assert.NotEqual(t, a.Token(data), b.Token(data))
	})
}

func TestSource(t *testing.T) {
	seed := relay.SecretRequest{
		Name:  "pulled-secrets",
		Store: testStore,
		Data:  []relay.DataEntry{dataRef("username", "user-credentials", "username")},
	}
	tests := map[string]struct {
		req       relay.SecretRequest
		expString string
	}{
		"The seed request should render as compact JSON with its store and data.": {
			req:       seed,
			expString: `{"store":{"kind":"SecretStore","name":"remote-k8s-store"},"data":[{"secretKey":"username","remoteRef":{"key":"user-credentials","property":"username"}}]}`,
		},
		"Entries should render sorted, whatever their order in the annotation.": {
			req: relay.SecretRequest{
				Name:     "app",
				Store:    relay.StoreRef{Kind: relay.ClusterSecretStoreKind, Name: "shared"},
				Data:     []relay.DataEntry{dataRef("z", "b", "z"), dataRef("a", "b", "a")},
				DataFrom: []relay.DataFromEntry{extract("y"), extract("x")},
				Env:      true,
			},
			expString: `{"store":{"kind":"ClusterSecretStore","name":"shared"},"data":[{"secretKey":"a","remoteRef":{"key":"b","property":"a"}},{"secretKey":"z","remoteRef":{"key":"b","property":"z"}}],"dataFrom":[{"extract":{"key":"x"}},{"extract":{"key":"y"}}]}`,
		},
		"The string form should render as the one dataFrom it means.": {
			req:       relay.SecretRequest{Name: "db", Store: testStore, WholeSecret: true},
			expString: `{"store":{"kind":"SecretStore","name":"remote-k8s-store"},"dataFrom":[{"extract":{"key":"db"}}]}`,
		},
		"Env and mountPath should not be part of the source.": {
			req:       relay.SecretRequest{Name: "db", Store: testStore, DataFrom: []relay.DataFromEntry{extract("db")}, Env: true, MountPath: "/etc/db"},
			expString: `{"store":{"kind":"SecretStore","name":"remote-k8s-store"},"dataFrom":[{"extract":{"key":"db"}}]}`,
		},
	}
	for name, test := range tests {
		t.Run(name, func(t *testing.T) {
			assert := assert.New(t)
			src := relay.SourceOf(test.req)
			assert.Equal(test.expString, src.String())

			parsed, err := relay.ParseSource(src.String())
			require.NoError(t, err)
			assert.True(parsed.Equal(src), "a parsed source should equal the one rendered")
			assert.Equal(src.String(), parsed.String(), "a round trip should not change the annotation")
		})
	}
}

func TestSourceEqual(t *testing.T) {
	base := relay.SecretRequest{
		Name:     "app",
		Store:    testStore,
		Data:     []relay.DataEntry{dataRef("username", "user-credentials", "username"), dataRef("password", "user-credentials", "password")},
		DataFrom: []relay.DataFromEntry{extract("db")},
	}
	tests := map[string]struct {
		other    relay.SecretRequest
		expEqual bool
	}{
		"The same request should be the same source.": {
			other:    base,
			expEqual: true,
		},
		"Reordered entries should be the same source.": {
			other: relay.SecretRequest{
				Name:     "app",
				Store:    testStore,
				Data:     []relay.DataEntry{base.Data[1], base.Data[0]},
				DataFrom: base.DataFrom,
			},
			expEqual: true,
		},
		"Another local name, env or mountPath should be the same source.": {
			other:    relay.SecretRequest{Name: "other", Store: testStore, Data: base.Data, DataFrom: base.DataFrom, Env: true, MountPath: "/x"},
			expEqual: true,
		},
		"Another store kind should be a different source.": {
			other:    relay.SecretRequest{Name: "app", Store: relay.StoreRef{Kind: relay.ClusterSecretStoreKind, Name: testStore.Name}, Data: base.Data, DataFrom: base.DataFrom},
			expEqual: false,
		},
		"Another store name should be a different source.": {
			other:    relay.SecretRequest{Name: "app", Store: relay.StoreRef{Kind: relay.SecretStoreKind, Name: "a"}, Data: base.Data, DataFrom: base.DataFrom},
			expEqual: false,
		},
		"One key fewer should be a different source.": {
			other:    relay.SecretRequest{Name: "app", Store: testStore, Data: base.Data[:1], DataFrom: base.DataFrom},
			expEqual: false,
		},
		"Another property should be a different source.": {
			other: relay.SecretRequest{Name: "app", Store: testStore, Data: []relay.DataEntry{
				dataRef("username", "user-credentials", "usrname"), base.Data[1],
			}, DataFrom: base.DataFrom},
			expEqual: false,
		},
		"Another dataFrom should be a different source.": {
			other:    relay.SecretRequest{Name: "app", Store: testStore, Data: base.Data, DataFrom: []relay.DataFromEntry{extract("db2")}},
			expEqual: false,
		},
	}
	for name, test := range tests {
		t.Run(name, func(t *testing.T) {
			a, b := relay.SourceOf(base), relay.SourceOf(test.other)
			assert.Equal(t, test.expEqual, a.Equal(b))
			assert.Equal(t, test.expEqual, b.Equal(a), "equality should be symmetric")
		})
	}

	t.Run("The string form should be the same source as its one-dataFrom object form.", func(t *testing.T) {
		short := relay.SourceOf(relay.SecretRequest{Name: "db", Store: testStore, WholeSecret: true})
		long := relay.SourceOf(relay.SecretRequest{Name: "db", Store: testStore, DataFrom: []relay.DataFromEntry{extract("db")}})
		assert.True(t, short.Equal(long))
	})
}

func TestParseSource(t *testing.T) {
	tests := map[string]struct {
		annotation string
		expErr     bool
		expSource  relay.Source
	}{
		"A well-formed annotation should parse.": {
			annotation: `{"store":{"kind":"SecretStore","name":"a"},"dataFrom":[{"extract":{"key":"db"}}]}`,
			expSource:  relay.Source{Store: relay.StoreRef{Kind: relay.SecretStoreKind, Name: "a"}, DataFrom: []relay.DataFromEntry{extract("db")}},
		},
		"Unknown fields from a newer version should be ignored.": {
			annotation: `{"store":{"kind":"SecretStore","name":"a"},"dataFrom":[{"extract":{"key":"db"}}],"future":1}`,
			expSource:  relay.Source{Store: relay.StoreRef{Kind: relay.SecretStoreKind, Name: "a"}, DataFrom: []relay.DataFromEntry{extract("db")}},
		},
		"An empty annotation should fail.": {
			annotation: "",
			expErr:     true,
		},
		"Malformed JSON should fail.": {
			annotation: `{"store":`,
			expErr:     true,
		},
		"A source without a store should fail.": {
			annotation: `{"dataFrom":[{"extract":{"key":"db"}}]}`,
			expErr:     true,
		},
	}
	for name, test := range tests {
		t.Run(name, func(t *testing.T) {
			src, err := relay.ParseSource(test.annotation)
			if test.expErr {
				assert.Error(t, err)
				assert.Contains(t, err.Error(), relay.AnnotationSource)
				return
			}
			require.NoError(t, err)
			assert.True(t, test.expSource.Equal(src))
		})
	}
}

func TestPlanSecret(t *testing.T) {
	userCredentials := upstream("user-credentials", corev1.SecretTypeOpaque, map[string]string{"username": "peter", "password": "asdf1234"})
	// Metadata that must never travel downstream.
	userCredentials.Labels = map[string]string{"team": "a"}
	userCredentials.Annotations = map[string]string{"kubectl.kubernetes.io/last-applied-configuration": `{"stringData":{"password":"asdf1234"}}`}
	userCredentials.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: "owner", UID: "1"}}
	userCredentials.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}
	userCredentials.UID = "uid-upstream"
	userCredentials.ResourceVersion = "42"

	dbTLS := upstream("db-tls", corev1.SecretTypeTLS, map[string]string{"tls.crt": "CERT", "tls.key": "KEY"})
	untyped := upstream("untyped", "", map[string]string{"k": "v"})
	token := upstream("builder-token", corev1.SecretTypeServiceAccountToken, map[string]string{"token": "eyJhbGciOi"})
	other := upstream("other", corev1.SecretTypeOpaque, map[string]string{"username": "paul", "extra": "x"})
	remote := relay.RemoteSecrets{
		"user-credentials": relay.RemoteOf(userCredentials),
		"db-tls":           relay.RemoteOf(dbTLS),
		"untyped":          relay.RemoteOf(untyped),
		"builder-token":    relay.RemoteOf(token),
		"other":            relay.RemoteOf(other),
	}

	tests := map[string]struct {
		req       relay.SecretRequest
		expSecret *corev1.Secret
		expErr    string
	}{
		"The seed request should copy the username and nothing else from upstream.": {
			req: relay.SecretRequest{Name: "pulled-secrets", Store: testStore, Data: []relay.DataEntry{dataRef("username", "user-credentials", "username")}},
			expSecret: planned("pulled-secrets", corev1.SecretTypeOpaque,
				`{"store":{"kind":"SecretStore","name":"remote-k8s-store"},"data":[{"secretKey":"username","remoteRef":{"key":"user-credentials","property":"username"}}]}`,
				map[string]string{"username": "peter"}),
		},
		"A data entry should copy a property under another key.": {
			req: relay.SecretRequest{Name: "app", Store: testStore, Data: []relay.DataEntry{dataRef("DB_USER", "user-credentials", "username")}},
			expSecret: planned("app", corev1.SecretTypeOpaque,
				`{"store":{"kind":"SecretStore","name":"remote-k8s-store"},"data":[{"secretKey":"DB_USER","remoteRef":{"key":"user-credentials","property":"username"}}]}`,
				map[string]string{"DB_USER": "peter"}),
		},
		"The string form should copy the whole remote Secret and keep its type.": {
			req: relay.SecretRequest{Name: "db-tls", Store: testStore, WholeSecret: true, DataFrom: []relay.DataFromEntry{extract("db-tls")}},
			expSecret: planned("db-tls", corev1.SecretTypeTLS,
				`{"store":{"kind":"SecretStore","name":"remote-k8s-store"},"dataFrom":[{"extract":{"key":"db-tls"}}]}`,
				map[string]string{"tls.crt": "CERT", "tls.key": "KEY"}),
		},
		"The string form should work even when the parser leaves dataFrom empty.": {
			req: relay.SecretRequest{Name: "db-tls", Store: testStore, WholeSecret: true},
			expSecret: planned("db-tls", corev1.SecretTypeTLS,
				`{"store":{"kind":"SecretStore","name":"remote-k8s-store"},"dataFrom":[{"extract":{"key":"db-tls"}}]}`,
				map[string]string{"tls.crt": "CERT", "tls.key": "KEY"}),
		},
		"One dataFrom and no data should keep the remote type under another name.": {
			req: relay.SecretRequest{Name: "web-tls", Store: testStore, DataFrom: []relay.DataFromEntry{extract("db-tls")}},
			expSecret: planned("web-tls", corev1.SecretTypeTLS,
				`{"store":{"kind":"SecretStore","name":"remote-k8s-store"},"dataFrom":[{"extract":{"key":"db-tls"}}]}`,
				map[string]string{"tls.crt": "CERT", "tls.key": "KEY"}),
		},
		"A whole remote Secret without a type should become Opaque.": {
			req: relay.SecretRequest{Name: "untyped", Store: testStore, WholeSecret: true, DataFrom: []relay.DataFromEntry{extract("untyped")}},
			expSecret: planned("untyped", corev1.SecretTypeOpaque,
				`{"store":{"kind":"SecretStore","name":"remote-k8s-store"},"dataFrom":[{"extract":{"key":"untyped"}}]}`,
				map[string]string{"k": "v"}),
		},
		"Data and dataFrom together should merge into an Opaque Secret.": {
			req: relay.SecretRequest{Name: "mixed", Store: testStore,
				Data:     []relay.DataEntry{dataRef("username", "user-credentials", "username")},
				DataFrom: []relay.DataFromEntry{extract("db-tls")}},
			expSecret: planned("mixed", corev1.SecretTypeOpaque,
				`{"store":{"kind":"SecretStore","name":"remote-k8s-store"},"data":[{"secretKey":"username","remoteRef":{"key":"user-credentials","property":"username"}}],"dataFrom":[{"extract":{"key":"db-tls"}}]}`,
				map[string]string{"username": "peter", "tls.crt": "CERT", "tls.key": "KEY"}),
		},
		"Two dataFrom entries should merge into an Opaque Secret.": {
			req: relay.SecretRequest{Name: "merged", Store: testStore, DataFrom: []relay.DataFromEntry{extract("db-tls"), extract("untyped")}},
			expSecret: planned("merged", corev1.SecretTypeOpaque,
				`{"store":{"kind":"SecretStore","name":"remote-k8s-store"},"dataFrom":[{"extract":{"key":"db-tls"}},{"extract":{"key":"untyped"}}]}`,
				map[string]string{"tls.crt": "CERT", "tls.key": "KEY", "k": "v"}),
		},
		"A missing remote Secret should be denied.": {
			req:    relay.SecretRequest{Name: "app", Store: testStore, Data: []relay.DataEntry{dataRef("username", "x", "username")}},
			expErr: `remote Secret "x" not found`,
		},
		"A missing remote Secret in dataFrom should be denied.": {
			req:    relay.SecretRequest{Name: "x", Store: testStore, WholeSecret: true},
			expErr: `remote Secret "x" not found`,
		},
		"A missing property should be denied.": {
			req:    relay.SecretRequest{Name: "pulled-secrets", Store: testStore, Data: []relay.DataEntry{dataRef("username", "user-credentials", "usrname")}},
			expErr: `remote Secret "user-credentials" has no key "usrname"`,
		},
		"A data entry without a property should be denied.": {
			req:    relay.SecretRequest{Name: "pulled-secrets", Store: testStore, Data: []relay.DataEntry{dataRef("username", "user-credentials", "")}},
			expErr: `local Secret "pulled-secrets": key "username" names no property of remote Secret "user-credentials"`,
		},
		"A service-account token copied whole should be refused.": {
			req:    relay.SecretRequest{Name: "builder-token", Store: testStore, WholeSecret: true, DataFrom: []relay.DataFromEntry{extract("builder-token")}},
			expErr: `remote Secret "builder-token" is a service-account token; secret-relay does not relay tokens`,
		},
		"One key of a service-account token should be refused too.": {
			req:    relay.SecretRequest{Name: "app", Store: testStore, Data: []relay.DataEntry{dataRef("token", "builder-token", "token")}},
			expErr: `remote Secret "builder-token" is a service-account token; secret-relay does not relay tokens`,
		},
		"A data key that a dataFrom also yields should be denied.": {
			req: relay.SecretRequest{Name: "pulled-secrets", Store: testStore,
				Data:     []relay.DataEntry{dataRef("username", "user-credentials", "username")},
				DataFrom: []relay.DataFromEntry{extract("other")}},
			expErr: `local Secret "pulled-secrets": key "username" comes from both remote Secret "user-credentials" and remote Secret "other"`,
		},
		"Two dataFrom entries with a common key should be denied.": {
			req:    relay.SecretRequest{Name: "pulled-secrets", Store: testStore, DataFrom: []relay.DataFromEntry{extract("user-credentials"), extract("other")}},
			expErr: `local Secret "pulled-secrets": key "username" comes from both remote Secret "user-credentials" and remote Secret "other"`,
		},
		"Two data entries with the same key should be denied.": {
			req: relay.SecretRequest{Name: "pulled-secrets", Store: testStore, Data: []relay.DataEntry{
				dataRef("username", "user-credentials", "username"), dataRef("username", "other", "username"),
			}},
			expErr: `local Secret "pulled-secrets": key "username" comes from both remote Secret "user-credentials" and remote Secret "other"`,
		},
		"A request with no entries should be denied.": {
			req:    relay.SecretRequest{Name: "empty", Store: testStore},
			expErr: `local Secret "empty" has no data or dataFrom entries`,
		},
	}
	for name, test := range tests {
		t.Run(name, func(t *testing.T) {
			assert := assert.New(t)
			got, err := relay.PlanSecret("prod", test.req, remote, testSyncedAt, testTokens)
			if test.expErr != "" {
				require.Error(t, err)
				assert.True(relay.AsError(err) != nil, "a bad reference is a denial, not a fault")
				assert.Equal(webhook.DenyPrefix+test.expErr, webhook.DenyPrefix+webhook.Describe(err))
				for _, value := range []string{"peter", "asdf1234", "paul", "CERT", "KEY", "eyJhbGciOi"} {
					assert.NotContains(err.Error(), value, "a denial must never hold a secret value")
				}
				assert.Nil(got)
				return
			}
			require.NoError(t, err)
			assert.Equal(test.expSecret, got)
		})
	}
}

func TestPlanSecretCopiesBytes(t *testing.T) {
	remote := relay.RemoteSecrets{"user-credentials": relay.RemoteOf(upstream("user-credentials", corev1.SecretTypeOpaque, map[string]string{"username": "peter"}))}
	reqs := map[string]relay.SecretRequest{
		"A data entry should not share bytes with the remote Secret.": {
			Name: "a", Store: testStore, Data: []relay.DataEntry{dataRef("username", "user-credentials", "username")},
		},
		"A dataFrom entry should not share bytes with the remote Secret.": {
			Name: "b", Store: testStore, DataFrom: []relay.DataFromEntry{extract("user-credentials")},
		},
	}
	for name, req := range reqs {
		t.Run(name, func(t *testing.T) {
			got, err := relay.PlanSecret("prod", req, remote, testSyncedAt, testTokens)
			require.NoError(t, err)
			v, _ := remote["user-credentials"].Value("username")
			v[0] = 'P'
			defer func() { v[0] = 'p' }()
			assert.Equal(t, "peter", string(got.Data["username"]))
		})
	}
}

func TestPlanSecretSyncedAtIsUTC(t *testing.T) {
	remote := relay.RemoteSecrets{"db": relay.RemoteOf(upstream("db", corev1.SecretTypeOpaque, map[string]string{"k": "v"}))}
	at := time.Date(2026, 1, 1, 2, 0, 0, 0, time.FixedZone("CET", 2*60*60))
	got, err := relay.PlanSecret("prod", relay.SecretRequest{Name: "db", Store: testStore, WholeSecret: true}, remote, at, testTokens)
	require.NoError(t, err)
	assert.Equal(t, "2026-01-01T00:00:00Z", got.Annotations[relay.AnnotationSyncedAt])
}

func TestCheckExisting(t *testing.T) {
	remote := relay.RemoteSecrets{
		"db":    relay.RemoteOf(upstream("db", corev1.SecretTypeOpaque, map[string]string{"username": "peter", "password": "asdf1234"})),
		"db-v2": relay.RemoteOf(upstream("db-v2", corev1.SecretTypeOpaque, map[string]string{"username": "peter"})),
	}
	req := relay.SecretRequest{Name: "db", Store: testStore, Data: []relay.DataEntry{
		dataRef("username", "db", "username"), dataRef("password", "db", "password"),
	}}
	desired, err := relay.PlanSecret("prod", req, remote, testSyncedAt, testTokens)
	require.NoError(t, err)

	// current is what an earlier admission wrote, as read back from the API.
	current := func(mutate func(s *corev1.Secret)) *corev1.Secret {
		s := desired.DeepCopy()
		s.UID = "uid-1"
		s.ResourceVersion = "7"
		s.Annotations[relay.AnnotationSyncedAt] = "2025-12-01T00:00:00Z"
		if mutate != nil {
			mutate(s)
		}
		return s
	}
	fromSource := func(req relay.SecretRequest) func(s *corev1.Secret) {
		return func(s *corev1.Secret) { s.Annotations[relay.AnnotationSource] = relay.SourceOf(req).String() }
	}

	tests := map[string]struct {
		existing *corev1.Secret
		expWrite bool
		expErr   string
	}{
		"No local Secret should be written.": {
			existing: nil,
			expWrite: true,
		},
		"A Secret without the managed-by label should be left untouched and denied.": {
			existing: &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "prod"},
				Data:       bytesData(map[string]string{"username": "root"}),
			},
			expErr: `Secret "db" already exists in namespace "prod" and is not managed by secret-relay; it was left untouched`,
		},
		"A Secret managed by another tool should be left untouched and denied.": {
			existing: current(func(s *corev1.Secret) { s.Labels[relay.LabelManagedBy] = "external-secrets" }),
			expErr:   `Secret "db" already exists in namespace "prod" and is not managed by secret-relay; it was left untouched`,
		},
		"A managed Secret from another store should be denied.": {
			existing: current(fromSource(relay.SecretRequest{Name: "db", Store: relay.StoreRef{Kind: relay.SecretStoreKind, Name: "a"}, Data: req.Data})),
			expErr:   `Secret "db" in namespace "prod" is relayed from a different source (SecretStore/a); remove it or rename the item`,
		},
		"A managed Secret from the same store but other references should be denied.": {
			existing: current(fromSource(relay.SecretRequest{Name: "db", Store: testStore, DataFrom: []relay.DataFromEntry{extract("db-v2")}})),
			expErr:   `Secret "db" in namespace "prod" is relayed from a different source (SecretStore/remote-k8s-store); remove it or rename the item`,
		},
		"A managed Secret with an unreadable source should count as a different source.": {
			existing: current(func(s *corev1.Secret) { s.Annotations[relay.AnnotationSource] = "not json" }),
			expErr:   `Secret "db" in namespace "prod" is relayed from a different source (its secret-relay.io/source annotation is unreadable); remove it or rename the item`,
		},
		"A managed Secret without a source should count as a different source.": {
			existing: current(func(s *corev1.Secret) { delete(s.Annotations, relay.AnnotationSource) }),
			expErr:   `Secret "db" in namespace "prod" is relayed from a different source (its secret-relay.io/source annotation is unreadable); remove it or rename the item`,
		},
		"An up-to-date copy should not be written again.": {
			existing: current(nil),
			expWrite: false,
		},
		"An up-to-date copy whose source lists the entries in another order should not be written again.": {
			existing: current(func(s *corev1.Secret) {
				s.Annotations[relay.AnnotationSource] = `{"store":{"kind":"SecretStore","name":"remote-k8s-store"},"data":[{"secretKey":"username","remoteRef":{"key":"db","property":"username"}},{"secretKey":"password","remoteRef":{"key":"db","property":"password"}}]}`
			}),
			expWrite: false,
		},
		"A copy with other data should be updated.": {
			existing: current(func(s *corev1.Secret) {
				s.Data = bytesData(map[string]string{"username": "peter", "password": "old"})
				s.Annotations[relay.AnnotationDataHash] = testTokens.Token(s.Data)
			}),
			expWrite: true,
		},
		"A copy edited by hand under a current hash should be put back.": {
			existing: current(func(s *corev1.Secret) { s.Data["password"] = []byte("edited") }),
			expWrite: true,
		},
		"A copy an older version annotated with the unkeyed digest should be re-annotated.": {
			existing: current(func(s *corev1.Secret) {
				s.Annotations[relay.AnnotationDataHash] = hex.EncodeToString(relay.LengthDelimitedSum(sha256.New(), s.Data))
			}),
			expWrite: true,
		},
		"A copy tokenized under another key should be re-annotated.": {
			existing: current(func(s *corev1.Secret) {
				other, err := relay.NewTokenKey(bytes.Repeat([]byte("o"), 32))
				require.NoError(t, err)
				s.Annotations[relay.AnnotationDataHash] = other.Token(s.Data)
			}),
			expWrite: true,
		},
		"A copy without a hash should be updated.": {
			existing: current(func(s *corev1.Secret) { delete(s.Annotations, relay.AnnotationDataHash) }),
			expWrite: true,
		},
		"A copy of another type should be updated.": {
			existing: current(func(s *corev1.Secret) { s.Type = corev1.SecretTypeBasicAuth }),
			expWrite: true,
		},
	}
	for name, test := range tests {
		t.Run(name, func(t *testing.T) {
			assert := assert.New(t)
			before := test.existing.DeepCopy()
			write, err := relay.CheckExisting(test.existing, desired)
			assert.Equal(before, test.existing, "relay.CheckExisting must not change the Secret it checks")
			if test.expErr != "" {
				require.Error(t, err)
				assert.True(relay.AsError(err) != nil)
				assert.Equal(webhook.DenyPrefix+test.expErr, webhook.DenyPrefix+webhook.Describe(err))
				assert.False(write)
				for _, value := range []string{"peter", "asdf1234", "root"} {
					assert.NotContains(err.Error(), value, "a denial must never hold a secret value")
				}
				return
			}
			require.NoError(t, err)
			assert.Equal(test.expWrite, write)
		})
	}
}
