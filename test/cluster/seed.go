package cluster

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// Seed names, as ../shared/seed/eso-two-clusters.md has them.
const (
	ReaderServiceAccount = "eso-reader"
	ReaderRole           = "eso-secret-reader"
	ReaderRoleBinding    = "eso-secret-reader-binding"
)

// Reader is the seed's eso-reader ServiceAccount: what the upstream admin hands to the
// downstream cluster.
type Reader struct {
	Namespace string
	Name      string
	// Token is a bearer token from the TokenRequest API. No controller-manager runs,
	// so the seed's legacy token Secret would stay empty.
	Token string
}

// SeedReader creates the seed's ServiceAccount, Role and RoleBinding in namespace ns
// upstream, and returns the account with a fresh one-hour token.
func (cp *ControlPlane) SeedReader(t testing.TB, ns string) Reader {
	t.Helper()
	ctx := Context(t)
	cp.EnsureNamespace(t, ns)
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: ReaderServiceAccount, Namespace: ns}}
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: ReaderRole, Namespace: ns},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{"authorization.k8s.io"}, Resources: []string{"selfsubjectrulesreviews"}, Verbs: []string{"create"}},
		},
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: ReaderRoleBinding, Namespace: ns},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: ReaderServiceAccount, Namespace: ns}},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: ReaderRole},
	}
	must(t, ignoreExists(cp.Client.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{})))
	must(t, ignoreExists(cp.Client.RbacV1().Roles(ns).Create(ctx, role, metav1.CreateOptions{})))
	must(t, ignoreExists(cp.Client.RbacV1().RoleBindings(ns).Create(ctx, binding, metav1.CreateOptions{})))
	return Reader{Namespace: ns, Name: ReaderServiceAccount, Token: cp.Token(t, ns, ReaderServiceAccount)}
}

// Token asks the TokenRequest API for a one-hour token of a ServiceAccount.
func (cp *ControlPlane) Token(t testing.TB, ns, serviceAccount string) string {
	t.Helper()
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}
	tok, err := cp.Client.CoreV1().ServiceAccounts(ns).CreateToken(Context(t), serviceAccount, req, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("could not request a token for %s/%s on %s: %v", ns, serviceAccount, cp.Name, err)
	}
	return tok.Status.Token
}

// EnsureNamespace creates namespace ns unless it exists.
func (cp *ControlPlane) EnsureNamespace(t testing.TB, ns string, labels ...map[string]string) {
	t.Helper()
	obj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}
	if len(labels) > 0 {
		obj.Labels = labels[0]
	}
	must(t, ignoreExists(cp.Client.CoreV1().Namespaces().Create(Context(t), obj, metav1.CreateOptions{})))
}

// CreateSecret creates an Opaque Secret from string data.
func (cp *ControlPlane) CreateSecret(t testing.TB, ns, name string, data map[string]string) *corev1.Secret {
	t.Helper()
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Type:       corev1.SecretTypeOpaque,
		StringData: data,
	}
	created, err := cp.Client.CoreV1().Secrets(ns).Create(Context(t), s, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("could not create Secret %s/%s on %s: %v", ns, name, cp.Name, err)
	}
	return created
}

func ignoreExists[T any](_ T, err error) error {
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(fmt.Errorf("test bed: %w", err))
	}
}

// ClientCertUser returns a client certificate and key that the API server accepts
// for user name: signed by the CA it trusts for client certificates.
func (cp *ControlPlane) ClientCertUser(t testing.TB, name string, groups ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	user, err := cp.env.ControlPlane.AddUser(envtest.User{Name: name, Groups: groups}, nil)
	if err != nil {
		t.Fatalf("could not make a client certificate for %s on %s: %v", name, cp.Name, err)
	}
	cfg := user.Config()
	return cfg.CertData, cfg.KeyData
}

// WaitForTokenRevoked waits until the API server rejects token with 401. The API
// server learns of a deleted ServiceAccount through its informer, a moment later.
func (cp *ControlPlane) WaitForTokenRevoked(t testing.TB, token string) {
	t.Helper()
	cfg := rest.AnonymousClientConfig(cp.Config)
	cfg.BearerToken = token
	client, err := kubernetes.NewForConfig(cfg)
	must(t, err)
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := client.CoreV1().Namespaces().List(Context(t), metav1.ListOptions{})
		if apierrors.IsUnauthorized(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the %s API server still accepts the token after 30s (last answer: %v)", cp.Name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// KubeconfigFor writes a kubeconfig that authenticates as ServiceAccount ns/name
// with a TokenRequest token: what a pod running as that account would have.
func (cp *ControlPlane) KubeconfigFor(t testing.TB, ns, name string) string {
	t.Helper()
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["cluster"] = &clientcmdapi.Cluster{Server: cp.URL(), CertificateAuthorityData: cp.CA()}
	cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: cp.Token(t, ns, name)}
	cfg.Contexts["default"] = &clientcmdapi.Context{Cluster: "cluster", AuthInfo: name}
	cfg.CurrentContext = "default"
	path := filepath.Join(cp.dir, "kubeconfig-"+ns+"-"+name)
	must(t, clientcmd.WriteToFile(*cfg, path))
	return path
}

// ExpiredToken is a ServiceAccount token of ns/name that the API server itself
// signed an hour ago, and that expired a minute ago: signed with its own
// service-account key, as a token it issued would be.
func (cp *ControlPlane) ExpiredToken(t testing.TB, ns, name string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(cp.env.ControlPlane.APIServer.CertDir, "sa-signer.key"))
	require.NoError(t, err)
	block, _ := pem.Decode(raw)
	require.NotNil(t, block, "the service-account key is PEM")
	var key crypto.Signer
	if rsaKey, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		key = rsaKey
	} else if ecKey, err := x509.ParseECPrivateKey(block.Bytes); err == nil {
		key = ecKey
	} else {
		parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		require.NoError(t, err)
		key = parsed.(crypto.Signer)
	}
	alg := "RS256"
	if _, ok := key.(*ecdsa.PrivateKey); ok {
		alg = "ES256"
	}
	issued := time.Now().Add(-time.Hour)
	enc := base64.RawURLEncoding
	header, err := json.Marshal(map[string]string{"alg": alg, "typ": "JWT"})
	require.NoError(t, err)
	claims, err := json.Marshal(map[string]any{
		"iss": cp.URL(), "aud": []string{cp.URL()}, "sub": "system:serviceaccount:" + ns + ":" + name,
		"iat": issued.Unix(), "nbf": issued.Unix(), "exp": time.Now().Add(-time.Minute).Unix(),
		"kubernetes.io": map[string]any{"namespace": ns, "serviceaccount": map[string]string{"name": name}},
	})
	require.NoError(t, err)
	signed := enc.EncodeToString(header) + "." + enc.EncodeToString(claims)
	sum := sha256.Sum256([]byte(signed))
	var sig []byte
	switch k := key.(type) {
	case *rsa.PrivateKey:
		sig, err = rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, sum[:])
		require.NoError(t, err)
	case *ecdsa.PrivateKey: // JWS wants r and s, each 32 bytes, not ASN.1
		r, s, err := ecdsa.Sign(rand.Reader, k, sum[:])
		require.NoError(t, err)
		sig = append(r.FillBytes(make([]byte, 32)), s.FillBytes(make([]byte, 32))...)
	default:
		t.Fatalf("the service-account key is a %T", key)
	}
	return signed + "." + enc.EncodeToString(sig)
}
