package relay

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"slices"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// TokenPrefix starts every data token, so that a reader can tell it from the
// unkeyed SHA-256 older versions wrote.
const TokenPrefix = "hmac-sha256:" //nolint:gosec // a format prefix, not a credential

// Tokenizer turns a Secret's data into the token written as secret-relay.io/data-hash
// and in a pod's secret-relay.io/status.
type Tokenizer interface {
	Token(data map[string][]byte) string
}

// TokenKey keys data tokens with a secret of this installation. A token is the
// HMAC-SHA256 of the data's stable encoding: keys sorted, each key and each value
// preceded by its length as 8 bytes big-endian, which keeps {"ab":"c"} and
// {"a":"bc"} apart. Equal data gives an equal token under one key; without the key,
// a token says nothing about the data, so that someone who may read pods but not
// Secrets cannot test a guessed value against it.
type TokenKey struct {
	key []byte
}

var _ Tokenizer = TokenKey{}

// tokenKeyBytes is the size of a generated key, and the least a key may have.
const tokenKeyBytes = 32

// NewTokenKey makes a key from at least 32 bytes of secret.
func NewTokenKey(key []byte) (TokenKey, error) {
	if len(key) < tokenKeyBytes {
		return TokenKey{}, fmt.Errorf("a token key needs at least %d bytes, got %d", tokenKeyBytes, len(key))
	}
	return TokenKey{key: slices.Clone(key)}, nil
}

// GenerateTokenKey makes a new random key.
func GenerateTokenKey() (TokenKey, error) {
	key := make([]byte, tokenKeyBytes)
	if _, err := rand.Read(key); err != nil {
		return TokenKey{}, fmt.Errorf("could not generate a token key: %w", err)
	}
	return TokenKey{key: key}, nil
}

// Token returns the data's token, TokenPrefix and 64 hex digits.
func (k TokenKey) Token(data map[string][]byte) string {
	return TokenPrefix + hex.EncodeToString(LengthDelimitedSum(hmac.New(sha256.New, k.key), data))
}

// LengthDelimitedSum writes data's stable encoding into h and returns the sum: keys
// sorted, each key and value preceded by its length as 8 bytes big-endian.
func LengthDelimitedSum(h hash.Hash, data map[string][]byte) []byte {
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		WriteLengthDelimited(h, []byte(k), data[k])
	}
	return h.Sum(nil)
}

// WriteLengthDelimited writes each part to h preceded by its length as 8 bytes
// big-endian, so that moving a byte from one part to the next changes the stream.
func WriteLengthDelimited(h hash.Hash, parts ...[]byte) {
	var n [8]byte
	for _, p := range parts {
		binary.BigEndian.PutUint64(n[:], uint64(len(p))) //nolint:gosec // a length is never negative
		h.Write(n[:])
		h.Write(p)
	}
}

// TokenKeySecret is the Secret in secret-relay's own namespace that holds the
// installation's token key, shared by every replica. It carries no managed-by label:
// it is not a relayed copy.
const (
	TokenKeySecret = "secret-relay-token-key"
	tokenKeyField  = "key"
)

// KeyedTokens is the installation's token key, loaded from TokenKeySecret (created
// when missing) and kept in step with it: every replica reads the same Secret, so
// all of them make the same tokens. It is a Tokenizer once Loaded.
type KeyedTokens struct {
	kube      kubernetes.Interface
	namespace string
	logger    *zap.Logger
	key       atomic.Pointer[TokenKey]
	// changed is called after an adopted key replaced another, so that copies are
	// re-annotated.
	changed func()
}

var _ Tokenizer = (*KeyedTokens)(nil)

// NewKeyedTokens returns the key of the installation whose namespace is ns; Run
// loads it. changed, which may be nil, hears of each later change of key.
func NewKeyedTokens(kube kubernetes.Interface, ns string, logger *zap.Logger, changed func()) *KeyedTokens {
	if logger == nil {
		logger = zap.NewNop()
	}
	if changed == nil {
		changed = func() {}
	}
	return &KeyedTokens{kube: kube, namespace: ns, logger: logger, changed: changed}
}

