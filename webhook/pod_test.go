package webhook

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/secret-relay/secret-relay/relay"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/pods")

// reapplyCases are inputs that are already mutated: their output must equal their input.
var reapplyCases = map[string]bool{"already-mutated": true}

// secretList is a v1 List of Secrets, the second document of every case.
type secretList struct {
	APIVersion string          `json:"apiVersion"`
	Kind       string          `json:"kind"`
	Items      []corev1.Secret `json:"items"`
}

var testSyncedAt = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// testTokens keys the tokens of the golden tests: 32 bytes of "k", as relay's tests.
var testTokens = func() relay.TokenKey {
	k, err := relay.NewTokenKey(bytes.Repeat([]byte("k"), 32))
	if err != nil {
		panic(err)
	}
	return k
}()

// TestMutatePodGolden runs each case in testdata/pods the way admission does:
// ParseAnnotations, then relay.PlanSecret for each request, then MutatePod.
//
// A case is testdata/pods/<case>.yaml with two YAML documents:
//  1. the pod as created, with its secret-relay.io annotations;
//  2. a v1 List of the upstream Secrets, which every store of the case reads alike.
//     Items may use stringData for readability; it is folded into data, as the API
//     server would.
//
// <case>.golden.yaml holds the mutated pod and then a v1 List of the planned local
// Secrets. Run `go test ./webhook/ -run TestMutatePodGolden -update` to rewrite them.
func TestMutatePodGolden(t *testing.T) {
	inputs, err := filepath.Glob(filepath.Join("testdata", "pods", "*.yaml"))
	require.NoError(t, err)
	var cases []string
	for _, in := range inputs {
		if !strings.HasSuffix(in, ".golden.yaml") {
			cases = append(cases, strings.TrimSuffix(filepath.Base(in), ".yaml"))
		}
	}
	require.NotEmpty(t, cases, "no cases in testdata/pods")

	for _, name := range cases {
		t.Run(name, func(t *testing.T) {
			assert := assert.New(t)
			pod, remote := readCase(t, filepath.Join("testdata", "pods", name+".yaml"))
			input := pod.DeepCopy()

			reqs, err := ParseAnnotations(pod.Annotations)
			require.NoError(t, err)
			require.NotEmpty(t, reqs)
			hashes := map[string]string{}
			secrets := secretList{APIVersion: "v1", Kind: "List"}
			for _, req := range reqs {
				s, err := relay.PlanSecret(pod.Namespace, req, remote, testSyncedAt, testTokens)
				require.NoError(t, err)
				hashes[s.Name] = s.Annotations[relay.AnnotationDataHash]
				s.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"}
				secrets.Items = append(secrets.Items, *s)
			}
			require.NoError(t, MutatePod(pod, reqs, hashes))

			again := pod.DeepCopy()
			require.NoError(t, MutatePod(again, reqs, hashes))
			assert.Equal(pod, again, "a second MutatePod should change nothing")
			if reapplyCases[name] {
				assert.Equal(input, pod, "an already-mutated pod should come out as it went in")
			}

			got := marshalDocs(t, name, pod, secrets)
			golden := filepath.Join("testdata", "pods", name+".golden.yaml")
			if *update {
				require.NoError(t, os.WriteFile(golden, got, 0o644))
			}
			want, err := os.ReadFile(golden)
			require.NoError(t, err, "run with -update to create the golden file")
			assert.Equal(string(want), string(got))
		})
	}
}

// readCase reads a case file: the pod, then the List of upstream Secrets.
func readCase(t *testing.T, file string) (*corev1.Pod, relay.RemoteSecrets) {
	t.Helper()
	b, err := os.ReadFile(file)
	require.NoError(t, err)
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	var docs [][]byte
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		if len(bytes.TrimSpace(stripComments(doc))) > 0 {
			docs = append(docs, doc)
		}
	}
	require.Len(t, docs, 2, "%s: want a pod and a List of upstream Secrets", file)

	pod := &corev1.Pod{}
	require.NoError(t, yaml.UnmarshalStrict(docs[0], pod), "%s: pod", file)
	var list secretList
	require.NoError(t, yaml.UnmarshalStrict(docs[1], &list), "%s: upstream Secrets", file)
	require.Equal(t, "List", list.Kind, "%s: the second document should be a v1 List", file)

	remote := relay.RemoteSecrets{}
	for i := range list.Items {
		s := list.Items[i]
		for k, v := range s.StringData {
			if s.Data == nil {
				s.Data = map[string][]byte{}
			}
			s.Data[k] = []byte(v)
		}
		s.StringData = nil
		remote[s.Name] = relay.RemoteOf(&s)
	}
	return pod, remote
}

