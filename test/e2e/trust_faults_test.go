package e2e_test

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/secret-relay/secret-relay/certs/certstest"
	"github.com/secret-relay/secret-relay/relay"
	"github.com/secret-relay/secret-relay/test/cluster"
)

// readinessSampler polls /readyz every 50 ms until stopped and counts the answers
// that were not 200.
type readinessSampler struct {
	samples, unready atomic.Int64
	stop             chan struct{}
	done             chan struct{}
}

func sampleReadiness(r *cluster.Relay) *readinessSampler {
	s := &readinessSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			select {
			case <-s.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			s.samples.Add(1)
			if !r.Ready() {
				s.unready.Add(1)
			}
		}
	}()
	return s
}

func (s *readinessSampler) finish() (samples, unready int64) {
	close(s.stop)
	<-s.done
	return s.samples.Load(), s.unready.Load()
}

// refusingURL is an https URL on loopback where nothing listens.
func refusingURL(t *testing.T) string {
	return fmt.Sprintf("https://127.0.0.1:%d", cluster.FreePort(t))
}

// TestReadinessWithoutUpstream checks that no upstream, however broken, takes a
// replica out of service: not a tenant's store that never answers, not one that
// refuses, not the whole upstream down while the relay restarts.
func TestReadinessWithoutUpstream(t *testing.T) {
	w := newWorld(t, "--upstream-timeout", "1s")
	w.SeedStore(t, "default", "remote-k8s-store")
	_, err := createPod(t, w, "default", "with-copy", "remote-k8s-store", seedAnnotation)
	require.NoError(t, err)

	t.Run("Stores that never answer or refuse should not make the relay unready.", func(t *testing.T) {
		sampler := sampleReadiness(w.Relay)
		w.SeedSilentStore(t, "black-hole")
		w.SeedTokenStore(t, "refused", "refusing", refusingURL(t), "default", w.Reader.Token)
		for i := range 3 {
			_, err := createPod(t, w, "black-hole", fmt.Sprintf("p-%d", i), "silent", seedAnnotation)
			assert.ErrorContains(t, err, "secret-relay: upstream of store SecretStore/silent is unreachable")
			_, err = createPod(t, w, "refused", fmt.Sprintf("p-%d", i), "refusing", seedAnnotation)
			assert.ErrorContains(t, err, "secret-relay: upstream of store SecretStore/refusing is unreachable")
		}
		time.Sleep(3 * time.Second)
		samples, unready := sampler.finish()
		t.Logf("readiness lost to bad stores: %d of %d samples (50 ms apart)", unready, samples)
		assert.Zero(t, unready)
		waitForStoreStatus(t, w, "black-hole", "silent", "False", "ValidationFailed", 15*time.Second)
		waitForStoreStatus(t, w, "refused", "refusing", "False", "ValidationFailed", 10*time.Second)
	})

	t.Run("A relay restarted while the upstream is down should turn ready and admit from its copy.", func(t *testing.T) {
		copyBefore := localSecret(t, w, "default", "pulled-secrets")
		w.Up.Stop(t)
		w.Relay.Stop(t)
		restarted := cluster.LaunchRelay(t, relayBinary, suiteDir, w.Down, "--upstream-timeout", "1s")
		registerLog(restarted.LogFile)
		took := restarted.WaitReady(t, 15*time.Second)
		t.Logf("ready %s after the restart, upstream down", took.Round(time.Millisecond))

		resp, err := restarted.HTTPSClient(t).Post(restarted.WebhookURL, "application/json",
			bytes.NewReader(cluster.Review(t, "after-restart", "default", cluster.Pod("during-outage", map[string]string{
				relay.AnnotationStore: "remote-k8s-store", relay.AnnotationSecrets: seedAnnotation,
			}))))
		require.NoError(t, err)
		defer resp.Body.Close()
		raw, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		var review admissionv1.AdmissionReview
		require.NoError(t, json.Unmarshal(raw, &review), "%s", raw)
		require.True(t, review.Response.Allowed, "%s", raw)
		assert.Contains(t, review.Response.Warnings, "secret-relay: upstream unreachable, using copy synced at "+copyBefore.Annotations[relay.AnnotationSyncedAt])
	})
}