// Loaded reports whether a key is in hand.
func (t *KeyedTokens) Loaded() bool { return t.key.Load() != nil }

// Token returns the data's token under the current key. It panics before Loaded:
// callers wait for it, as they wait for their caches.
func (t *KeyedTokens) Token(data map[string][]byte) string {
	k := t.key.Load()
	if k == nil {
		panic("secret-relay: token key used before it was loaded")
	}
	return k.Token(data)
}

// Run loads the key, retrying until it can, and then follows TokenKeySecret until
// ctx ends: a changed key is adopted, and a deleted Secret is written again with the
// key in hand, so that replicas never part ways.
func (t *KeyedTokens) Run(ctx context.Context) {
	for delay := 100 * time.Millisecond; ctx.Err() == nil; delay = min(2*delay, 10*time.Second) {
		err := t.load(ctx)
		if err == nil {
			break
		}
		t.logger.Warn("could not load the token key; retrying", zap.String("namespace", t.namespace), zap.String("secret", TokenKeySecret), zap.Error(err))
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
	lw := secretsListWatch(t.kube, t.namespace, func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", TokenKeySecret).String()
	})
	inf := cache.NewSharedIndexInformer(lw, &corev1.Secret{}, 0, cache.Indexers{})
	rewrite := func() {
		if err := t.load(ctx); err != nil {
			t.logger.Warn("could not write the token key again", zap.String("secret", TokenKeySecret), zap.Error(err))
		}
	}
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { t.adopt(obj) },
		UpdateFunc: func(_, obj any) { t.adopt(obj) },
		DeleteFunc: func(any) { rewrite() },
	})
	go inf.RunWithContext(ctx)
	// A Secret deleted between the load and the first list is never announced as
	// deleted: the list simply lacks it.
	if cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		if _, ok, _ := inf.GetStore().GetByKey(t.namespace + "/" + TokenKeySecret); !ok {
			rewrite()
		}
	}
	<-ctx.Done()
}

// load reads the key from its Secret, or creates the Secret with the key in hand (a
// new one on first start).
func (t *KeyedTokens) load(ctx context.Context) error {
	secrets := t.kube.CoreV1().Secrets(t.namespace)
	for {
		s, err := secrets.Get(ctx, TokenKeySecret, metav1.GetOptions{})
		if err == nil {
			return t.use(s)
		}
		if !apierrors.IsNotFound(err) {
			return err
		}
		key := t.key.Load()
		if key == nil {
			k, err := GenerateTokenKey()
			if err != nil {
				return err
			}
			key = &k
		}
		_, err = secrets.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{
				Name:   TokenKeySecret,
				Labels: map[string]string{"app.kubernetes.io/part-of": ManagedByValue},
				Annotations: map[string]string{
					Prefix + "purpose": "keys the data tokens of relayed copies and pod status; deleting it makes every copy be re-annotated",
				},
			},
			Type: corev1.SecretTypeOpaque,
			Data: map[string][]byte{tokenKeyField: key.key},
		}, metav1.CreateOptions{FieldManager: ManagedByValue})
		if err == nil {
			t.set(*key)
			return nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return err
		}
		// Another replica created it first: use theirs.
	}
}

func (t *KeyedTokens) adopt(obj any) {
	s, ok := obj.(*corev1.Secret)
	if !ok {
		return
	}
	if err := t.use(s); err != nil {
		t.logger.Error("ignoring an unusable token key; keeping the one in hand", zap.String("secret", TokenKeySecret), zap.Error(err))
	}
}

func (t *KeyedTokens) use(s *corev1.Secret) error {
	k, err := NewTokenKey(s.Data[tokenKeyField])
	if err != nil {
		return fmt.Errorf("token key in Secret %s/%s key %q: %w", s.Namespace, s.Name, tokenKeyField, err)
	}
	t.set(k)
	return nil
}

func (t *KeyedTokens) set(k TokenKey) {
	prev := t.key.Swap(&k)
	if prev != nil && !hmac.Equal(prev.key, k.key) {
		t.logger.Info("token key changed; copies will be re-annotated", zap.String("secret", TokenKeySecret))
		t.changed()
	}
}