func stripComments(doc []byte) []byte {
	var out []byte
	for line := range bytes.Lines(doc) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			out = append(out, line...)
		}
	}
	return out
}

// marshalDocs renders the golden file: a header, the pod, then the planned Secrets.
func marshalDocs(t *testing.T, name string, pod *corev1.Pod, secrets secretList) []byte {
	t.Helper()
	p, err := yaml.Marshal(pod)
	require.NoError(t, err)
	s, err := yaml.Marshal(secrets)
	require.NoError(t, err)
	var out bytes.Buffer
	fmt.Fprintf(&out, "# Generated from %s.yaml by TestMutatePodGolden; rewrite with -update.\n", name)
	out.WriteString("# The mutated pod:\n")
	out.Write(p)
	out.WriteString("---\n# The planned local Secrets:\n")
	out.Write(s)
	return out.Bytes()
}

func TestMutatePod(t *testing.T) {
	hashes := map[string]string{"db": "hmac-sha256:abc", "app.tls": "hmac-sha256:def"}
	basePod := func() *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "prod"},
			Spec: corev1.PodSpec{
				InitContainers: []corev1.Container{{Name: "init"}},
				Containers:     []corev1.Container{{Name: "app"}, {Name: "sidecar"}},
			},
		}
	}
	dbVolume := corev1.Volume{Name: "secret-relay-db", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "db"}}}
	dbMount := corev1.VolumeMount{Name: "secret-relay-db", MountPath: "/etc/db", ReadOnly: true}
	dbEnv := corev1.EnvFromSource{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "db"}}}

	tests := map[string]struct {
		pod    func() *corev1.Pod
		reqs   []relay.SecretRequest
		expPod func() *corev1.Pod
		expErr string
		expDen bool
	}{
		"No requests should leave the pod untouched.": {
			pod:    basePod,
			reqs:   nil,
			expPod: basePod,
		},
		"A request without env or mountPath should only set the status.": {
			pod:  basePod,
			reqs: []relay.SecretRequest{{Name: "db"}},
			expPod: func() *corev1.Pod {
				p := basePod()
				p.Annotations = map[string]string{relay.AnnotationStatus: `{"db":"hmac-sha256:abc"}`}
				return p
			},
		},
		"The status should list every request, sorted by name.": {
			pod:  basePod,
			reqs: []relay.SecretRequest{{Name: "db"}, {Name: "app.tls"}},
			expPod: func() *corev1.Pod {
				p := basePod()
				p.Annotations = map[string]string{relay.AnnotationStatus: `{"app.tls":"hmac-sha256:def","db":"hmac-sha256:abc"}`}
				return p
			},
		},
		"Env should reach every container and init container after what they already have.": {
			pod: func() *corev1.Pod {
				p := basePod()
				p.Spec.Containers[0].EnvFrom = []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cm"}}}}
				return p
			},
			reqs: []relay.SecretRequest{{Name: "db", Env: true}},
			expPod: func() *corev1.Pod {
				p := basePod()
				p.Annotations = map[string]string{relay.AnnotationStatus: `{"db":"hmac-sha256:abc"}`}
				p.Spec.InitContainers[0].EnvFrom = []corev1.EnvFromSource{dbEnv}
				p.Spec.Containers[0].EnvFrom = []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cm"}}}, dbEnv}
				p.Spec.Containers[1].EnvFrom = []corev1.EnvFromSource{dbEnv}
				return p
			},
		},
		"An envFrom of the Secret with a prefix should not stand in for ours.": {
			pod: func() *corev1.Pod {
				p := basePod()
				p.Spec.InitContainers = nil
				p.Spec.Containers = p.Spec.Containers[:1]
				p.Spec.Containers[0].EnvFrom = []corev1.EnvFromSource{{Prefix: "DB_", SecretRef: dbEnv.SecretRef}}
				return p
			},
			reqs: []relay.SecretRequest{{Name: "db", Env: true}},
			expPod: func() *corev1.Pod {
				p := basePod()
				p.Spec.InitContainers = nil
				p.Spec.Containers = p.Spec.Containers[:1]
				p.Annotations = map[string]string{relay.AnnotationStatus: `{"db":"hmac-sha256:abc"}`}
				p.Spec.Containers[0].EnvFrom = []corev1.EnvFromSource{{Prefix: "DB_", SecretRef: dbEnv.SecretRef}, dbEnv}
				return p
			},
		},
		"A mountPath should add a volume and a read-only mount in containers, not init containers.": {
			pod:  basePod,
			reqs: []relay.SecretRequest{{Name: "db", MountPath: "/etc/db"}},
			expPod: func() *corev1.Pod {
				p := basePod()
				p.Annotations = map[string]string{relay.AnnotationStatus: `{"db":"hmac-sha256:abc"}`}
				p.Spec.Volumes = []corev1.Volume{dbVolume}
				p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{dbMount}
				p.Spec.Containers[1].VolumeMounts = []corev1.VolumeMount{dbMount}
				return p
			},
		},
		"A volume the API server defaulted should be kept as it is.": {
			pod: func() *corev1.Pod {
				p := basePod()
				v := dbVolume.DeepCopy()
				mode := int32(0o644)
				v.Secret.DefaultMode = &mode
				p.Spec.Volumes = []corev1.Volume{*v}
				p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{dbMount}
				return p
			},
			reqs: []relay.SecretRequest{{Name: "db", MountPath: "/etc/db/"}},
			expPod: func() *corev1.Pod {
				p := basePod()
				v := dbVolume.DeepCopy()
				mode := int32(0o644)
				v.Secret.DefaultMode = &mode
				p.Annotations = map[string]string{relay.AnnotationStatus: `{"db":"hmac-sha256:abc"}`}
				p.Spec.Volumes = []corev1.Volume{*v}
				p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{dbMount}
				p.Spec.Containers[1].VolumeMounts = []corev1.VolumeMount{{Name: "secret-relay-db", MountPath: "/etc/db/", ReadOnly: true}}
				return p
			},
		},
		"A Secret name that is not a DNS label should get a hashed volume name.": {
			pod:  basePod,
			reqs: []relay.SecretRequest{{Name: "app.tls", MountPath: "/etc/tls"}},
			expPod: func() *corev1.Pod {
				p := basePod()
				p.Annotations = map[string]string{relay.AnnotationStatus: `{"app.tls":"hmac-sha256:def"}`}
				name := volumeName("app.tls")
				p.Spec.Volumes = []corev1.Volume{{Name: name, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "app.tls"}}}}
				p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: name, MountPath: "/etc/tls", ReadOnly: true}}
				p.Spec.Containers[1].VolumeMounts = []corev1.VolumeMount{{Name: name, MountPath: "/etc/tls", ReadOnly: true}}
				return p
			},
		},
		"A container that mounts another volume at the mountPath should be denied.": {
			pod: func() *corev1.Pod {
				p := basePod()
				p.Spec.Containers[1].VolumeMounts = []corev1.VolumeMount{{Name: "config", MountPath: "/etc/db"}}
				return p
			},
			reqs:   []relay.SecretRequest{{Name: "db", Env: true, MountPath: "/etc/db"}},
			expErr: `container "sidecar" already mounts volume "config" at "/etc/db"; cannot mount Secret "db" there`,
			expDen: true,
		},
		"Two requests at the same mountPath should be denied.": {
			pod:    basePod,
			reqs:   []relay.SecretRequest{{Name: "db", MountPath: "/etc/creds"}, {Name: "app.tls", MountPath: "/etc/creds"}},
			expErr: `container "app" already mounts volume "secret-relay-db" at "/etc/creds"; cannot mount Secret "app.tls" there`,
			expDen: true,
		},
		"A pod volume with the relay's name but another source should be denied.": {
			pod: func() *corev1.Pod {
				p := basePod()
				p.Spec.Volumes = []corev1.Volume{{Name: "secret-relay-db", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
				return p
			},
			reqs:   []relay.SecretRequest{{Name: "db", MountPath: "/etc/db"}},
			expErr: `pod volume "secret-relay-db" already exists and is not Secret "db"; cannot mount it at "/etc/db"`,
			expDen: true,
		},
		"A pod volume with the relay's name for another Secret should be denied.": {
			pod: func() *corev1.Pod {
				p := basePod()
				p.Spec.Volumes = []corev1.Volume{{Name: "secret-relay-db", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "other"}}}}
				return p
			},
			reqs:   []relay.SecretRequest{{Name: "db", MountPath: "/etc/db"}},
			expErr: `pod volume "secret-relay-db" already exists and is not Secret "db"; cannot mount it at "/etc/db"`,
			expDen: true,
		},
		"A relative mountPath should be denied.": {
			pod:    basePod,
			reqs:   []relay.SecretRequest{{Name: "db", MountPath: "etc/db"}},
			expErr: `mountPath "etc/db" of Secret "db" is not an absolute path`,
			expDen: true,
		},
		"A request without a hash should be a fault, not a denial.": {
			pod:    basePod,
			reqs:   []relay.SecretRequest{{Name: "missing"}},
			expErr: `no data-hash for local Secret "missing"`,
		},
	}
	for name, test := range tests {
		t.Run(name, func(t *testing.T) {
			assert := assert.New(t)
			pod := test.pod()
			err := MutatePod(pod, test.reqs, hashes)
			if test.expErr != "" {
				require.Error(t, err)
				_, denied := denial(err)
				assert.Equal(test.expDen, denied)
				if test.expDen {
					assert.Equal(DenyPrefix+test.expErr, err.Error())
				} else {
					assert.Equal(test.expErr, err.Error())
				}
				assert.Equal(test.pod(), pod, "a failed MutatePod should leave the pod unchanged")
				return
			}
			require.NoError(t, err)
			want := test.expPod()
			if len(test.reqs) > 0 { // on every relayed pod
				if want.Labels == nil {
					want.Labels = map[string]string{}
				}
				want.Labels[relay.LabelRelayed] = "true"
			}
			assert.Equal(want, pod)

			again := pod.DeepCopy()
			require.NoError(t, MutatePod(again, test.reqs, hashes))
			assert.Equal(pod, again, "a second MutatePod should change nothing")
		})
	}
}

