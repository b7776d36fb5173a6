package cluster_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/secret-relay/secret-relay/remote"
	"github.com/secret-relay/secret-relay/test/cluster"
)

// TestTestBed starts one upstream and one downstream control plane and checks each
// helper of the test bed against them, the way a user's two clusters would behave.
func TestTestBed(t *testing.T) {
	start := time.Now()
	up, down := cluster.StartPair(t, cluster.Options{})
	t.Logf("both control planes started in %s", time.Since(start).Round(time.Millisecond))

	t.Run("Both control planes should answer as separate clusters.", func(t *testing.T) {
		ctx := cluster.Context(t)
		up.EnsureNamespace(t, "only-upstream")
		_, err := up.Client.CoreV1().Namespaces().Get(ctx, "only-upstream", metav1.GetOptions{})
		require.NoError(t, err)
		_, err = down.Client.CoreV1().Namespaces().Get(ctx, "only-upstream", metav1.GetOptions{})
		assert.True(t, apierrors.IsNotFound(err), "the downstream cluster should not see upstream objects, got %v", err)
		assert.NotEqual(t, up.URL(), down.URL())
	})

	// The seed's world: the upstream admin hands over URL, CA and token; nothing else.
	up.CreateSecret(t, "default", "user-credentials", map[string]string{"username": "peter", "password": "asdf1234"})
	up.EnsureNamespace(t, "other")
	up.CreateSecret(t, "other", "not-yours", map[string]string{"k": "v"})
	reader := up.SeedReader(t, "default")
	storeCfg, err := remote.Endpoint{URL: up.URL(), CA: up.CA(), Token: reader.Token}.RESTConfig()
	require.NoError(t, err)
	storeClient, err := kubernetes.NewForConfig(storeCfg)
	require.NoError(t, err)

	t.Run("A client built from URL, CA and the eso-reader token should read user-credentials.", func(t *testing.T) {
		s, err := storeClient.CoreV1().Secrets("default").Get(cluster.Context(t), "user-credentials", metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, "peter", string(s.Data["username"]))
	})

	t.Run("The same client should be refused with 403 outside the Role's namespace.", func(t *testing.T) {
		_, err := storeClient.CoreV1().Secrets("other").Get(cluster.Context(t), "not-yours", metav1.GetOptions{})
		assert.True(t, apierrors.IsForbidden(err), "expected 403, got %v", err)
	})

	t.Run("The reader's legacy token Secret should not be needed: the token is a TokenRequest JWT.", func(t *testing.T) {
		assert.Equal(t, 3, strings.Count(reader.Token, ".")+1, "a JWT has three parts")
	})

	t.Run("The kubeconfig files should work with the built kubectl, which is v1.37.2.", func(t *testing.T) {
		kubectl := cluster.BinaryDir() + "/kubectl"
		out, err := exec.Command(kubectl, "version", "--client").CombinedOutput()
		require.NoError(t, err, string(out))
		assert.Contains(t, string(out), "Client Version: "+cluster.K8sVersion)

		out, err = exec.Command(kubectl, "--kubeconfig", up.Kubeconfig, "get", "secret", "user-credentials", "-n", "default", "-o", "name").CombinedOutput()
		require.NoError(t, err, string(out))
		assert.Equal(t, "secret/user-credentials\n", string(out))

		out, err = exec.Command(kubectl, "--kubeconfig", down.Kubeconfig, "get", "secret", "user-credentials", "-n", "default").CombinedOutput()
		assert.Error(t, err)
		assert.Contains(t, string(out), "NotFound")
	})

	t.Run("FreePort should give a port that can be listened on at 127.0.0.1.", func(t *testing.T) {
		port := cluster.FreePort(t)
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		require.NoError(t, err)
		require.NoError(t, l.Close())
	})

	t.Run("The audit log should count the reader's Secret reads.", func(t *testing.T) {
		count := func() int {
			n := 0
			for _, ev := range up.AuditEvents(t) {
				if ev.Verb == "get" && ev.ObjectRef.Resource == "secrets" && ev.ObjectRef.Name == "user-credentials" &&
					ev.User.Username == "system:serviceaccount:default:eso-reader" {
					n++
				}
			}
			return n
		}
		before := count()
		for range 3 {
			_, err := storeClient.CoreV1().Secrets("default").Get(cluster.Context(t), "user-credentials", metav1.GetOptions{})
			require.NoError(t, err)
		}
		assert.Equal(t, before+3, count())
	})

	t.Run("A webhook on a 127.0.0.1 TLS server should be called when a pod is created downstream.", func(t *testing.T) {
		var calls atomic.Int32
		srv := stubWebhook(t, &calls)
		down.RegisterPodWebhook(t, "stub", srv.URL+"/mutate-pods", srv.CA)
		down.WaitForWebhook(t, "default", func() bool { return calls.Load() > 0 })

		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "annotated", Namespace: "default", Annotations: map[string]string{"secret-relay.io/secrets": "[user-credentials]"}},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "busybox"}}},
		}
		before := calls.Load()
		created, err := down.Client.CoreV1().Pods("default").Create(cluster.Context(t), pod, metav1.CreateOptions{})
		require.NoError(t, err)
		assert.Equal(t, before+1, calls.Load(), "the webhook should see the pod once")
		assert.Equal(t, "{}", created.Annotations["secret-relay.io/status"], "the stored pod should carry the webhook's patch")

		plain := pod.DeepCopy()
		plain.Name, plain.Annotations = "plain", nil
		_, err = down.Client.CoreV1().Pods("default").Create(cluster.Context(t), plain, metav1.CreateOptions{})
		require.NoError(t, err)
		assert.Equal(t, before+1, calls.Load(), "matchConditions should keep unannotated pods away from the webhook")
	})

	// Last: it takes the upstream away for a while.
	t.Run("Stop and Restart should make the upstream unreachable, then serve again with the same CA and token.", func(t *testing.T) {
		up.Stop(t)
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		defer cancel()
		_, err := storeClient.CoreV1().Secrets("default").Get(ctx, "user-credentials", metav1.GetOptions{})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "connection refused")

		up.Restart(t)
		s, err := storeClient.CoreV1().Secrets("default").Get(cluster.Context(t), "user-credentials", metav1.GetOptions{})
		require.NoError(t, err, "etcd keeps the data and the certificates stay the same")
		assert.Equal(t, "peter", string(s.Data["username"]))
	})
}