// TestLeadershipRegained takes the Lease away from the relay and lets it lapse, twice:
// each term the relay wins back must sync copies and validate stores again.
func TestLeadershipRegained(t *testing.T) {
	w := newWorld(t, "--leader-elect-lease-duration", "3s", "--leader-elect-renew-deadline", "2s", "--leader-elect-retry-period", "500ms")
	w.SeedStore(t, "default", "remote-k8s-store")
	require.Eventually(t, w.Relay.BecameLeader, 10*time.Second, 50*time.Millisecond)
	setUpstreamValue(t, w, "leader-terms", "username", "peter")
	annotation := `[{name: creds, data: [{secretKey: username, remoteRef: {key: leader-terms, property: username}}]}]`
	_, err := createPod(t, w, "default", "app", "remote-k8s-store", annotation)
	require.NoError(t, err)

	values := []string{"s3cr3t-rotated-username", "s3cr3t-api-key"}
	for term, value := range values {
		release := w.Down.StealLease(t, "secret-relay", "secret-relay", "thief", 3*time.Second, 500*time.Millisecond)
		require.Eventually(t, func() bool { return w.Relay.LogCount(`"msg":"stopped leading"`) > term }, 10*time.Second, 50*time.Millisecond,
			"the relay notices it lost the Lease")
		setUpstreamValue(t, w, "leader-terms", "username", value)
		time.Sleep(time.Second)
		assert.NotEqual(t, value, copyValue(t, w, "default", "creds", "username"), "no background write without the Lease")

		release()
		lapsed := time.Now()
		require.Eventually(t, func() bool { return w.Relay.LeaderTerms() == term+2 }, 15*time.Second, 50*time.Millisecond,
			"the relay wins the Lease back")
		require.Eventually(t, func() bool {
			return copyValue(t, w, "default", "creds", "username") == value
		}, 10*time.Second, 50*time.Millisecond, "term %d syncs", term+2)
		store := fmt.Sprintf("after-term-%d", term+2)
		w.SeedStore(t, "default", store)
		waitForStoreStatus(t, w, "default", store, "True", "Valid", 10*time.Second)
		t.Logf("term %d: lease back and copy synced %s after the thief let it lapse", term+2, time.Since(lapsed).Round(time.Millisecond))
	}
}

// resettingListener accepts TCP connections and resets each one once the client has
// spoken: a store pointed at it fails with a message that holds the client's
// ephemeral port.
func resettingListener(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				buf := make([]byte, 512)
				_, _ = c.Read(buf)
				if tc, ok := c.(*net.TCPConn); ok {
					_ = tc.SetLinger(0)
				}
				_ = c.Close()
			}()
		}
	}()
	return "https://" + l.Addr().String()
}

