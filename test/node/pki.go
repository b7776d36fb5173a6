package node

import (
	"fmt"
	"os"
	"path/filepath"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/secret-relay/secret-relay/certs/certstest"
)

// pki is the node's certificates, one CA for all of them, written under dir.
type pki struct {
	dir string
	ca  *certstest.CA
}

// identity is a client the API server knows by its certificate's user and groups.
type identity struct {
	file   string // the kubeconfig's name under the pki dir
	user   string
	groups []string
}

// The node's components and its administrator, as kubeadm names them.
var (
	adminIdentity     = identity{"admin.kubeconfig", "kubernetes-admin", []string{"system:masters"}}
	controllerManager = identity{"controller-manager.kubeconfig", "system:kube-controller-manager", nil}
	scheduler         = identity{"scheduler.kubeconfig", "system:kube-scheduler", nil}
	proxyIdentity     = identity{"proxy.kubeconfig", "system:kube-proxy", nil}
)

func kubeletIdentity(node string) identity {
	return identity{"kubelet.kubeconfig", "system:node:" + node, []string{"system:nodes"}}
}

func newPKI(dir string) (*pki, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ca, err := certstest.NewCA("secret-relay-node-ca")
	if err != nil {
		return nil, err
	}
	p := &pki{dir: dir, ca: ca}
	return p, p.write("ca.crt", ca.CertPEM())
}

func (p *pki) path(name string) string { return filepath.Join(p.dir, name) }

func (p *pki) write(name string, data []byte) error {
	return os.WriteFile(p.path(name), data, 0o600)
}

// keyPair writes name.crt and name.key.
func (p *pki) keyPair(name string, kp certstest.KeyPair) error {
	if err := p.write(name+".crt", kp.CertPEM); err != nil {
		return err
	}
	return p.write(name+".key", kp.KeyPEM)
}

// serving issues name.crt and name.key for hosts.
func (p *pki) serving(name string, hosts ...string) error {
	kp, err := p.ca.ServingCert(hosts...)
	if err != nil {
		return err
	}
	return p.keyPair(name, kp)
}

// client issues name.crt and name.key for a user and its groups.
func (p *pki) client(name, user string, groups ...string) error {
	kp, err := p.ca.ClientCert(user, groups...)
	if err != nil {
		return err
	}
	return p.keyPair(name, kp)
}

// kubeconfig writes a kubeconfig for id against server and returns its path.
func (p *pki) kubeconfig(id identity, server string) (string, error) {
	kp, err := p.ca.ClientCert(id.user, id.groups...)
	if err != nil {
		return "", err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["node"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: p.ca.CertPEM()}
	cfg.AuthInfos[id.user] = &clientcmdapi.AuthInfo{ClientCertificateData: kp.CertPEM, ClientKeyData: kp.KeyPEM}
	cfg.Contexts["node"] = &clientcmdapi.Context{Cluster: "node", AuthInfo: id.user}
	cfg.CurrentContext = "node"
	path := p.path(id.file)
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return "", fmt.Errorf("could not write the kubeconfig of %s: %w", id.user, err)
	}
	return path, nil
}
