package remote

import (
	"context"
	"encoding/base64"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/yaml"

	storesfake "github.com/secret-relay/secret-relay/api/client/clientset/versioned/fake"
	"github.com/secret-relay/secret-relay/api/v1alpha1"
	"github.com/secret-relay/secret-relay/certs"
	"github.com/secret-relay/secret-relay/webhook"
)

// harness is the downstream and upstream sides of the relay on fake clientsets:
// stores, managed copies and the caches, wired as cmd/secret-relay wires them.
type harness struct {
	t         *testing.T
	down      *fake.Clientset
	storesAPI *storesfake.Clientset
	up        *fake.Clientset
	stores    *StoreCache
	local     *webhook.ManagedSecrets
	authz     *Authorizer
	clients   *Clients
	upstreams *Upstreams
	recorder  *record.FakeRecorder
	tokens    webhook.TokenKey
	ctx       context.Context

	// access is what the fake upstream's access reviews answer, by verb; accessErr
	// fails them all when set, with a new error each time.
	mu        sync.Mutex
	access    map[string]bool
	accessErr func() error
}

// harnessCA verifies the fake upstream, for ResolveEndpoint.
var harnessCA = func() []byte {
	ca, err := certs.NewCA("fake-upstream")
	if err != nil {
		panic(err)
	}
	return ca.CertPEM()
}()

func newHarness(t *testing.T, stores []runtime.Object, down []runtime.Object, up []runtime.Object) *harness {
	t.Helper()
	// The fake clientsets cannot stream a watch-list; real API servers can.
	t.Setenv("KUBE_FEATURE_WatchListClient", "false")
	h := &harness{
		t:        t,
		down:     fake.NewClientset(down...),
		up:       fake.NewClientset(up...),
		recorder: record.NewFakeRecorder(100),
		ctx:      t.Context(),
		access:   map[string]bool{"get": true, "list": true, "watch": true},
	}
	h.storesAPI = storesfake.NewSimpleClientset(stores...)
	// The fake keeps no resource versions; an API server moves one on every write,
	// and the validator tells its own status writes from resyncs by it.
	var rv atomic.Int64
	rv.Store(100)
	h.storesAPI.PrependReactor("update", "*", func(action k8stesting.Action) (bool, runtime.Object, error) {
		if o, ok := action.(k8stesting.UpdateAction).GetObject().(metav1.Object); ok {
			o.SetResourceVersion(strconv.FormatInt(rv.Add(1), 10))
		}
		return false, nil, nil
	})
	h.up.PrependReactor("create", "selfsubjectaccessreviews", func(action k8stesting.Action) (bool, runtime.Object, error) {
		review := action.(k8stesting.CreateAction).GetObject().(*authorizationv1.SelfSubjectAccessReview).DeepCopy()
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.accessErr != nil {
			return true, nil, h.accessErr()
		}
		review.Status.Allowed = h.access[review.Spec.ResourceAttributes.Verb]
		return true, review, nil
	})
	var err error
	h.tokens, err = webhook.NewTokenKey([]byte("0123456789abcdef0123456789abcdef"))
	require.NoError(t, err)
	h.stores = NewStoreCache(h.storesAPI, time.Hour)
	h.local = webhook.NewManagedSecrets(h.down)
	h.clients = NewClients(ClientsetRefReader(h.down), nil)
	h.clients.build = func(*rest.Config) (kubernetes.Interface, error) { return h.up, nil }
	h.upstreams = NewUpstreams(h.ctx, h.clients, nil)
	h.authz = NewAuthorizer(h.stores, func(ctx context.Context, name string) (*corev1.Namespace, error) {
		return h.down.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	})
	return h
}

// start runs the store and managed-Secret caches and waits for them.
func (h *harness) start() {
	h.t.Helper()
	h.stores.Start(h.ctx)
	go h.local.Run(h.ctx)
	require.True(h.t, cache.WaitForCacheSync(h.ctx.Done(), h.stores.Synced, h.local.Synced))
}

func (h *harness) setAccess(verb string, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.access[verb] = ok
}

func (h *harness) setAccessErr(err func() error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.accessErr = err
}

// storeYAML builds a store from YAML; a SecretStore's references are in its own
// namespace, a ClusterSecretStore's in store-config.
func storeYAML(t *testing.T, kind, ns, name, conditions string) runtime.Object {
	t.Helper()
	refNS := ""
	if kind == v1alpha1.ClusterSecretStoreKind {
		refNS = ", namespace: store-config"
	}
	spec := fmt.Sprintf(`
provider:
  kubernetes:
    server: {url: "https://upstream.test:6443", caBundle: %s}
    remoteNamespace: default
    auth: {token: {bearerToken: {name: token, key: token%s}}}
`, base64.StdEncoding.EncodeToString(harnessCA), refNS)
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

func namespace(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

func tokenSecret(ns string) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "token"}, Data: map[string][]byte{"token": []byte("t0ken")}}
}

func upstreamSecretOf(name string, kv map[string]string) *corev1.Secret {
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

// managedCopy is a local copy of the seed's request through store, holding data and
// annotated with token (empty: the harness key's token of data).
func (h *harness) managedCopy(ns, name string, store webhook.StoreRef, data map[string]string, token string) *corev1.Secret {
	req := webhook.SecretRequest{Name: name, Store: store, Data: []webhook.DataEntry{
		{SecretKey: "username", RemoteRef: webhook.RemoteRef{Key: "user-credentials", Property: "username"}},
	}}
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: name,
			Labels:      map[string]string{webhook.LabelManagedBy: webhook.ManagedByValue},
			Annotations: map[string]string{webhook.AnnotationSource: webhook.SourceOf(req).String()},
		},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{},
	}
	for k, v := range data {
		s.Data[k] = []byte(v)
	}
	if token == "" {
		token = h.tokens.Token(s.Data)
	}
	s.Annotations[webhook.AnnotationDataHash] = token
	return s
}

// copyValue is key of downstream Secret ns/name, or "" when it cannot be read.
func (h *harness) copyValue(ns, name, key string) string {
	s, err := h.down.CoreV1().Secrets(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		return ""
	}
	return string(s.Data[key])
}

// writes counts the create, update and delete actions on downstream Secret ns/name.
func (h *harness) writes(ns, name string) int {
	n := 0
	for _, a := range h.down.Actions() {
		if a.GetResource().Resource != "secrets" || a.GetNamespace() != ns {
			continue
		}
		switch a := a.(type) {
		case k8stesting.DeleteAction:
			if a.GetName() == name {
				n++
			}
		case k8stesting.CreateAction: // updates too: the interfaces are alike
			if o, ok := a.GetObject().(metav1.Object); ok && o.GetName() == name {
				n++
			}
		}
	}
	return n
}

// events drains the events recorded so far.
func (h *harness) events() []string {
	var out []string
	for {
		select {
		case e := <-h.recorder.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}
