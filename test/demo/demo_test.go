package demo_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/secret-relay/secret-relay/test/cluster"
)

// The seed's objects, as the reader pastes them. The only changes from the seed are
// the apiVersion of the SecretStore, the missing legacy token Secret (see
// readerNote) and the pod, which carries in two annotations what the seed's
// ExternalSecret says.
const (
	userCredentialsYAML = `apiVersion: v1
kind: Secret
metadata:
  name: user-credentials
type: Opaque
stringData:
  username: peter
  password: asdf1234
`

	readerYAML = `apiVersion: v1
kind: ServiceAccount
metadata:
  name: eso-reader
  namespace: default
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: eso-secret-reader
  namespace: default
rules:
- apiGroups: [""]
  resources:
  - secrets
  verbs:
  - get
  - list
  - watch
- apiGroups:
  - authorization.k8s.io
  resources:
  - selfsubjectrulesreviews
  verbs:
  - create
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: eso-secret-reader-binding
  namespace: default
subjects:
  - kind: ServiceAccount
    name: eso-reader
roleRef:
  kind: Role
  name: eso-secret-reader
  apiGroup: rbac.authorization.k8s.io
`

	readerNote = `# The seed also creates a legacy token Secret (eso-reader-token) and reads the token
# from it. These control planes run no controller-manager, so that Secret would stay
# empty: the token comes from the TokenRequest API instead.`

	secretStoreYAML = `apiVersion: secret-relay.io/v1alpha1
kind: SecretStore
metadata:
  name: remote-k8s-store
  namespace: default
spec:
  provider:
    kubernetes:
      server:
        url: %s
        caProvider:
          type: ConfigMap
          name: kube-root-remote-ca.crt
          key: ca.crt
      remoteNamespace: default
      auth:
        token:
          bearerToken:
            name: remote-sa-token
            key: token
`

	podYAML = `apiVersion: v1
kind: Pod
metadata:
  name: app
  namespace: default
  labels:
    app: app
  annotations:
    secret-relay.io/store: remote-k8s-store
    secret-relay.io/secrets: |
      - name: pulled-secrets
        env: true
        data:
        - secretKey: username
          remoteRef:
            key: user-credentials
            property: username
spec:
  containers:
  - name: app
    image: busybox:1.37
    command: ["sh", "-c", "echo hello $username; sleep infinity"]
`
)

