package node

import (
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// writePKI issues every certificate the node's components use, and their
// kubeconfigs, from one CA.
func (n *Node) writePKI() error {
	p, err := newPKI(n.path("pki"))
	if err != nil {
		return err
	}
	n.pki = p
	steps := []func() error{
		func() error {
			return p.serving("apiserver", n.IP, "127.0.0.1", KubernetesServiceIP, "localhost",
				"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local")
		},
		// kubectl logs and exec: the API server calls kubelet, which checks both ways.
		func() error {
			return p.client("apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters")
		},
		func() error { return p.serving("kubelet", n.IP, n.Name) },
		// The service-account signing key; its public half is derived from it.
		func() error { return p.client("sa", "service-account-signer") },
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return err
		}
	}
	server := "https://" + net.JoinHostPort(n.IP, fmt.Sprint(apiPort))
	for _, id := range []identity{controllerManager, scheduler, proxyIdentity, kubeletIdentity(n.Name)} {
		if _, err := p.kubeconfig(id, server); err != nil {
			return err
		}
	}
	return nil
}

func (n *Node) apiServerArgs() []string {
	pki := n.pki.path
	return []string{
		"--etcd-servers=http://127.0.0.1:2379",
		"--advertise-address=" + n.IP, "--bind-address=" + n.IP, fmt.Sprintf("--secure-port=%d", apiPort),
		"--service-cluster-ip-range=" + serviceCIDR,
		"--cert-dir=" + n.path("apiserver"),
		"--tls-cert-file=" + pki("apiserver.crt"), "--tls-private-key-file=" + pki("apiserver.key"),
		"--client-ca-file=" + pki("ca.crt"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + pki("sa.key"), "--service-account-signing-key-file=" + pki("sa.key"),
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--kubelet-client-certificate=" + pki("apiserver-kubelet-client.crt"),
		"--kubelet-client-key=" + pki("apiserver-kubelet-client.key"),
		"--kubelet-certificate-authority=" + pki("ca.crt"),
		"--kubelet-preferred-address-types=InternalIP",
		// No --enable-aggregator-routing, as kubeadm: the API server calls a
		// webhook's Service through its ClusterIP and kube-proxy's rules, which
		// follow a terminating pod a moment later than the API server's own
		// endpoint informer would. That is the path where secret-relay's shutdown
		// delay matters.
		"--allow-privileged=true",
	}
}

// writeConfigs writes the configuration files of containerd, kubelet, kube-proxy
// and the CNI plugins, every path under the scratch directory.
func (n *Node) writeConfigs() error {
	files := map[string]string{
		"containerd.toml":            n.containerdConfig(),
		"kubelet.yaml":               n.kubeletConfig(),
		"proxy.yaml":                 n.proxyConfig(),
		"cni/net.d/10-node.conflist": n.cniConfig(),
		// Pods get no outside nameserver: there is no cluster DNS, and nothing
		// outside the namespace to ask.
		"resolv.conf": "nameserver 127.0.0.1\noptions ndots:1\n",
	}
	for name, content := range files {
		if err := os.MkdirAll(n.path(name, ".."), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(n.path(name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// containerdSocket is containerd's endpoint, for kubelet and ctr.
func (n *Node) containerdSocket() string { return n.path("containerd", "containerd.sock") }

func (n *Node) containerdConfig() string {
	return subst(`version = 4
root = '{{dir}}/containerd/root'
state = '{{dir}}/containerd/state'
imports = []
disabled_plugins = ['io.containerd.snapshotter.v1.blockfile', 'io.containerd.snapshotter.v1.erofs', 'io.containerd.nri.v1.nri']

[plugins.'io.containerd.server.v1.grpc']
  address = '{{socket}}'

[plugins.'io.containerd.server.v1.ttrpc']
  address = '{{socket}}.ttrpc'

[plugins.'io.containerd.internal.v1.opt']
  path = '{{dir}}/containerd/opt'

[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = '{{pause}}'

[plugins.'io.containerd.cri.v1.runtime']
  # The VM withholds CAP_SYS_RESOURCE: no process may lower its oom_score_adj.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = 'runc'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = '/usr/sbin/runc'
        Root = '{{dir}}/runc'
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['/usr/lib/cni']
    conf_dir = '{{dir}}/cni/net.d'
`, n, map[string]string{"socket": n.containerdSocket(), "pause": PauseImage})
}

func (n *Node) kubeletConfig() string {
	return subst(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /{{name}}
containerRuntimeEndpoint: unix://{{socket}}
address: {{ip}}
readOnlyPort: 0
tlsCertFile: {{dir}}/pki/kubelet.crt
tlsPrivateKeyFile: {{dir}}/pki/kubelet.key
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: {{dir}}/pki/ca.crt
authorization:
  mode: Webhook
# The VM withholds CAP_SYS_RESOURCE: kubelet keeps its own score.
oomScoreAdj: 0
resolvConf: {{dir}}/resolv.conf
clusterDomain: cluster.local
failSwapOn: false
healthzBindAddress: 127.0.0.1
# The disk is shared and busy: evict only when it is all but full, and never
# collect the images the test bed imported, since nothing can pull them again.
evictionHard:
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
  imagefs.inodesFree: "1%"
  memory.available: "100Mi"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
# How often kubelet refreshes mounted Secrets, among its other periodic work. The
# default is a minute; tests of rotation should not wait for it.
syncFrequency: 2s
`, n, map[string]string{"socket": n.containerdSocket()})
}

func (n *Node) proxyConfig() string {
	sync := n.opts.ProxyMinSyncPeriod
	if sync == 0 {
		sync = time.Second
	}
	return subst(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: {{dir}}/pki/proxy.kubeconfig
mode: iptables
iptables:
  minSyncPeriod: {{sync}}
clusterCIDR: {{pods}}
hostnameOverride: {{name}}
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# Zero leaves the machine-wide conntrack limits and timeouts as they are.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
  udpTimeout: 0s
  udpStreamTimeout: 0s
`, n, map[string]string{"pods": podCIDR, "sync": sync.String()})
}

func (n *Node) cniConfig() string {
	return subst(`{
  "cniVersion": "1.0.0",
  "name": "node",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "{{pods}}"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "{{dir}}/cni/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, n, map[string]string{"pods": podCIDR})
}

// subst fills {{dir}}, {{name}}, {{ip}} and the extra keys into a template.
func subst(tmpl string, n *Node, extra map[string]string) string {
	pairs := []string{"{{dir}}", n.dir, "{{name}}", n.Name, "{{ip}}", n.IP}
	for k, v := range extra {
		pairs = append(pairs, "{{"+k+"}}", v)
	}
	return strings.NewReplacer(pairs...).Replace(tmpl)
}