func TestVolumeName(t *testing.T) {
	tests := map[string]struct {
		secret  string
		expName string
	}{
		"A short DNS-label name should be prefixed.": {
			secret:  "pulled-secrets",
			expName: "secret-relay-pulled-secrets",
		},
		"A name of 50 characters should still fit in a label.": {
			secret:  strings.Repeat("a", 50),
			expName: "secret-relay-" + strings.Repeat("a", 50),
		},
		"A name of 51 characters should be hashed.": {
			secret:  strings.Repeat("a", 51),
			expName: "secret-relay-" + sha256Prefix(strings.Repeat("a", 51)),
		},
		"A name with dots should be hashed.": {
			secret:  "app.example.com",
			expName: "secret-relay-" + sha256Prefix("app.example.com"),
		},
	}
	for name, test := range tests {
		t.Run(name, func(t *testing.T) {
			got := volumeName(test.secret)
			assert.Equal(t, test.expName, got)
			assert.LessOrEqual(t, len(got), 63)
		})
	}
}

// sha256Prefix is the first 16 hex digits of the SHA-256 of s.
func sha256Prefix(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:16]
}

// TestStatusValueIsJSON: the status annotation is what encoding/json makes of the
// names and tokens as a map, whatever they hold, escaping included.
func TestStatusValueIsJSON(t *testing.T) {
	for _, names := range [][]string{
		{"db"},
		{"zeta", "alpha", "mid"},
		{"db", "db"},
		{`quo"te`, `back\slash`, "<html>&", "tab\t", "ünïcode", "\u2028sep", "bad\xffutf8", "\x7f"},
	} {
		reqs := make([]relay.SecretRequest, len(names))
		hashes := map[string]string{}
		want := map[string]string{}
		for i, n := range names {
			reqs[i] = relay.SecretRequest{Name: n}
			hashes[n] = "v1:" + n + "-token"
			want[n] = hashes[n]
		}
		got, err := statusValue(reqs, hashes)
		require.NoError(t, err)
		b, err := json.Marshal(want)
		require.NoError(t, err)
		assert.Equal(t, string(b), got, "names %q", names)
	}
	_, err := statusValue([]relay.SecretRequest{{Name: "db"}}, map[string]string{})
	assert.ErrorContains(t, err, `no data-hash for local Secret "db"`)
}
