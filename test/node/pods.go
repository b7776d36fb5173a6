package node

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// ReaderPod is a pod whose reader container prints key of Secret secret from its
// env (as USERNAME-style upper case) and from the Secret mounted at /etc/secret.
func ReaderPod(name, secret, key string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": name}},
		Spec:       ReaderPodSpec(secret, key),
	}
}

// ReaderPodSpec is ReaderPod's spec, for Deployments.
func ReaderPodSpec(secret, key string) corev1.PodSpec {
	env := strings.ToUpper(key)
	return corev1.PodSpec{
		TerminationGracePeriodSeconds: ptr.To[int64](1),
		Containers: []corev1.Container{{
			Name:            "reader",
			Image:           ReaderImage,
			ImagePullPolicy: corev1.PullNever,
			Args:            []string{"-env", env, "-file", "/etc/secret/" + key},
			Env: []corev1.EnvVar{{Name: env, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: secret}, Key: key,
			}}}},
			VolumeMounts: []corev1.VolumeMount{{Name: "secret", MountPath: "/etc/secret", ReadOnly: true}},
			SecurityContext: &corev1.SecurityContext{
				AllowPrivilegeEscalation: ptr.To(false),
				ReadOnlyRootFilesystem:   ptr.To(true),
				Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			},
		}},
		Volumes: []corev1.Volume{{Name: "secret", VolumeSource: corev1.VolumeSource{
			Secret: &corev1.SecretVolumeSource{SecretName: secret},
		}}},
	}
}

// WaitRunning waits until the pod's containers are all running and ready.
func (n *Node) WaitRunning(t testing.TB, namespace, name string, within time.Duration) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	err := poll(within, func() (bool, error) {
		var err error
		pod, err = n.Client.CoreV1().Pods(namespace).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		return Running(pod), nil
	})
	if err != nil {
		t.Fatalf("pod %s/%s is not running: %v; it is %s", namespace, name, err, describe(pod))
	}
	return pod
}

// Running reports whether every container of the pod runs and is ready.
func Running(pod *corev1.Pod) bool {
	if pod.Status.Phase != corev1.PodRunning || len(pod.Status.ContainerStatuses) == 0 {
		return false
	}
	for _, c := range pod.Status.ContainerStatuses {
		if c.State.Running == nil || !c.Ready {
			return false
		}
	}
	return true
}

// describe says why a pod is where it is, for a failure message.
func describe(pod *corev1.Pod) string {
	if pod == nil {
		return "not found"
	}
	s := string(pod.Status.Phase)
	for _, c := range pod.Status.Conditions {
		if c.Status != corev1.ConditionTrue && c.Message != "" {
			s += fmt.Sprintf("; %s: %s", c.Type, c.Message)
		}
	}
	for _, c := range pod.Status.ContainerStatuses {
		switch {
		case c.State.Waiting != nil:
			s += fmt.Sprintf("; %s waiting: %s %s", c.Name, c.State.Waiting.Reason, c.State.Waiting.Message)
		case c.State.Terminated != nil:
			s += fmt.Sprintf("; %s terminated: %s (exit %d)", c.Name, c.State.Terminated.Reason, c.State.Terminated.ExitCode)
		}
	}
	return s
}

// Logs is the pod's first container's log, through the API server and kubelet, as
// kubectl logs reads it.
func (n *Node) Logs(ctx context.Context, namespace, name string) (string, error) {
	body, err := n.Client.CoreV1().Pods(namespace).GetLogs(name, &corev1.PodLogOptions{}).DoRaw(ctx)
	return string(body), err
}

// WaitLog waits until the pod's log has a line containing s, and returns that
// line.
func (n *Node) WaitLog(t testing.TB, namespace, name, s string, within time.Duration) string {
	t.Helper()
	var logs, line string
	err := poll(within, func() (bool, error) {
		var err error
		if logs, err = n.Logs(context.Background(), namespace, name); err != nil {
			return false, nil
		}
		for _, l := range strings.Split(logs, "\n") {
			if strings.Contains(l, s) {
				line = l
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("pod %s/%s did not log %q: %v; its log:\n%s", namespace, name, s, err, logs)
	}
	return line
}
