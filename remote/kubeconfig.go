package remote

import (
	"context"
	"crypto/tls"
	"crypto/x509"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/secret-relay/secret-relay/api/v1alpha1"
)

// resolveKubeconfig resolves a store whose authRef names a kubeconfig in a Secret
// (contract §3, "Other auth methods"): the server, CA and credentials of its
// current context. Only what the kubeconfig holds inline is used: a file it names
// would be read from secret-relay's own filesystem, and an exec plugin or auth
// provider would run in its process, so both are refused. server.url, when the
// store gives it too, must be the kubeconfig's.
func (s *Store) resolveKubeconfig(ctx context.Context, reader RefReader, k *v1alpha1.KubernetesProvider) (Endpoint, error) {
	if k.Server != nil && (len(k.Server.CABundle) > 0 || k.Server.CAProvider != nil) {
		return Endpoint{}, s.configErrorf("spec.provider.kubernetes.server: with authRef the kubeconfig gives the CA; remove caBundle and caProvider")
	}
	raw, err := s.secretKey(ctx, reader, "authRef", *k.AuthRef)
	if err != nil {
		return Endpoint{}, err
	}
	where := s.describeSecretKey(*k.AuthRef)
	// Load's errors name the YAML's position, never its content.
	cfg, err := clientcmd.Load(raw)
	if err != nil {
		return Endpoint{}, s.configErrorf("the kubeconfig in %s does not parse", where)
	}
	name := cfg.CurrentContext
	kctx := cfg.Contexts[name]
	switch {
	case name == "":
		return Endpoint{}, s.configErrorf("the kubeconfig in %s has no current-context", where)
	case kctx == nil:
		return Endpoint{}, s.configErrorf("the kubeconfig in %s names current-context %q, which it does not define", where, name)
	}
	cluster, user := cfg.Clusters[kctx.Cluster], cfg.AuthInfos[kctx.AuthInfo]
	switch {
	case cluster == nil:
		return Endpoint{}, s.configErrorf("the kubeconfig in %s: context %q names cluster %q, which it does not define", where, name, kctx.Cluster)
	case user == nil:
		return Endpoint{}, s.configErrorf("the kubeconfig in %s: context %q names user %q, which it does not define", where, name, kctx.AuthInfo)
	}
	if err := s.checkKubeconfigCluster(where, kctx.Cluster, cluster); err != nil {
		return Endpoint{}, err
	}
	if k.Server != nil && k.Server.URL != "" && k.Server.URL != cluster.Server {
		return Endpoint{}, s.configErrorf("spec.provider.kubernetes.server.url differs from the server of the kubeconfig in %s: remove one", where)
	}
	ep := Endpoint{URL: cluster.Server, CA: cluster.CertificateAuthorityData}
	if err := s.kubeconfigCredentials(where, kctx.AuthInfo, user, &ep); err != nil {
		return Endpoint{}, err
	}
	return ep, nil
}

func (s *Store) checkKubeconfigCluster(where, name string, c *clientcmdapi.Cluster) error {
	switch {
	case checkServerURL(c.Server) != nil:
		return s.configErrorf("the kubeconfig in %s: cluster %q: server %v", where, name, checkServerURL(c.Server))
	case c.InsecureSkipTLSVerify:
		return s.configErrorf("the kubeconfig in %s: cluster %q skips TLS verification; give certificate-authority-data", where, name)
	case c.CertificateAuthority != "":
		return s.configErrorf("the kubeconfig in %s: cluster %q names a certificate-authority file, which secret-relay does not read; inline it as certificate-authority-data", where, name)
	case c.ProxyURL != "" || c.TLSServerName != "":
		return s.configErrorf("the kubeconfig in %s: cluster %q sets proxy-url or tls-server-name, which secret-relay does not support", where, name)
	case !x509.NewCertPool().AppendCertsFromPEM(c.CertificateAuthorityData):
		return s.configErrorf("the kubeconfig in %s: cluster %q has no PEM certificate in certificate-authority-data", where, name)
	}
	return nil
}

// kubeconfigCredentials puts the user's token or client certificate into ep.
func (s *Store) kubeconfigCredentials(where, name string, u *clientcmdapi.AuthInfo, ep *Endpoint) error {
	switch {
	case u.Exec != nil || u.AuthProvider != nil:
		return s.configErrorf("the kubeconfig in %s: user %q runs an exec plugin or auth provider, which secret-relay never runs; give a token or a client certificate", where, name)
	case u.TokenFile != "" || u.ClientCertificate != "" || u.ClientKey != "":
		return s.configErrorf("the kubeconfig in %s: user %q names a file, which secret-relay does not read; inline it (token, client-certificate-data, client-key-data)", where, name)
	case u.Username != "" || u.Password != "":
		return s.configErrorf("the kubeconfig in %s: user %q uses basic auth, which Kubernetes no longer accepts", where, name)
	case u.Impersonate != "" || len(u.ImpersonateGroups) > 0 || len(u.ImpersonateUserExtra) > 0:
		return s.configErrorf("the kubeconfig in %s: user %q impersonates, which secret-relay does not support", where, name)
	}
	hasCert := len(u.ClientCertificateData) > 0 || len(u.ClientKeyData) > 0
	switch {
	case u.Token != "" && hasCert:
		return s.configErrorf("the kubeconfig in %s: user %q has both a token and a client certificate; keep one", where, name)
	case u.Token != "":
		ep.Token = u.Token
	case hasCert:
		// The error of X509KeyPair names the problem, never the key material.
		if _, err := tls.X509KeyPair(u.ClientCertificateData, u.ClientKeyData); err != nil {
			return s.configErrorf("the kubeconfig in %s: user %q: the client certificate and key are not a valid pair: %v", where, name, err)
		}
		ep.ClientCert, ep.ClientKey = u.ClientCertificateData, u.ClientKeyData
	default:
		return s.configErrorf("the kubeconfig in %s: user %q has no token and no client certificate", where, name)
	}
	return nil
}
