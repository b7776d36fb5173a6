package node_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/secret-relay/secret-relay/test/node"
)

// TestNode runs a container on the real node that reads a Secret from its env and
// from a mounted file, sees the file change when the Secret does, and leaves
// nothing behind once the node is torn down.
func TestNode(t *testing.T) {
	var n *node.Node
	t.Run("a pod should run, read its Secret both ways and see it change", func(t *testing.T) {
		n = node.Start(t)
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		defer cancel()
		secrets := n.Client.CoreV1().Secrets("default")
		_, err := secrets.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "db"},
			StringData: map[string]string{"username": "peter"},
		}, metav1.CreateOptions{})
		require.NoError(t, err)
		pod := node.ReaderPod("reader", "db", "username")
		start := time.Now()
		_, err = n.Client.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{})
		require.NoError(t, err)
		n.WaitRunning(t, "default", "reader", time.Minute)
		t.Logf("pod Running %s after its create", time.Since(start).Round(time.Millisecond))
		n.WaitLog(t, "default", "reader", "username=peter from env USERNAME", 30*time.Second)
		n.WaitLog(t, "default", "reader", "username=peter from file /etc/secret/username", 30*time.Second)

		s, err := secrets.Get(ctx, "db", metav1.GetOptions{})
		require.NoError(t, err)
		s.Data["username"] = []byte("paul")
		_, err = secrets.Update(ctx, s, metav1.UpdateOptions{})
		require.NoError(t, err)
		n.WaitLog(t, "default", "reader", "username=paul from file /etc/secret/username", time.Minute)
	})
	require.NotNil(t, n)
	// The subtest's cleanups have run: the node is gone.
	t.Run("teardown should leave no namespace, cgroup, process or scratch directory", func(t *testing.T) {
		_, err := os.Stat("/run/netns/" + n.Name)
		assert.True(t, os.IsNotExist(err), "the network namespace is still there")
		dirs, _ := filepath.Glob("/sys/fs/cgroup/*/" + n.Name)
		assert.Empty(t, dirs, "cgroups are still there")
		assert.Empty(t, processesMentioning(t, n.Name), "processes are still running")
		scratch, _ := filepath.Glob(filepath.Join(os.TempDir(), "srnode-*"))
		assert.Empty(t, scratch, "the scratch directory is still there")
	})
}

// processesMentioning lists the command lines that mention s.
func processesMentioning(t *testing.T, s string) []string {
	t.Helper()
	var found []string
	entries, err := os.ReadDir("/proc")
	require.NoError(t, err)
	for _, e := range entries {
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(cmdline) == 0 {
			continue
		}
		if line := strings.ReplaceAll(string(cmdline), "\x00", " "); strings.Contains(line, s) {
			found = append(found, line)
		}
	}
	return found
}
