package controllers

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	storesfake "github.com/secret-relay/secret-relay/api/client/clientset/versioned/fake"
	"github.com/secret-relay/secret-relay/relay"
	"github.com/secret-relay/secret-relay/remote"
	"github.com/secret-relay/secret-relay/remote/remotetest"
	"github.com/secret-relay/secret-relay/webhook"
)

// harness is the downstream and upstream sides of the relay on fake clientsets:
// stores, managed copies and the caches, wired as cmd/secret-relay wires them.
type harness struct {
	t         *testing.T
	down      *fake.Clientset
	storesAPI *storesfake.Clientset
	up        *fake.Clientset
	access    *remotetest.Access
	stores    *remote.StoreCache
	local     *relay.ManagedSecrets
	authz     *remote.Authorizer
	clients   *remote.Clients
	upstreams *remote.Upstreams
	recorder  *record.FakeRecorder
	tokens    relay.TokenKey
	metrics   *Metrics
	ctx       context.Context
}

func newHarness(t *testing.T, stores []runtime.Object, down []runtime.Object, up []runtime.Object) *harness {
	t.Helper()
	// The fake clientsets cannot stream a watch-list; real API servers can.
	t.Setenv("KUBE_FEATURE_WatchListClient", "false")
	h := &harness{
		t:         t,
		down:      fake.NewClientset(down...),
		storesAPI: remotetest.StoreClient(stores...),
		recorder:  record.NewFakeRecorder(100),
		ctx:       t.Context(),
	}
	h.up, h.access = remotetest.Upstream(up...)
	var err error
	h.tokens, err = relay.NewTokenKey([]byte("0123456789abcdef0123456789abcdef"))
	require.NoError(t, err)
	h.stores = remote.NewStoreCache(h.storesAPI, time.Hour)
	h.local = relay.NewManagedSecrets(h.down)
	h.clients = remote.NewClients(remote.ClientsetRefReader(h.down), nil)
	h.clients.BuildWith(func(*rest.Config) (remote.UpstreamClient, error) { return h.up, nil })
	h.upstreams = remote.NewUpstreams(h.ctx, h.clients, nil)
	h.authz = remote.NewAuthorizer(h.stores, func(ctx context.Context, name string) (*corev1.Namespace, error) {
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

// managedCopy is a local copy of the seed's request through store, holding data and
// annotated with token (empty: the harness key's token of data).
func (h *harness) managedCopy(ns, name string, store relay.StoreRef, data map[string]string, token string) *corev1.Secret {
	req := relay.SecretRequest{Name: name, Store: store, Data: []relay.DataEntry{
		{SecretKey: "username", RemoteRef: relay.RemoteRef{Key: "user-credentials", Property: "username"}},
	}}
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: name,
			Labels:      map[string]string{relay.LabelManagedBy: relay.ManagedByValue},
			Annotations: map[string]string{relay.AnnotationSource: relay.SourceOf(req).String()},
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
	s.Annotations[relay.AnnotationDataHash] = token
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

// describe is what cmd/secret-relay gives the controllers to word events.
var describe = webhook.Describe
