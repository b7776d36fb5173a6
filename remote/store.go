package remote

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"

	"github.com/secret-relay/secret-relay/api/v1alpha1"
	"github.com/secret-relay/secret-relay/relay"
)

// Store is a resolved store, whatever its kind: what admission and the sync
// controller need of a SecretStore or ClusterSecretStore, without the API object.
type Store struct {
	// Kind is relay.SecretStoreKind or relay.ClusterSecretStoreKind.
	Kind relay.StoreKind
	// Namespace is the SecretStore's namespace; empty for a ClusterSecretStore.
	Namespace string
	// Name is the store's name.
	Name string
	// Spec is the store's spec as the API server holds it.
	Spec StoreSpec
	// Generation and ResourceVersion tell whether the store changed since a client
	// was built from it.
	Generation      int64
	ResourceVersion string
}

// StoreSpec is what either kind's spec says: the provider, and a
// ClusterSecretStore's conditions (a SecretStore has none).
type StoreSpec struct {
	Provider   v1alpha1.Provider
	Conditions []v1alpha1.ClusterSecretStoreCondition
}

// StoreFromSecretStore makes a Store of a SecretStore. It shares the object's
// spec, which must not be modified.
func StoreFromSecretStore(s *v1alpha1.SecretStore) *Store {
	return &Store{
		Kind:            v1alpha1.SecretStoreKind,
		Namespace:       s.Namespace,
		Name:            s.Name,
		Spec:            StoreSpec{Provider: s.Spec.Provider},
		Generation:      s.Generation,
		ResourceVersion: s.ResourceVersion,
	}
}

// StoreFromClusterSecretStore makes a Store of a ClusterSecretStore, sharing its
// spec as StoreFromSecretStore does.
func StoreFromClusterSecretStore(s *v1alpha1.ClusterSecretStore) *Store {
	return &Store{
		Kind:            v1alpha1.ClusterSecretStoreKind,
		Name:            s.Name,
		Spec:            StoreSpec{Provider: s.Spec.Provider, Conditions: s.Spec.Conditions},
		Generation:      s.Generation,
		ResourceVersion: s.ResourceVersion,
	}
}

// Ref is how a pod names the store: its kind and name.
func (s *Store) Ref() relay.StoreRef {
	return relay.StoreRef{Kind: s.Kind, Name: s.Name}
}

// String names the store for messages: "SecretStore default/remote-k8s-store" or
// "ClusterSecretStore shared".
func (s *Store) String() string {
	if s.Namespace == "" {
		return string(s.Kind) + " " + s.Name
	}
	return string(s.Kind) + " " + s.Namespace + "/" + s.Name
}

// RemoteNamespace is the upstream namespace the store reads Secrets from.
func (s *Store) RemoteNamespace() string {
	if k := s.Spec.Provider.Kubernetes; k != nil && k.RemoteNamespace != "" {
		return k.RemoteNamespace
	}
	return v1alpha1.DefaultRemoteNamespace
}

// AllowsNamespace reports whether a pod in namespace ns may use the store; nsLabels
// are the Namespace object's labels.
//
// A SecretStore serves its own namespace only. A ClusterSecretStore with no
// conditions serves every namespace; otherwise ns must match a field of some
// condition: a listed name, the label selector, or a regex that matches the whole
// name. An invalid selector or regex is a ConfigError, whatever the other entries
// say, so that a broken store fails the same way for every namespace.
func (s *Store) AllowsNamespace(ns string, nsLabels map[string]string) (bool, error) {
	switch s.Kind {
	case v1alpha1.SecretStoreKind:
		return ns == s.Namespace, nil
	case v1alpha1.ClusterSecretStoreKind:
	default:
		return false, fmt.Errorf("unknown store kind %q for %s", s.Kind, s.Name)
	}
	if len(s.Spec.Conditions) == 0 {
		return true, nil
	}
	allowed := false
	for i, c := range s.Spec.Conditions {
		if c.NamespaceSelector != nil {
			sel, err := metav1.LabelSelectorAsSelector(c.NamespaceSelector)
			if err != nil {
				return false, s.configErrorf("spec.conditions[%d].namespaceSelector is invalid: %v", i, err)
			}
			// An empty selector matches everything, as it does everywhere else in
			// Kubernetes; LabelSelectorAsSelector already returns labels.Everything.
			if sel.Matches(labels.Set(nsLabels)) {
				allowed = true
			}
		}
		for _, name := range c.Namespaces {
			if name == ns {
				allowed = true
			}
		}
		for j, expr := range c.NamespaceRegexes {
			// Compiled as written first, so that an error quotes what the user wrote.
			_, err := regexp.Compile(expr)
			var re *regexp.Regexp
			if err == nil {
				re, err = regexp.Compile(`^(?:` + expr + `)$`)
			}
			if err != nil {
				return false, s.configErrorf("spec.conditions[%d].namespaceRegexes[%d] is not a valid regular expression: %v", i, j, err)
			}
			if re.MatchString(ns) {
				allowed = true
			}
		}
	}
	return allowed, nil
}