// TestDemo walks the seed on two local control planes and proves each step it
// prints. With KEEP=1 it leaves everything running until interrupted.
func TestDemo(t *testing.T) {
	if os.Getenv("SECRET_RELAY_DEMO") != "1" {
		t.Skip("the demo runs with `make demo` (SECRET_RELAY_DEMO=1)")
	}
	keep := os.Getenv("KEEP") == "1"
	work := t.TempDir()
	// Ctrl-C stops the walk at the next kubectl step, and the test bed's clean-up
	// still stops the control planes: envtest starts them in their own process
	// group, out of reach of the terminal's signal.
	ctx, stop := signal.NotifyContext(t.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	heading("Starting two local control planes and secret-relay")
	say("# Cluster 1 (upstream) holds the Secrets; cluster 2 (downstream) runs the webhook.")
	say("# Each is a real kube-apiserver and etcd; no kubelet, so pods are stored, never run.")
	start := time.Now()
	built := make(chan buildResult, 1)
	go func() {
		bin, err := cluster.BuildRelay(work)
		built <- buildResult{bin, err}
	}()
	// The upstream also trusts the downstream's ServiceAccount tokens, for the
	// second act; the first does not need it.
	up, down := cluster.StartTrustingPair(t, cluster.Options{CRDDirs: []string{cluster.CRDDir()}})
	say("# control planes up in %s", since(start))
	b := <-built
	if b.err != nil {
		t.Fatal(b.err)
	}
	relay := cluster.StartRelay(t, b.bin, work, down, "--log-format", "console")
	t.Cleanup(func() {
		if t.Failed() {
			fmt.Printf("\n--- end of the secret-relay log (%s) ---\n%s\n", relay.LogFile, relay.LogTail())
		}
	})
	say("# secret-relay serve: webhook %s, probes %s (ready)", relay.WebhookURL, relay.ProbeURL)
	relay.Register(t, down)
	say("# MutatingWebhookConfiguration registered with a demo CA; the API server calls it")
	say("# everything up in %s", since(start))

	k1 := kubectl{t: t, ctx: ctx, kubeconfig: up.Kubeconfig, dir: work}
	k2 := kubectl{t: t, ctx: ctx, kubeconfig: down.Kubeconfig, dir: work}

	heading("Cluster 1 (upstream): the Secret and a reader")
	say("# Create a Secret in cluster 1.")
	k1.apply(userCredentialsYAML)
	say("# A ServiceAccount that may read Secrets in the default namespace.")
	k1.apply(readerYAML)
	say("%s", readerNote)
	token := strings.TrimSpace(k1.runQuiet("$ kubectl create token eso-reader --duration=1h > token.txt", "create", "token", "eso-reader", "--duration=1h"))
	if strings.Count(token, ".") != 2 {
		t.Fatalf("kubectl create token did not print a JWT")
	}
	tokenFile := k1.file("token.txt", token)
	say("# (token.txt holds a %d-byte token; it is not printed)", len(token))
	caB64 := k1.runQuiet(`$ kubectl config view --minify --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' | base64 -d > ca.crt`,
		"config", "view", "--minify", "--raw", "-o", "jsonpath={.clusters[0].cluster.certificate-authority-data}")
	ca, err := base64.StdEncoding.DecodeString(strings.TrimSpace(caB64))
	if err != nil || !bytes.Equal(ca, up.CA()) {
		t.Fatalf("the upstream kubeconfig does not hold the API server's CA (decode error: %v)", err)
	}
	caFile := k1.file("ca.crt", string(ca))
	server := strings.TrimSpace(k1.run(`$ kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}'`,
		"config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}"))
	if !strings.HasPrefix(server, "https://") {
		t.Fatalf("the upstream API server URL %q is not https", server)
	}

	heading("Cluster 2 (downstream): the token, the CA and the SecretStore")
	k2.run(`$ kubectl -n default create secret generic remote-sa-token --from-literal=token="$(cat token.txt)"`,
		"-n", "default", "create", "secret", "generic", "remote-sa-token", "--from-file=token="+tokenFile)
	k2.run("$ kubectl create configmap kube-root-remote-ca.crt --from-file=ca.crt",
		"create", "configmap", "kube-root-remote-ca.crt", "--from-file=ca.crt="+caFile)
	say("# The seed's SecretStore, with apiVersion secret-relay.io/v1alpha1.")
	k2.apply(fmt.Sprintf(secretStoreYAML, server))
	storeStart := time.Now()
	k2.run("$ kubectl wait secretstore/remote-k8s-store --for=condition=Ready --timeout=10s",
		"wait", "secretstore/remote-k8s-store", "--for=condition=Ready", "--timeout=10s")
	out := k2.run("$ kubectl get secretstore -A", "get", "secretstore", "-A")
	if !strings.Contains(out, "Valid") || !strings.Contains(out, "True") {
		t.Fatalf("the SecretStore is not Valid/True:\n%s", out)
	}
	say("# validated %s after it was created", since(storeStart))

	heading("Cluster 2 (downstream): a pod asks for the Secret")
	say("# Before: only the token Secret.")
	k2.run("$ kubectl get secrets", "get", "secrets")
	say("# No ExternalSecret: the pod names what it needs in two annotations. In a")
	say("# Deployment they go on spec.template.metadata.annotations, the same way.")
	admitStart := time.Now()
	k2.apply(podYAML)
	say("# admitted in %s (kubectl included); the Secret was written before the pod", since(admitStart))
	k2.run("$ kubectl get secrets", "get", "secrets")
	got := k2.decode("pulled-secrets", "username")
	if got != "peter" {
		t.Fatalf("pulled-secrets has username %q, want %q", got, "peter")
	}
	say("# What the webhook recorded on the pod (keyed tokens, never values or their hashes), and what it added:")
	k2.run(`$ kubectl get pod app -o jsonpath='{.metadata.annotations.secret-relay\.io/status}'`,
		"get", "pod", "app", "-o", `jsonpath={.metadata.annotations.secret-relay\.io/status}`)
	k2.run(`$ kubectl get pod app -o jsonpath='{.spec.containers[0].envFrom}'`,
		"get", "pod", "app", "-o", "jsonpath={.spec.containers[0].envFrom}")

	heading("Cluster 1 (upstream): rotate the Secret; cluster 2 follows")
	k1.run(`$ kubectl patch secret user-credentials -p '{"stringData":{"username":"peter2"}}'`,
		"patch", "secret", "user-credentials", "-p", `{"stringData":{"username":"peter2"}}`)
	took, err := waitForUsername(t, down, "peter2", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	say("# the local copy in cluster 2 followed in %s: secret-relay watches upstream", took.Round(time.Millisecond))
	say("# In cluster 2:")
	if got := k2.decode("pulled-secrets", "username"); got != "peter2" {
		t.Fatalf("pulled-secrets has username %q after the rotation, want %q", got, "peter2")
	}

	noStaticCredential(t, k1, k2, b.bin, down)

	heading("Done")
	values := []string{"peter", "peter2", "asdf1234"}
	if leaks := findValues(relay.LogFile, values); len(leaks) > 0 {
		t.Fatalf("secret values found in the secret-relay log:\n%s", strings.Join(leaks, "\n"))
	}
	say("# secret-relay's log (debug level) holds none of %s, raw or base64.", strings.Join(values, ", "))
	say("# The seed's walkthrough, without an ExternalSecret and without waiting for a sync;")
	say("# then again with no token Secret anywhere.")
	if !keep {
		say("# Cleaning up both clusters and secret-relay. Run `make demo KEEP=1` to explore them.")
		return
	}
	if deadline, ok := t.Deadline(); ok {
		// Stop a minute before go test's own timeout, which would kill the process
		// before the clean-up could stop the control planes.
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline.Add(-time.Minute))
		defer cancel()
	}
	heading("KEEP=1: everything stays up until you press Ctrl-C")
	say("# cluster 1 (upstream):")
	say("export KUBECONFIG=%s", up.Kubeconfig)
	say("# cluster 2 (downstream), where secret-relay serves the webhook:")
	say("export KUBECONFIG=%s", down.Kubeconfig)
	say("# secret-relay probes and metrics: %s/readyz  %s/metrics", relay.ProbeURL, relay.ProbeURL)
	say("# secret-relay log: %s", relay.LogFile)
	if deadline, ok := ctx.Deadline(); ok {
		say("# (it stops by itself at %s, before the test timeout)", deadline.Format(time.TimeOnly))
	}
	<-ctx.Done()
	fmt.Println()
	say("# Stopping: cleaning up both clusters and secret-relay.")
}

// The second act's objects: the upstream Role for the downstream ServiceAccount, and
// the store that names it.
const (
	accountStoreYAML = `apiVersion: secret-relay.io/v1alpha1
kind: SecretStore
metadata:
  name: remote-k8s-store
  namespace: team-b
spec:
  provider:
    kubernetes:
      server:
        url: %s
        caProvider:
          type: ConfigMap
          name: kube-root-remote-ca.crt
          key: ca.crt
      remoteNamespace: default
      auth:
        serviceAccount:
          name: relay-reader
          audiences: [%s]
`
	accountPodYAML = `apiVersion: v1
kind: Pod
metadata:
  name: app
  namespace: team-b
  annotations:
    secret-relay.io/store: remote-k8s-store
    secret-relay.io/secrets: |
      - name: pulled-secrets
        data:
        - secretKey: username
          remoteRef: {key: user-credentials, property: username}
spec:
  containers:
  - name: app
    image: busybox:1.37
`
)

// noStaticCredential is the second act: the same walkthrough in namespace team-b,
// where the store authenticates with short-lived tokens of a downstream
// ServiceAccount that the upstream trusts (README, "No long-lived credentials").
func noStaticCredential(t *testing.T, k1, k2 kubectl, relayBinary string, down *cluster.ControlPlane) {
	t.Helper()
	user := cluster.TrustedUserPrefix + "system:serviceaccount:team-b:relay-reader"
	heading("Again, with no long-lived credential: cluster 1 trusts cluster 2's ServiceAccounts")
	say("# Cluster 1's API server runs with --authentication-config=auth.yaml: it accepts")
	say("# cluster 2's ServiceAccount tokens, for one audience, as prefixed users.")
	say("$ cat auth.yaml")
	config := cluster.AuthenticationConfig(strings.TrimSuffix(down.URL(), "/"), cluster.UpstreamAudience, []byte("(cluster 2's CA, PEM)"))
	printOutput(config)
	k1.run("$ kubectl -n default create role downstream-relay-reader --verb=get,list,watch --resource=secrets",
		"-n", "default", "create", "role", "downstream-relay-reader", "--verb=get,list,watch", "--resource=secrets")
	k1.run("$ kubectl -n default create rolebinding downstream-relay-reader --role=downstream-relay-reader --user="+user,
		"-n", "default", "create", "rolebinding", "downstream-relay-reader", "--role=downstream-relay-reader", "--user="+user)

	heading("Cluster 2 (downstream): a ServiceAccount and a store that names it")
	k2.run("$ kubectl create namespace team-b", "create", "namespace", "team-b")
	k2.run("$ kubectl -n team-b create serviceaccount relay-reader", "-n", "team-b", "create", "serviceaccount", "relay-reader")
	k2.run("$ kubectl -n team-b create configmap kube-root-remote-ca.crt --from-file=ca.crt",
		"-n", "team-b", "create", "configmap", "kube-root-remote-ca.crt", "--from-file=ca.crt="+filepath.Join(k1.dir, "ca.crt"))
	server := strings.TrimSpace(k1.exec("", "config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}"))
	k2.apply(fmt.Sprintf(accountStoreYAML, server, cluster.UpstreamAudience))
	k2.run("$ kubectl -n team-b wait secretstore/remote-k8s-store --for=condition=Ready --timeout=30s",
		"-n", "team-b", "wait", "secretstore/remote-k8s-store", "--for=condition=Ready", "--timeout=30s")
	say("# secret-relay check walks the store to the upstream's answer:")
	say("$ secret-relay check -n team-b remote-k8s-store")
	out, err := exec.Command(relayBinary, "check", "--kubeconfig", down.Kubeconfig, "-n", "team-b", "remote-k8s-store").CombinedOutput()
	printOutput(string(out))
	if err != nil || !strings.Contains(string(out), "as user "+user) {
		t.Fatalf("secret-relay check did not pass as %s: %v", user, err)
	}

	heading("Cluster 2 (downstream): a pod asks, and no token Secret exists")
	k2.apply(accountPodYAML)
	teamB := k2
	teamB.namespace = "team-b"
	if got := teamB.decode("pulled-secrets", "username"); got != "peter2" {
		t.Fatalf("pulled-secrets in team-b has username %q, want %q", got, "peter2")
	}
	secrets := k2.run("$ kubectl -n team-b get secrets", "-n", "team-b", "get", "secrets")
	if lines := strings.Split(strings.TrimSpace(secrets), "\n"); len(lines) != 2 || !strings.HasPrefix(lines[1], "pulled-secrets ") {
		t.Fatalf("team-b should hold the copy alone, no token Secret:\n%s", secrets)
	}
	say("# Only the copy: the token lives in secret-relay's memory for an hour at most.")
}

// findValues returns one line per value found, raw or base64-encoded, in file.
func findValues(file string, values []string) []string {
	data, err := os.ReadFile(file)
	if err != nil {
		return []string{fmt.Sprintf("%s: unreadable: %v", file, err)}
	}
	var leaks []string
	for _, v := range values {
		for _, form := range []string{v, base64.StdEncoding.EncodeToString([]byte(v))} {
			if bytes.Contains(data, []byte(form)) {
				leaks = append(leaks, fmt.Sprintf("%s: %q", file, form))
			}
		}
	}
	return leaks
}

type buildResult struct {
	bin string
	err error
}

// waitForUsername polls the downstream copy until its username is want and returns
// how long that took. A Go client, not kubectl: a kubectl process takes longer to
// start than the relay takes to follow.
func waitForUsername(t *testing.T, down *cluster.ControlPlane, want string, within time.Duration) (time.Duration, error) {
	start := time.Now()
	for {
		s, err := down.Client.CoreV1().Secrets("default").Get(cluster.Context(t), "pulled-secrets", metav1.GetOptions{})
		if err == nil && string(s.Data["username"]) == want {
			return time.Since(start), nil
		}
		if time.Since(start) > within {
			return 0, fmt.Errorf("the local copy did not follow the upstream change within %s (last error: %v)", within, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// kubectl runs the real kubectl binary against one cluster and prints what the
// reader would type and see.
type kubectl struct {
	t          *testing.T
	ctx        context.Context
	kubeconfig string
	dir        string
	// namespace, when set, is given to every command, and to decode's shown one.
	namespace string
}

// run prints shown, runs kubectl with args and prints its output. shown is what the
// reader would type; args may differ from it, a file in place of a secret value.
func (k kubectl) run(shown string, args ...string) string {
	k.t.Helper()
	say("%s", shown)
	out := k.exec("", args...)
	printOutput(out)
	return out
}

// runQuiet prints shown and runs kubectl, keeping its output to itself: the output
// goes to a file in the shown command.
func (k kubectl) runQuiet(shown string, args ...string) string {
	k.t.Helper()
	say("%s", shown)
	return k.exec("", args...)
}

// apply prints and runs `kubectl apply -f -` with manifest on stdin.
func (k kubectl) apply(manifest string) {
	k.t.Helper()
	say("$ cat <<EOF | kubectl apply -f -\n%sEOF", manifest)
	printOutput(k.exec(manifest, "apply", "-f", "-"))
}

// decode prints and runs the seed's `kubectl get secret … | base64 -d` and returns
// the decoded value.
func (k kubectl) decode(secret, key string) string {
	k.t.Helper()
	jsonpath := fmt.Sprintf("{.data.%s}", key)
	ns := ""
	if k.namespace != "" {
		ns = "-n " + k.namespace + " "
	}
	say("$ kubectl %sget secret %s -o jsonpath='%s' | base64 -d", ns, secret, jsonpath)
	out := k.exec("", "get", "secret", secret, "-o", "jsonpath="+jsonpath)
	v, err := base64.StdEncoding.DecodeString(strings.TrimSpace(out))
	if err != nil {
		k.t.Fatalf("could not decode %s: %v", key, err)
	}
	fmt.Println(string(v))
	return string(v)
}

// file writes content to name in the work directory, as the seed keeps its
// token.txt and ca.crt.
func (k kubectl) file(name, content string) string {
	k.t.Helper()
	path := filepath.Join(k.dir, name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		k.t.Fatal(err)
	}
	return path
}

func (k kubectl) exec(stdin string, args ...string) string {
	k.t.Helper()
	ctx, cancel := context.WithTimeout(k.ctx, 2*time.Minute)
	defer cancel()
	base := []string{"--kubeconfig", k.kubeconfig}
	if k.namespace != "" {
		base = append(base, "--namespace", k.namespace)
	}
	cmd := exec.CommandContext(ctx, filepath.Join(cluster.BinaryDir(), "kubectl"), append(base, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		var exit *exec.ExitError
		if k.ctx.Err() != nil {
			k.t.Fatalf("interrupted during kubectl %s", args[0])
		}
		if errors.As(err, &exit) {
			k.t.Fatalf("kubectl %s failed: %v\n%s%s", args[0], err, stdout.String(), stderr.String())
		}
		k.t.Fatalf("could not run kubectl: %v", err)
	}
	if stderr.Len() > 0 {
		// Warnings, as the reader would see them.
		fmt.Print(stderr.String())
	}
	return stdout.String()
}

func printOutput(out string) {
	if out == "" {
		return
	}
	fmt.Print(out)
	if !strings.HasSuffix(out, "\n") {
		fmt.Println()
	}
}

func heading(title string) {
	fmt.Printf("\n== %s ==\n\n", title)
}

func say(format string, args ...any) {
	fmt.Printf(format+"\n", args...)
}

func since(t time.Time) time.Duration {
	return time.Since(t).Round(10 * time.Millisecond)
}
