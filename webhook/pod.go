package webhook

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/secret-relay/secret-relay/relay"
)

// volumePrefix starts the name of every pod volume secret-relay adds.
const volumePrefix = "secret-relay-"

// MutatePod applies the relay to the pod in place: the status annotation, the
// relayed label, envFrom,
// volumes and mounts. hashes maps each local Secret name to its data-hash. It is
// idempotent: applying it twice changes nothing more, so a reinvoked review of a pod
// it already mutated yields an empty patch. On error the pod is left unchanged; a
// DenyError names the container, volume and path that stand in the way.
func MutatePod(pod *corev1.Pod, reqs []relay.SecretRequest, hashes map[string]string) error {
	if len(reqs) == 0 {
		return nil
	}
	out := pod.DeepCopy()

	status, err := statusValue(reqs, hashes)
	if err != nil {
		return err
	}
	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}
	out.Annotations[relay.AnnotationStatus] = status
	// The label lets the relay watch just the pods it serves (contract §5).
	if out.Labels == nil {
		out.Labels = map[string]string{}
	}
	out.Labels[relay.LabelRelayed] = "true"

	for _, req := range reqs {
		if req.Env {
			for i := range out.Spec.InitContainers {
				addEnvFrom(&out.Spec.InitContainers[i], req.Name)
			}
			for i := range out.Spec.Containers {
				addEnvFrom(&out.Spec.Containers[i], req.Name)
			}
		}
		if req.MountPath != "" {
			if err := addSecretMount(&out.Spec, req.Name, req.MountPath); err != nil {
				return err
			}
		}
	}
	*pod = *out
	return nil
}

// statusValue renders the secret-relay.io/status annotation: every local Secret and
// its keyed data token, never a value or anything a value can be guessed from. The
// keys are sorted, as encoding/json sorts a map's, so the value is stable.
func statusValue(reqs []relay.SecretRequest, hashes map[string]string) (string, error) {
	names := make([]string, 0, len(reqs))
	for _, req := range reqs {
		if h, ok := hashes[req.Name]; !ok || h == "" {
			return "", fmt.Errorf("no data-hash for local Secret %q", req.Name)
		}
		names = append(names, req.Name)
	}
	slices.Sort(names)
	names = slices.Compact(names)
	var b strings.Builder
	size := 2
	for _, name := range names {
		size += len(name) + len(hashes[name]) + 6 // quotes, colon, comma
	}
	b.Grow(size)
	b.WriteByte('{')
	for i, name := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		if err := writeJSONString(&b, name); err != nil {
			return "", err
		}
		b.WriteByte(':')
		if err := writeJSONString(&b, hashes[name]); err != nil {
			return "", err
		}
	}
	b.WriteByte('}')
	return b.String(), nil
}

// writeJSONString writes s as a JSON string: as it is between quotes when nothing in
// it needs escaping (Secret names and tokens never do), else as encoding/json has it.
func writeJSONString(b *strings.Builder, s string) error {
	for i := range len(s) {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, err := json.Marshal(s)
			if err != nil {
				return fmt.Errorf("could not encode %s annotation: %w", relay.AnnotationStatus, err)
			}
			b.Write(q)
			return nil
		}
	}
	b.WriteByte('"')
	b.WriteString(s)
	b.WriteByte('"')
	return nil
}

// addEnvFrom adds an envFrom secretRef for the Secret, unless the container already
// has one without a prefix.
func addEnvFrom(c *corev1.Container, secret string) {
	for _, e := range c.EnvFrom {
		if e.SecretRef != nil && e.SecretRef.Name == secret && e.Prefix == "" {
			return
		}
	}
	c.EnvFrom = append(c.EnvFrom, corev1.EnvFromSource{
		SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: secret}},
	})
}

// addSecretMount adds a pod volume for the Secret and mounts it read-only at
// mountPath in every container. Init containers are left alone: the contract mounts
// in "every container", and env is the way to reach init containers.
func addSecretMount(spec *corev1.PodSpec, secret, mountPath string) error {
	if !path.IsAbs(mountPath) {
		return Denyf("mountPath %q of Secret %q is not an absolute path", mountPath, secret)
	}
	name := volumeName(secret)
	found := false
	for _, v := range spec.Volumes {
		if v.Name != name {
			continue
		}
		// Compare only the Secret name: the API server defaults defaultMode on the
		// volume we added, and a reinvoked review sees it.
		if v.Secret == nil || v.Secret.SecretName != secret {
			return Denyf("pod volume %q already exists and is not Secret %q; cannot mount it at %q", name, secret, mountPath)
		}
		found = true
	}
	if !found {
		spec.Volumes = append(spec.Volumes, corev1.Volume{
			Name:         name,
			VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: secret}},
		})
	}

	want := path.Clean(mountPath)
	for i := range spec.Containers {
		c := &spec.Containers[i]
		mounted := false
		for _, m := range c.VolumeMounts {
			if path.Clean(m.MountPath) != want {
				continue
			}
			if m.Name != name {
				return Denyf("container %q already mounts volume %q at %q; cannot mount Secret %q there", c.Name, m.Name, m.MountPath, secret)
			}
			mounted = true
		}
		if !mounted {
			c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: name, MountPath: mountPath, ReadOnly: true})
		}
	}
	return nil
}

// volumeName is the pod volume for a Secret: secret-relay-<name>, or, when that is
// not a DNS label (a Secret name may hold dots and run to 253 characters), a name
// made from the first 16 hex digits of the SHA-256 of the Secret's name.
func volumeName(secret string) string {
	if name := volumePrefix + secret; len(validation.IsDNS1123Label(name)) == 0 {
		return name
	}
	sum := sha256.Sum256([]byte(secret))
	return volumePrefix + hex.EncodeToString(sum[:])[:16]
}