// Reference is a downstream Secret or ConfigMap a store reads: its token, client
// certificate or CA.
type Reference struct {
	// Kind is "Secret" or "ConfigMap".
	Kind, Namespace, Name string
}

// References lists the Secrets and ConfigMaps the store reads, each once, in a
// stable order. A SecretStore's are in its own namespace whatever they say, as
// ResolveEndpoint reads them; a ClusterSecretStore's name their namespace.
func (s *Store) References() []Reference {
	k := s.Spec.Provider.Kubernetes
	if k == nil {
		return nil
	}
	var refs []Reference
	add := func(kind, namespace, name string) {
		r := Reference{Kind: kind, Namespace: s.referenceNamespace(namespace), Name: name}
		if !slices.Contains(refs, r) {
			refs = append(refs, r)
		}
	}
	if r := k.AuthRef; r != nil {
		add("Secret", r.Namespace, r.Name)
	}
	if a := k.Auth; a != nil && a.Token != nil {
		add("Secret", a.Token.BearerToken.Namespace, a.Token.BearerToken.Name)
	}
	if a := k.Auth; a != nil && a.Cert != nil {
		add("Secret", a.Cert.ClientCert.Namespace, a.Cert.ClientCert.Name)
		add("Secret", a.Cert.ClientKey.Namespace, a.Cert.ClientKey.Name)
	}
	if p := k.Server.CAProviderOrNil(); p != nil {
		kind := "ConfigMap"
		if p.Type == v1alpha1.CAProviderTypeSecret {
			kind = "Secret"
		}
		add(kind, p.Namespace, p.Name)
	}
	return refs
}

// RefReader reads downstream Secrets and ConfigMaps. A clientset satisfies it through
// ClientsetRefReader, and informer listers can later. A missing object is an error
// for which apierrors.IsNotFound is true.
type RefReader interface {
	Secret(ctx context.Context, namespace, name string) (*corev1.Secret, error)
	ConfigMap(ctx context.Context, namespace, name string) (*corev1.ConfigMap, error)
}

// ClientsetRefReader reads references straight from the API server.
func ClientsetRefReader(c kubernetes.Interface) RefReader { return clientsetRefReader{c: c} }

type clientsetRefReader struct{ c kubernetes.Interface }

func (r clientsetRefReader) Secret(ctx context.Context, namespace, name string) (*corev1.Secret, error) {
	return r.c.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
}

func (r clientsetRefReader) ConfigMap(ctx context.Context, namespace, name string) (*corev1.ConfigMap, error) {
	return r.c.CoreV1().ConfigMaps(namespace).Get(ctx, name, metav1.GetOptions{})
}

