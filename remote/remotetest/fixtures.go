// Package remotetest has fixtures for tests of the upstream side and the
// controllers: stores, namespaces and Secrets as the API server would hold them,
// and fake clientsets that answer as an API server would where the fakes do not.
package remotetest

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"sigs.k8s.io/yaml"

	storesfake "github.com/secret-relay/secret-relay/api/client/clientset/versioned/fake"
	"github.com/secret-relay/secret-relay/api/v1alpha1"
	"github.com/secret-relay/secret-relay/certs/certstest"
)

// UpstreamURL is the address of the stores Store makes.
const UpstreamURL = "https://upstream.test:6443"

// CA verifies the fake upstream, for ResolveEndpoint.
var CA = func() []byte {
	ca, err := certstest.NewCA("fake-upstream")
	if err != nil {
		panic(err)
	}
	return ca.CertPEM()
}()

// Store builds a store of kind reading the upstream default namespace with the token
// in the Secret "token": a SecretStore's in its own namespace, a ClusterSecretStore's
// in store-config, limited by conditions (YAML, may be empty).
func Store(t testing.TB, kind, ns, name, conditions string) runtime.Object {
	t.Helper()
	refNS := ""
	if kind == v1alpha1.ClusterSecretStoreKind {
		refNS = ", namespace: store-config"
	}
	spec := fmt.Sprintf(`
provider:
  kubernetes:
    server: {url: %q, caBundle: %s}
    remoteNamespace: default
    auth: {token: {bearerToken: {name: token, key: token%s}}}
`, UpstreamURL, base64.StdEncoding.EncodeToString(CA), refNS)
	meta := metav1.ObjectMeta{Name: name, Namespace: ns, Generation: 1, UID: types.UID(kind + "/" + ns + "/" + name)}
	if kind == v1alpha1.SecretStoreKind {
		s := &v1alpha1.SecretStore{ObjectMeta: meta}
		require.NoError(t, yaml.UnmarshalStrict([]byte(spec), &s.Spec))
		return s
	}
	s := &v1alpha1.ClusterSecretStore{ObjectMeta: meta}
	require.NoError(t, yaml.UnmarshalStrict([]byte(spec+"conditions: "+conditions+"\n"), &s.Spec))
	return s
}

// StoreClient is a fake store clientset holding objs that, unlike the plain fake,
// moves an object's resourceVersion on every write, as an API server does: the
// validator tells its own status writes from resyncs by it.
func StoreClient(objs ...runtime.Object) *storesfake.Clientset {
	c := storesfake.NewSimpleClientset(objs...)
	var rv atomic.Int64
	rv.Store(100)
	c.PrependReactor("update", "*", func(action k8stesting.Action) (bool, runtime.Object, error) {
		if o, ok := action.(k8stesting.UpdateAction).GetObject().(metav1.Object); ok {
			o.SetResourceVersion(strconv.FormatInt(rv.Add(1), 10))
		}
		return false, nil, nil
	})
	return c
}

// Namespace is a downstream namespace with labels.
func Namespace(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

// TokenSecret is the Secret "token" in ns that the stores of Store read.
func TokenSecret(ns string) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "token"}, Data: map[string][]byte{"token": []byte("t0ken")}}
}

// UpstreamSecret is an Opaque Secret in the upstream default namespace.
func UpstreamSecret(name string, kv map[string]string) *corev1.Secret {
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, UID: types.UID("uid-" + name)},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{},
	}
	for k, v := range kv {
		s.Data[k] = []byte(v)
	}
	return s
}

// Access is what a fake upstream's SelfSubjectAccessReviews answer.
type Access struct {
	mu    sync.Mutex
	verbs map[string]bool
	err   func() error
}

// Upstream is a fake upstream clientset holding objs whose access reviews answer
// from the returned Access: get, list and watch allowed, until told otherwise.
func Upstream(objs ...runtime.Object) (*fake.Clientset, *Access) {
	c := fake.NewClientset(objs...)
	a := &Access{verbs: map[string]bool{"get": true, "list": true, "watch": true}}
	c.PrependReactor("create", "selfsubjectaccessreviews", func(action k8stesting.Action) (bool, runtime.Object, error) {
		review := action.(k8stesting.CreateAction).GetObject().(*authorizationv1.SelfSubjectAccessReview).DeepCopy()
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.err != nil {
			return true, nil, a.err()
		}
		review.Status.Allowed = a.verbs[review.Spec.ResourceAttributes.Verb]
		return true, review, nil
	})
	return c, a
}

// Allow says whether the reviews allow verb.
func (a *Access) Allow(verb string, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.verbs[verb] = ok
}

// Fail makes every review fail with what err returns; nil lets them answer again.
func (a *Access) Fail(err func() error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.err = err
}