// TestStoreValidation checks that validation settles on a failing store and that
// revoked credentials are noticed while an older watch still delivers.
func TestStoreValidation(t *testing.T) {
	w := newWorld(t)

	t.Run("A failing store should be written once, not in a loop.", func(t *testing.T) {
		t.Parallel()
		ns := "flapping"
		w.SeedTokenStore(t, ns, "resetting", resettingListener(t), "default", w.Reader.Token)
		waitForStoreStatus(t, w, ns, "resetting", "False", "ValidationFailed", 10*time.Second)
		store, err := w.Dynamic.Resource(storeGVR).Namespace(ns).Get(cluster.Context(t), "resetting", metav1.GetOptions{})
		require.NoError(t, err)
		watcher, err := w.Dynamic.Resource(storeGVR).Namespace(ns).Watch(cluster.Context(t), metav1.ListOptions{
			FieldSelector: fields.OneTermEqualSelector("metadata.name", "resetting").String(), ResourceVersion: store.GetResourceVersion(),
		})
		require.NoError(t, err)
		defer watcher.Stop()
		const window = 20 * time.Second
		writes := countModified(watcher, window)
		st := storeStatusOf(t, w, ns, "resetting")
		t.Logf("status writes for a failing store: %d in %s after the first (%.1f per minute); message %q", writes, window, float64(writes)*float64(time.Minute)/float64(window), st.message)
		assert.Zero(t, writes, "the status says the same thing each time")
		assert.NotRegexp(t, `127\.0\.0\.1:\d+->`, st.message, "no per-attempt detail")
	})

	t.Run("Revoked credentials should be noticed within 30 s while the watch still delivers.", func(t *testing.T) {
		t.Parallel()
		ns := "revoke-watched"
		ctx := cluster.Context(t)
		reader := revocableStore(t, w, ns)
		_, err := createPod(t, w, ns, "before", "revocable", seedAnnotation)
		require.NoError(t, err)
		// A second pod is served from the warm cache: the watch is open.
		_, err = createPod(t, w, ns, "warm", "revocable", seedAnnotation)
		require.NoError(t, err)

		require.NoError(t, w.Up.Client.CoreV1().ServiceAccounts(ns).Delete(ctx, cluster.ReaderServiceAccount, metav1.DeleteOptions{}))
		deleted := time.Now()
		w.Up.WaitForTokenRevoked(t, reader.Token)
		revoked := time.Now()
		t.Logf("the API server refused the token %s after its ServiceAccount was deleted", revoked.Sub(deleted).Round(time.Millisecond))
		var denied time.Duration
		for i := 0; time.Since(revoked) < 30*time.Second; i++ {
			_, err := createPod(t, w, ns, fmt.Sprintf("after-%d", i), "revocable", seedAnnotation)
			if err != nil {
				assert.Contains(t, err.Error(), `secret-relay: upstream refused to read Secret "user-credentials"`)
				denied = time.Since(revoked)
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		require.NotZero(t, denied, "admissions through a revoked store are denied within 30 s")
		waitForStoreStatus(t, w, ns, "revocable", "False", "ValidationFailed", 30*time.Second-time.Since(revoked))
		t.Logf("revoked token: admissions denied %s and the store ValidationFailed %s after the API server refused it",
			denied.Round(time.Millisecond), time.Since(revoked).Round(time.Millisecond))
		assert.Equal(t, []byte("peter"), localSecret(t, w, ns, "pulled-secrets").Data["username"], "the copy keeps its data")
	})
}

// TestClientCertificates runs the downstream API server with an AdmissionConfiguration
// that gives the webhook plugins a client certificate, and the relay with
// --client-ca-file: the API server's reviews are served, anyone else is refused at
// the TLS handshake.
func TestClientCertificates(t *testing.T) {
	dir := t.TempDir()
	clientCA, err := certstest.NewCA("apiserver-webhook-client-ca")
	require.NoError(t, err)
	apiserverCert, err := clientCA.ClientCert("kube-apiserver-webhook-client")
	require.NoError(t, err)
	caFile := filepath.Join(dir, "client-ca.crt")
	require.NoError(t, os.WriteFile(caFile, clientCA.CertPEM(), 0o600))

	// The README's recipe: the webhook admission plugins present this kubeconfig's
	// credentials to every webhook whose host matches the user's name.
	kubeconfig := clientcmdapi.NewConfig()
	kubeconfig.AuthInfos["*"] = &clientcmdapi.AuthInfo{ClientCertificateData: apiserverCert.CertPEM, ClientKeyData: apiserverCert.KeyPEM}
	kubeconfigFile := filepath.Join(dir, "webhook-kubeconfig")
	require.NoError(t, clientcmd.WriteToFile(*kubeconfig, kubeconfigFile))
	admissionConfig := filepath.Join(dir, "admission.yaml")
	require.NoError(t, os.WriteFile(admissionConfig, fmt.Appendf(nil, `apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: MutatingAdmissionWebhook
  configuration:
    apiVersion: apiserver.config.k8s.io/v1
    kind: WebhookAdmissionConfiguration
    kubeConfigFile: %s
- name: ValidatingAdmissionWebhook
  configuration:
    apiVersion: apiserver.config.k8s.io/v1
    kind: WebhookAdmissionConfiguration
    kubeConfigFile: %s
`, kubeconfigFile, kubeconfigFile), 0o600))

	w := cluster.NewCustomWorld(t, relayBinary, suiteDir, cluster.WorldOptions{
		DownstreamArgs: map[string]string{"admission-control-config-file": admissionConfig},
		RelayArgs:      []string{"--client-ca-file", caFile},
	})
	registerLog(w.Relay.LogFile)
	w.Relay.Register(t, w.Down)
	w.SeedStore(t, "default", "remote-k8s-store")

	post := func(cert *certstest.KeyPair) (*http.Response, error) {
		cfg := &tls.Config{RootCAs: w.Relay.RootCAs(t), MinVersion: tls.VersionTLS12}
		if cert != nil {
			pair, err := tls.X509KeyPair(cert.CertPEM, cert.KeyPEM)
			require.NoError(t, err)
			cfg.Certificates = []tls.Certificate{pair}
		}
		client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
		body := cluster.Review(t, "direct", "default", cluster.Pod("direct", map[string]string{
			relay.AnnotationStore: "remote-k8s-store", relay.AnnotationSecrets: seedAnnotation,
		}))
		return client.Post(w.Relay.WebhookURL, "application/json", bytes.NewReader(body))
	}

	t.Run("The API server's reviews should be served.", func(t *testing.T) {
		_, err := createPod(t, w, "default", "through-apiserver", "remote-k8s-store", seedAnnotation)
		require.NoError(t, err)
		assert.Equal(t, []byte("peter"), localSecret(t, w, "default", "pulled-secrets").Data["username"])
	})

	t.Run("A review without a client certificate should be refused at TLS.", func(t *testing.T) {
		resp, err := post(nil)
		if err == nil {
			resp.Body.Close()
		}
		require.Error(t, err)
		t.Logf("refused: %v", err)
	})

	t.Run("A review with a certificate from another CA should be refused at TLS.", func(t *testing.T) {
		other, err := certstest.NewCA("someone-else")
		require.NoError(t, err)
		cert, err := other.ClientCert("kube-apiserver-webhook-client")
		require.NoError(t, err)
		resp, err := post(&cert)
		if err == nil {
			resp.Body.Close()
		}
		require.Error(t, err)
	})

	t.Run("A review with a certificate from the CA should be served.", func(t *testing.T) {
		resp, err := post(&apiserverCert)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode)
	})

	t.Run("A new CA file should be read without a restart.", func(t *testing.T) {
		next, err := certstest.NewCA("next-webhook-client-ca")
		require.NoError(t, err)
		nextCert, err := next.ClientCert("kube-apiserver-webhook-client")
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(caFile, next.CertPEM(), 0o600))
		require.Eventually(t, func() bool {
			resp, err := post(&nextCert)
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		}, 10*time.Second, 100*time.Millisecond, "the new CA is trusted")
		resp, err := post(&apiserverCert)
		if err == nil {
			resp.Body.Close()
		}
		assert.Error(t, err, "the old CA is no longer trusted")
		// Put the API server's CA back, so that the cleanup's webhook calls pass.
		require.NoError(t, os.WriteFile(caFile, clientCA.CertPEM(), 0o600))
		require.Eventually(t, func() bool {
			resp, err := post(&apiserverCert)
			if err == nil {
				resp.Body.Close()
			}
			return err == nil
		}, 10*time.Second, 100*time.Millisecond)
	})
}