// ResolveEndpoint reads the store's referenced Secrets and ConfigMaps from the
// downstream cluster and returns the upstream Endpoint.
//
// A bad spec, or a referenced object or key that does not exist, is a ConfigError.
// Any other failure to read a reference, such as a timeout or a 403, is returned
// wrapped as it is: it says nothing about the store.
func ResolveEndpoint(ctx context.Context, reader RefReader, s *Store) (Endpoint, error) {
	k := s.Spec.Provider.Kubernetes
	switch {
	case k == nil:
		return Endpoint{}, s.configErrorf("spec.provider.kubernetes is required")
	case k.AuthRef != nil && k.Auth != nil:
		return Endpoint{}, s.configErrorf("spec.provider.kubernetes needs exactly one of auth or authRef, not both")
	case k.AuthRef != nil:
		return s.resolveKubeconfig(ctx, reader, k)
	case k.Auth == nil:
		return Endpoint{}, s.configErrorf("spec.provider.kubernetes.auth needs exactly one of token, cert or serviceAccount")
	case k.Server == nil:
		return Endpoint{}, s.configErrorf("spec.provider.kubernetes.server is required unless authRef gives it")
	}
	if err := checkServerURL(k.Server.URL); err != nil {
		return Endpoint{}, s.configErrorf("spec.provider.kubernetes.server.url: %v", err)
	}
	ep := Endpoint{URL: k.Server.URL}

	ca, err := s.resolveCA(ctx, reader, *k.Server)
	if err != nil {
		return Endpoint{}, err
	}
	ep.CA = ca

	auth := *k.Auth
	switch {
	case btoi(auth.Token != nil)+btoi(auth.Cert != nil)+btoi(auth.ServiceAccount != nil) > 1:
		return Endpoint{}, s.configErrorf("spec.provider.kubernetes.auth needs exactly one of token, cert or serviceAccount, not several")
	case auth.ServiceAccount != nil:
		sa := auth.ServiceAccount
		ns, err := s.refNamespace("auth.serviceAccount", sa.Namespace)
		if err != nil {
			return Endpoint{}, err
		}
		if sa.Name == "" {
			return Endpoint{}, s.configErrorf("spec.provider.kubernetes.auth.serviceAccount needs a name")
		}
		// Without audiences the token would be for this cluster's own API server,
		// sent to whatever server.url says.
		if len(sa.Audiences) == 0 || slices.Contains(sa.Audiences, "") {
			return Endpoint{}, s.configErrorf("spec.provider.kubernetes.auth.serviceAccount.audiences must name the audiences the upstream accepts: without them the token would be valid on this cluster's own API server")
		}
		ep.ServiceAccount = &ServiceAccountRef{Namespace: ns, Name: sa.Name, Audiences: slices.Clone(sa.Audiences)}
	case auth.Token != nil:
		token, err := s.secretKey(ctx, reader, "auth.token.bearerToken", auth.Token.BearerToken)
		if err != nil {
			return Endpoint{}, err
		}
		// A token file usually ends in a newline, and client-go refuses a header
		// value that holds one.
		ep.Token = strings.TrimSpace(string(token))
		if ep.Token == "" {
			return Endpoint{}, s.configErrorf("the bearer token in %s is empty", s.describeSecretKey(auth.Token.BearerToken))
		}
	case auth.Cert != nil:
		if ep.ClientCert, err = s.secretKey(ctx, reader, "auth.cert.clientCert", auth.Cert.ClientCert); err != nil {
			return Endpoint{}, err
		}
		if ep.ClientKey, err = s.secretKey(ctx, reader, "auth.cert.clientKey", auth.Cert.ClientKey); err != nil {
			return Endpoint{}, err
		}
		// The error of X509KeyPair names the problem, never the key material.
		if _, err := tls.X509KeyPair(ep.ClientCert, ep.ClientKey); err != nil {
			return Endpoint{}, s.configErrorf("the client certificate in %s and key in %s are not a valid pair: %v",
				s.describeSecretKey(auth.Cert.ClientCert), s.describeSecretKey(auth.Cert.ClientKey), err)
		}
	default:
		return Endpoint{}, s.configErrorf("spec.provider.kubernetes.auth needs exactly one of token, cert or serviceAccount")
	}
	return ep, nil
}

// checkServerURL holds a store to what Endpoint.RESTConfig will accept, so that a
// bad URL is reported as configuration rather than as an upstream failure.
func checkServerURL(raw string) error {
	if raw == "" {
		return errors.New("is required")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("is not a valid URL")
	}
	if u.Scheme != "https" || u.Host == "" {
		return errors.New("must be an https URL with a host")
	}
	if u.User != nil {
		// Credentials belong in auth, where they are read from a Secret.
		return errors.New("must not carry credentials")
	}
	return nil
}

// resolveCA returns the PEM bundle from caBundle or caProvider; exactly one must be
// set, and it must hold at least one certificate.
func (s *Store) resolveCA(ctx context.Context, reader RefReader, server v1alpha1.KubernetesServer) ([]byte, error) {
	var (
		ca     []byte
		source string
	)
	switch p := server.CAProvider; {
	case len(server.CABundle) > 0 && p != nil:
		return nil, s.configErrorf("spec.provider.kubernetes.server needs exactly one of caBundle or caProvider, not both")
	case len(server.CABundle) > 0:
		ca, source = server.CABundle, "spec.provider.kubernetes.server.caBundle"
	case p != nil:
		ns, err := s.refNamespace("server.caProvider", p.Namespace)
		if err != nil {
			return nil, err
		}
		switch p.Type {
		case v1alpha1.CAProviderTypeSecret:
			ref := v1alpha1.SecretKeySelector{Name: p.Name, Key: p.Key, Namespace: p.Namespace}
			if ca, err = s.secretKey(ctx, reader, "server.caProvider", ref); err != nil {
				return nil, err
			}
		case v1alpha1.CAProviderTypeConfigMap:
			if ca, err = s.configMapKey(ctx, reader, ns, p.Name, p.Key); err != nil {
				return nil, err
			}
		default:
			return nil, s.configErrorf("spec.provider.kubernetes.server.caProvider.type %q is not ConfigMap or Secret", p.Type)
		}
		source = fmt.Sprintf("%s %s/%s key %q", p.Type, ns, p.Name, p.Key)
	default:
		return nil, s.configErrorf("spec.provider.kubernetes.server needs caBundle or caProvider")
	}
	if !x509.NewCertPool().AppendCertsFromPEM(ca) {
		return nil, s.configErrorf("%s holds no PEM certificate", source)
	}
	return ca, nil
}

