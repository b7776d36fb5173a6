package demo_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/secret-relay/secret-relay/test/cluster"
	"github.com/secret-relay/secret-relay/test/image"
	"github.com/secret-relay/secret-relay/test/node"
)

// appDeploymentYAML is the README's Deployment, with a container that prints what
// it reads: username from its env (the relay's envFrom) and from pulled-secrets
// mounted as a file.
const appDeploymentYAML = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
  namespace: default
spec:
  selector:
    matchLabels: {app: app}
  template:
    metadata:
      labels: {app: app}
      annotations:
        secret-relay.io/store: remote-k8s-store
        secret-relay.io/secrets: |
          - name: pulled-secrets
            env: true
            data:
            - secretKey: username
              remoteRef: {key: user-credentials, property: username}
    spec:
      containers:
      - name: app
        image: %s
        imagePullPolicy: Never
        args: ["-env", "username", "-file", "/etc/secret/username"]
        volumeMounts:
        - {name: secret, mountPath: /etc/secret, readOnly: true}
      volumes:
      - name: secret
        secret: {secretName: pulled-secrets}
`

// TestDemoNode is `make demo-node`: the seed walkthrough with secret-relay
// installed by its Helm chart on a real node, ending with the container's own
// output. It runs only when SECRET_RELAY_DEMO=node.
func TestDemoNode(t *testing.T) {
	if os.Getenv("SECRET_RELAY_DEMO") != "node" {
		t.Skip("the node demo runs with `make demo-node` (SECRET_RELAY_DEMO=node)")
	}
	work := t.TempDir()
	ctx := t.Context()
	root := filepath.Join(cluster.CRDDir(), "..", "..")

	heading("Starting the upstream control plane and a real node")
	say("# Cluster 1 (upstream) is a kube-apiserver and etcd on loopback. Cluster 2 is a")
	say("# real node: kubelet, containerd and runc in a network namespace of their own.")
	start := time.Now()
	up := cluster.Start(t, "upstream", cluster.Options{ServingHosts: []string{node.ExposeIP(node.Options{})}})
	n := node.Start(t)
	upURL, err := url.Parse(up.URL())
	if err != nil {
		t.Fatal(err)
	}
	server := "https://" + n.Expose(t, upURL.Host)
	say("# both up in %s; pods reach the upstream at %s", since(start), server)
	tar, err := image.BuildSecretRelay("ghcr.io/secret-relay/secret-relay:demo", "demo", work)
	if err != nil {
		t.Fatal(err)
	}
	n.Import(t, tar)
	say("# secret-relay's image, built as `make image` does, imported into containerd")

	k1 := kubectl{t: t, ctx: ctx, kubeconfig: up.Kubeconfig, dir: work}
	k2 := kubectl{t: t, ctx: ctx, kubeconfig: n.Kubeconfig, dir: work}

	heading("Cluster 2: install secret-relay with Helm")
	helm := cluster.HelmBinary(t)
	say("$ helm install secret-relay manifests/charts/secret-relay -n secret-relay --create-namespace \\\n" +
		"    --set certificates.certManager.enabled=false --set image.tag=demo --set image.pullPolicy=Never --wait")
	installStart := time.Now()
	out, err := exec.CommandContext(ctx, helm, "--kubeconfig", n.Kubeconfig, "install", "secret-relay",
		filepath.Join(root, "manifests", "charts", "secret-relay"), "-n", "secret-relay", "--create-namespace",
		"--set", "certificates.certManager.enabled=false", "--set", "image.tag=demo", "--set", "image.pullPolicy=Never",
		"--wait", "--timeout", "3m").CombinedOutput()
	if err != nil {
		t.Fatalf("helm install: %v\n%s", err, out)
	}
	printOutput(firstLines(string(out), 6))
	say("# installed and Ready in %s", since(installStart))
	k2.run("$ kubectl -n secret-relay get pods -o wide", "-n", "secret-relay", "get", "pods", "-o", "wide")

	heading("Cluster 1 (upstream): the Secret and a reader")
	k1.apply(userCredentialsYAML)
	k1.apply(readerYAML)
	token := strings.TrimSpace(k1.runQuiet("$ kubectl create token eso-reader --duration=1h > token.txt", "create", "token", "eso-reader", "--duration=1h"))
	tokenFile := k1.file("token.txt", token)
	caFile := k1.file("ca.crt", string(up.CA()))
	say("# (token.txt holds a %d-byte token; ca.crt is the upstream API server's CA)", len(token))

	heading("Cluster 2: the token, the CA and the SecretStore")
	k2.run(`$ kubectl -n default create secret generic remote-sa-token --from-literal=token="$(cat token.txt)"`,
		"-n", "default", "create", "secret", "generic", "remote-sa-token", "--from-file=token="+tokenFile)
	k2.run("$ kubectl create configmap kube-root-remote-ca.crt --from-file=ca.crt",
		"create", "configmap", "kube-root-remote-ca.crt", "--from-file=ca.crt="+caFile)
	k2.apply(fmt.Sprintf(secretStoreYAML, server))
	k2.run("$ kubectl wait secretstore/remote-k8s-store --for=condition=Ready --timeout=30s",
		"wait", "secretstore/remote-k8s-store", "--for=condition=Ready", "--timeout=30s")

	heading("Cluster 2: a Deployment asks for the Secret, and its container reads it")
	deployStart := time.Now()
	k2.apply(fmt.Sprintf(appDeploymentYAML, node.ReaderImage))
	k2.run("$ kubectl rollout status deployment/app --timeout=60s", "rollout", "status", "deployment/app", "--timeout=60s")
	say("# Running %s after the apply", since(deployStart))
	k2.run("$ kubectl get secret pulled-secrets", "get", "secret", "pulled-secrets")
	var logs string
	deadline := time.Now().Add(30 * time.Second)
	for !(strings.Contains(logs, "username=peter from env") && strings.Contains(logs, "username=peter from file")) {
		if time.Now().After(deadline) {
			t.Fatalf("the container did not print peter from its env and its file:\n%s", logs)
		}
		time.Sleep(200 * time.Millisecond)
		logs, _ = n.Logs(context.Background(), "default", podOf(t, k2))
	}
	say("# The container's own output (each line starts with its clock, in ns):")
	k2.run("$ kubectl logs deployment/app", "logs", "deployment/app")

	heading("Done")
	say("# The seed's walkthrough on a running node: no ExternalSecret, and the container")
	say("# found its Secret at its first start.")
}

// podOf is the name of the app Deployment's pod.
func podOf(t *testing.T, k kubectl) string {
	t.Helper()
	return strings.TrimSpace(k.exec("", "get", "pods", "-l", "app=app", "-o", "jsonpath={.items[0].metadata.name}"))
}

// firstLines is the first n lines of s.
func firstLines(s string, n int) string {
	lines := strings.SplitAfter(s, "\n")
	return strings.Join(lines[:min(n, len(lines))], "")
}