type stubServer struct {
	URL string
	CA  []byte
}

// stubWebhook serves a mutating webhook on 127.0.0.1 over TLS that counts reviews and
// annotates the pod.
func stubWebhook(t *testing.T, calls *atomic.Int32) stubServer {
	cert := cluster.NewServingCert(t)
	kp, err := tls.X509KeyPair(cert.KeyPair.CertPEM, cert.KeyPair.KeyPEM)
	require.NoError(t, err)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var review admissionv1.AdmissionReview
		if err := json.NewDecoder(r.Body).Decode(&review); err != nil || review.Request == nil {
			http.Error(w, "bad review", http.StatusBadRequest)
			return
		}
		calls.Add(1)
		patch := `[{"op":"add","path":"/metadata/annotations/secret-relay.io~1status","value":"{}"}]`
		pt := admissionv1.PatchTypeJSONPatch
		review.Response = &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true, Patch: []byte(patch), PatchType: &pt}
		review.Request = nil
		_ = json.NewEncoder(w).Encode(review)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{kp}, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return stubServer{URL: srv.URL, CA: cert.CA.CertPEM()}
}

// TestTrustingPair checks the test bed of contract §3's serviceAccount auth: the
// upstream accepts a downstream ServiceAccount's token for its audience, as a
// prefixed user, and refuses one for another audience.
func TestTrustingPair(t *testing.T) {
	up, down := cluster.StartTrustingPair(t, cluster.Options{})
	ctx := cluster.Context(t)
	_, err := down.Client.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "reader"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	token := func(audience string) string {
		tr, err := down.Client.CoreV1().ServiceAccounts("default").CreateToken(ctx, "reader", &authenticationv1.TokenRequest{
			Spec: authenticationv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: ptr.To[int64](600)},
		}, metav1.CreateOptions{})
		require.NoError(t, err)
		return tr.Status.Token
	}
	whoami := func(token string) (string, error) {
		c, err := kubernetes.NewForConfig(&rest.Config{Host: up.URL(), BearerToken: token, TLSClientConfig: rest.TLSClientConfig{CAData: up.CA()}})
		require.NoError(t, err)
		review, err := c.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
		if err != nil {
			return "", err
		}
		return review.Status.UserInfo.Username, nil
	}

	// The upstream fetches the issuer's keys on start and retries until it has them.
	var user string
	require.Eventually(t, func() bool { user, err = whoami(token(cluster.UpstreamAudience)); return err == nil }, 30*time.Second, 200*time.Millisecond)
	assert.Equal(t, cluster.TrustedUserPrefix+"system:serviceaccount:default:reader", user)
	_, err = whoami(token("https://kubernetes.default.svc"))
	assert.True(t, apierrors.IsUnauthorized(err), "another audience is refused: %v", err)
}
