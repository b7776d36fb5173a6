package e2e_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/secret-relay/secret-relay/test/cluster"
)

// TestAuthRef checks contract §3's authRef: a store whose only configuration is a
// kubeconfig in a Secret relays through that kubeconfig's server, CA and token,
// follows a change of that Secret within 10 s, and refuses a kubeconfig that would
// run a program.
func TestAuthRef(t *testing.T) {
	w := newWorld(t)
	ctx := cluster.Context(t)
	const ns = "kubeconfig-auth"
	w.Down.EnsureNamespace(t, ns)
	secrets := w.Down.Client.CoreV1().Secrets(ns)
	setKubeconfig := func(name string, user *clientcmdapi.AuthInfo) {
		s, err := secrets.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			_, err = secrets.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string][]byte{"config": upstreamKubeconfig(t, w, user)}}, metav1.CreateOptions{})
			require.NoError(t, err)
			return
		}
		s.Data["config"] = upstreamKubeconfig(t, w, user)
		_, err = secrets.Update(ctx, s, metav1.UpdateOptions{})
		require.NoError(t, err)
	}
	store := func(name, secret string) {
		w.ApplySecretStore(t, ns, name, fmt.Sprintf("remoteNamespace: default\nauthRef: {name: %s, key: config}\n", secret))
	}

	t.Run("A store with only authRef should relay through its kubeconfig.", func(t *testing.T) {
		setKubeconfig("upstream-kubeconfig", &clientcmdapi.AuthInfo{Token: w.Reader.Token})
		store("remote-k8s-store", "upstream-kubeconfig")
		waitForStoreStatus(t, w, ns, "remote-k8s-store", "True", "Valid", 10*time.Second)
		_, err := createPod(t, w, ns, "app", "remote-k8s-store", seedAnnotation)
		require.NoError(t, err)
		assert.Equal(t, "peter", string(localSecret(t, w, ns, "pulled-secrets").Data["username"]))
	})

	t.Run("A change of the kubeconfig should apply within 10 s.", func(t *testing.T) {
		_, err := w.Up.Client.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "no-access"}}, metav1.CreateOptions{})
		require.NoError(t, err)
		setKubeconfig("upstream-kubeconfig", &clientcmdapi.AuthInfo{Token: w.Up.Token(t, "default", "no-access")})
		waitForStoreStatus(t, w, ns, "remote-k8s-store", "False", "ValidationFailed", 10*time.Second)
		_, err = createPod(t, w, ns, "denied", "remote-k8s-store", `[{name: other, data: [{secretKey: username, remoteRef: {key: user-credentials, property: username}}]}]`)
		require.Error(t, err, "the new credentials may not read Secrets")
		assert.Contains(t, err.Error(), "remote-k8s-store")

		setKubeconfig("upstream-kubeconfig", &clientcmdapi.AuthInfo{Token: w.Reader.Token})
		waitForStoreStatus(t, w, ns, "remote-k8s-store", "True", "Valid", 10*time.Second)
	})

	t.Run("A kubeconfig that would run an exec plugin should be refused, naming the fix.", func(t *testing.T) {
		setKubeconfig("exec-kubeconfig", &clientcmdapi.AuthInfo{Exec: &clientcmdapi.ExecConfig{
			Command: "/bin/sh", Args: []string{"-c", "touch /tmp/secret-relay-ran-it"}, APIVersion: "client.authentication.k8s.io/v1",
		}})
		store("exec-store", "exec-kubeconfig")
		waitForStoreStatus(t, w, ns, "exec-store", "False", "InvalidStoreConfiguration", 10*time.Second)
		assert.Contains(t, storeStatusOf(t, w, ns, "exec-store").message, `user "reader" runs an exec plugin or auth provider, which secret-relay never runs; give a token or a client certificate`)
		assert.NoFileExists(t, "/tmp/secret-relay-ran-it")
	})
}

// upstreamKubeconfig is a kubeconfig for the world's upstream, as user: what an
// authRef Secret holds.
func upstreamKubeconfig(t *testing.T, w *cluster.World, user *clientcmdapi.AuthInfo) []byte {
	t.Helper()
	c := clientcmdapi.NewConfig()
	c.Clusters["upstream"] = &clientcmdapi.Cluster{Server: w.Up.URL(), CertificateAuthorityData: w.Up.CA()}
	c.AuthInfos["reader"] = user
	c.Contexts["upstream"] = &clientcmdapi.Context{Cluster: "upstream", AuthInfo: "reader"}
	c.CurrentContext = "upstream"
	raw, err := clientcmd.Write(*c)
	require.NoError(t, err)
	return raw
}
