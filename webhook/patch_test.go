package webhook

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/secret-relay/secret-relay/relay"
)

// applied is raw with patch applied, decoded.
func applied(t *testing.T, raw, patch []byte) *corev1.Pod {
	t.Helper()
	p, err := jsonpatch.DecodePatch(patch)
	require.NoError(t, err, "%s", patch)
	out, err := p.Apply(raw)
	require.NoError(t, err, "%s", patch)
	pod := &corev1.Pod{}
	require.NoError(t, json.Unmarshal(out, pod))
	return pod
}

func TestPodPatchGolden(t *testing.T) {
	inputs, err := filepath.Glob(filepath.Join("testdata", "pods", "*.yaml"))
	require.NoError(t, err)
	for _, in := range inputs {
		if strings.HasSuffix(in, ".golden.yaml") {
			continue
		}
		t.Run(filepath.Base(in), func(t *testing.T) {
			pod, remote := readCase(t, in)
			raw, err := json.Marshal(pod)
			require.NoError(t, err)
			reqs, err := ParseAnnotations(pod.Annotations)
			require.NoError(t, err)
			hashes := map[string]string{}
			for _, req := range reqs {
				s, err := relay.PlanSecret(pod.Namespace, req, remote, testSyncedAt, testTokens)
				require.NoError(t, err)
				hashes[s.Name] = s.Annotations[relay.AnnotationDataHash]
			}
			before := pod.DeepCopy()
			require.NoError(t, MutatePod(pod, reqs, hashes))
			patch, err := podPatch(before, pod)
			require.NoError(t, err)
			assert.Equal(t, pod, applied(t, raw, patch), "the patch makes of the review's pod what MutatePod made: %s", patch)
		})
	}
}

func TestPodPatch(t *testing.T) {
	db := corev1.EnvFromSource{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "db"}}}
	mount := corev1.VolumeMount{Name: "secret-relay-db", MountPath: "/etc/db", ReadOnly: true}
	volume := corev1.Volume{Name: "secret-relay-db", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "db"}}}
	pod := func() *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "web", Annotations: map[string]string{"a/b~c": "x"}},
			Spec: corev1.PodSpec{
				InitContainers: []corev1.Container{{Name: "init"}},
				Containers:     []corev1.Container{{Name: "app", EnvFrom: []corev1.EnvFromSource{{Prefix: "P_"}}}, {Name: "sidecar"}},
				Volumes:        []corev1.Volume{{Name: "data"}},
			},
		}
	}

	t.Run("Set annotations and appended tails should be all the patch says.", func(t *testing.T) {
		before, after := pod(), pod()
		after.Annotations["a/b~c"] = "y"
		after.Annotations[relay.AnnotationStatus] = `{"db":"t"}`
		after.Spec.InitContainers[0].EnvFrom = append(after.Spec.InitContainers[0].EnvFrom, db)
		after.Spec.Containers[0].EnvFrom = append(after.Spec.Containers[0].EnvFrom, db)
		after.Spec.Containers[1].VolumeMounts = append(after.Spec.Containers[1].VolumeMounts, mount)
		after.Spec.Volumes = append(after.Spec.Volumes, volume)
		raw, err := json.Marshal(before)
		require.NoError(t, err)
		// A field these types do not know, as a newer API server might send.
		raw = []byte(strings.Replace(string(raw), `"spec":{`, `"spec":{"futureField":true,`, 1))
		patch, err := podPatch(before, after)
		require.NoError(t, err)
		assert.JSONEq(t, `[
			{"op":"add","path":"/metadata/annotations/a~1b~0c","value":"y"},
			{"op":"add","path":"/metadata/annotations/secret-relay.io~1status","value":"{\"db\":\"t\"}"},
			{"op":"add","path":"/spec/initContainers/0/envFrom","value":[{"secretRef":{"name":"db"}}]},
			{"op":"add","path":"/spec/containers/0/envFrom/-","value":{"secretRef":{"name":"db"}}},
			{"op":"add","path":"/spec/containers/1/volumeMounts","value":[{"name":"secret-relay-db","readOnly":true,"mountPath":"/etc/db"}]},
			{"op":"add","path":"/spec/volumes/-","value":{"name":"secret-relay-db","secret":{"secretName":"db"}}}
		]`, string(patch))
		assert.Equal(t, after, applied(t, raw, patch))
		p, err := jsonpatch.DecodePatch(patch)
		require.NoError(t, err)
		out, err := p.Apply(raw)
		require.NoError(t, err)
		assert.Contains(t, string(out), `"futureField":true`, "what these types do not know is left alone")
	})

	t.Run("A pod without annotations should get the map whole.", func(t *testing.T) {
		before, after := pod(), pod()
		before.Annotations, after.Annotations = nil, map[string]string{relay.AnnotationStatus: "{}"}
		raw, err := json.Marshal(before)
		require.NoError(t, err)
		patch, err := podPatch(before, after)
		require.NoError(t, err)
		assert.Equal(t, after, applied(t, raw, patch))
	})

	t.Run("Nothing changed should be an empty patch.", func(t *testing.T) {
		patch, err := podPatch(pod(), pod())
		require.NoError(t, err)
		assert.JSONEq(t, "[]", string(patch))
	})

	t.Run("A change podPatch cannot say should be an error, not a wrong patch.", func(t *testing.T) {
		for name, change := range map[string]func(*corev1.Pod){
			"a list shortened":       func(p *corev1.Pod) { p.Spec.Volumes = nil },
			"an annotation gone":     func(p *corev1.Pod) { delete(p.Annotations, "a/b~c") },
			"a container added":      func(p *corev1.Pod) { p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "x"}) },
			"an init container gone": func(p *corev1.Pod) { p.Spec.InitContainers = nil },
		} {
			after := pod()
			change(after)
			_, err := podPatch(pod(), after)
			assert.ErrorIs(t, err, errNotAppended, name)
		}
	})
}