// referenceNamespace is where a reference that names explicit is read from: a
// SecretStore's own namespace whatever it says, or the namespace a
// ClusterSecretStore's reference gives.
func (s *Store) referenceNamespace(explicit string) string {
	if s.Kind == relay.SecretStoreKind {
		return s.Namespace
	}
	return explicit
}

// refNamespace is referenceNamespace for a reference of the spec, checked: a
// SecretStore's must not name another namespace, a ClusterSecretStore's must name one. field is the
// reference's path under spec.provider.kubernetes, for the message.
func (s *Store) refNamespace(field, ns string) (string, error) {
	switch s.Kind {
	case v1alpha1.SecretStoreKind:
		// The CRD forbids the field; refusing another namespace here as well keeps
		// a SecretStore from reading a Secret its namespace's users cannot see.
		if ns != "" && ns != s.Namespace {
			return "", s.configErrorf("spec.provider.kubernetes.%s.namespace: a SecretStore reads references from its own namespace, not %q", field, ns)
		}
	case v1alpha1.ClusterSecretStoreKind:
		if ns == "" {
			return "", s.configErrorf("spec.provider.kubernetes.%s.namespace is required in a ClusterSecretStore", field)
		}
	default:
		return "", fmt.Errorf("unknown store kind %q for %s", s.Kind, s.Name)
	}
	return s.referenceNamespace(ns), nil
}

// secretKey reads one key of a referenced Secret.
func (s *Store) secretKey(ctx context.Context, reader RefReader, field string, ref v1alpha1.SecretKeySelector) ([]byte, error) {
	ns, err := s.refNamespace(field, ref.Namespace)
	if err != nil {
		return nil, err
	}
	if ref.Name == "" || ref.Key == "" {
		return nil, s.configErrorf("spec.provider.kubernetes.%s needs a name and a key", field)
	}
	secret, err := reader.Secret(ctx, ns, ref.Name)
	switch {
	case apierrors.IsNotFound(err):
		return nil, s.configErrorf("Secret %s/%s not found", ns, ref.Name)
	case err != nil:
		return nil, fmt.Errorf("could not read Secret %s/%s for %s: %w", ns, ref.Name, s, err)
	}
	v, ok := secret.Data[ref.Key]
	switch {
	case !ok:
		return nil, s.configErrorf("Secret %s/%s has no key %q", ns, ref.Name, ref.Key)
	case len(v) == 0:
		return nil, s.configErrorf("Secret %s/%s key %q is empty", ns, ref.Name, ref.Key)
	}
	return v, nil
}

// configMapKey reads one key of a referenced ConfigMap, from data or binaryData.
func (s *Store) configMapKey(ctx context.Context, reader RefReader, ns, name, key string) ([]byte, error) {
	if name == "" || key == "" {
		return nil, s.configErrorf("spec.provider.kubernetes.server.caProvider needs a name and a key")
	}
	cm, err := reader.ConfigMap(ctx, ns, name)
	switch {
	case apierrors.IsNotFound(err):
		return nil, s.configErrorf("ConfigMap %s/%s not found", ns, name)
	case err != nil:
		return nil, fmt.Errorf("could not read ConfigMap %s/%s for %s: %w", ns, name, s, err)
	}
	if v, ok := cm.Data[key]; ok && v != "" {
		return []byte(v), nil
	}
	if v, ok := cm.BinaryData[key]; ok && len(v) > 0 {
		return v, nil
	}
	return nil, s.configErrorf("ConfigMap %s/%s has no key %q", ns, name, key)
}

// describeSecretKey names a Secret key for a message once its namespace is known to
// be valid.
func (s *Store) describeSecretKey(ref v1alpha1.SecretKeySelector) string {
	return fmt.Sprintf("Secret %s/%s key %q", s.referenceNamespace(ref.Namespace), ref.Name, ref.Key)
}

// configErrorf says why the store cannot work as written: a bad spec, or a Secret,
// ConfigMap or key it references that does not exist. The detail names kinds,
// namespaces, names and keys, never values; it is what the store's status shows.
// No retry helps until someone changes the store or what it references.
func (s *Store) configErrorf(format string, args ...any) *relay.Error {
	return &relay.Error{Reason: relay.ErrStoreMisconfigured, Namespace: s.Namespace, Store: s.Ref(), Detail: fmt.Sprintf(format, args...)}
}

// IsConfigError reports whether err is, or wraps, a store's configuration error.
func IsConfigError(err error) bool { return errors.Is(err, relay.ErrStoreMisconfigured) }

// ConfigMessage is what a configuration error says is wrong, without the store's
// name, or err's text for any other error.
func ConfigMessage(err error) string {
	if e := relay.AsError(err); e != nil && errors.Is(e, relay.ErrStoreMisconfigured) {
		return e.Detail
	}
	return err.Error()
}
