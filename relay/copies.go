package relay

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"maps"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
)

// ClientsetLocalSecrets reads and writes downstream Secrets through the API.
type ClientsetLocalSecrets struct {
	Client kubernetes.Interface
}

// Get returns the Secret, or nil when it does not exist.
func (c ClientsetLocalSecrets) Get(ctx context.Context, namespace, name string) (*corev1.Secret, error) {
	s, err := c.Client.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	return s, err
}

// Latest is Get: a clientset always reads from the API.
func (c ClientsetLocalSecrets) Latest(ctx context.Context, namespace, name string) (*corev1.Secret, error) {
	return c.Get(ctx, namespace, name)
}

// Apply creates desired, or updates existing to match it, keeping the owners
// existing has and adding those desired names. The update carries
// existing's resourceVersion, so a concurrent write makes it fail with a conflict
// instead of being overwritten. With dryRun the API server checks every step and
// stores nothing.
func (c ClientsetLocalSecrets) Apply(ctx context.Context, existing, desired *corev1.Secret, dryRun bool) error {
	secrets := c.Client.CoreV1().Secrets(desired.Namespace)
	var dry []string
	if dryRun {
		dry = []string{metav1.DryRunAll}
	}
	if existing == nil {
		_, err := secrets.Create(ctx, desired, metav1.CreateOptions{FieldManager: ManagedByValue, DryRun: dry})
		return err
	}
	// A Secret's type never changes, nor an immutable Secret's data: both are
	// replaced. Its metadata may still change in place.
	if existing.Type != desired.Type || ptr.Deref(existing.Immutable, false) && !HoldsData(existing, desired.Data) {
		replacement := *desired
		replacement.OwnerReferences = mergedOwners(existing.OwnerReferences, desired.OwnerReferences)
		return c.replace(ctx, existing, &replacement, dry)
	}
	update := existing.DeepCopy()
	update.OwnerReferences = mergedOwners(update.OwnerReferences, desired.OwnerReferences)
	update.Data = desired.Data
	update.StringData = nil
	delete(update.Annotations, digestKey) // a copy from the cache
	delete(update.Annotations, AnnotationOrphanedAt)
	if update.Labels == nil {
		update.Labels = map[string]string{}
	}
	if update.Annotations == nil {
		update.Annotations = map[string]string{}
	}
	maps.Copy(update.Labels, desired.Labels)
	maps.Copy(update.Annotations, desired.Annotations)
	_, err := secrets.Update(ctx, update, metav1.UpdateOptions{FieldManager: ManagedByValue, DryRun: dry})
	return err
}

// replace deletes and recreates a Secret whose type must change or whose data is
// immutable. The delete is conditional on the version we checked, so a Secret
// someone else changed meanwhile is never removed. A dry run can only check the
// delete: the create would collide with the Secret that is still there, and
// PlanSecret has already checked what the API server would refuse of it.
func (c ClientsetLocalSecrets) replace(ctx context.Context, existing, desired *corev1.Secret, dry []string) error {
	secrets := c.Client.CoreV1().Secrets(desired.Namespace)
	pre := metav1.Preconditions{UID: &existing.UID, ResourceVersion: &existing.ResourceVersion}
	if err := secrets.Delete(ctx, existing.Name, metav1.DeleteOptions{Preconditions: &pre, DryRun: dry}); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	if len(dry) > 0 {
		return nil
	}
	_, err := secrets.Create(ctx, desired, metav1.CreateOptions{FieldManager: ManagedByValue})
	return err
}

// DescribeWriteError says why a downstream read or write failed, for a denial or an
// event: the API server's own message, which names the Secret and the rule it broke.
// A message that holds one of the values being written, as a third-party webhook's
// might, is replaced by its reason alone: no value ever reaches a message.
func DescribeWriteError(err error, data map[string][]byte) string {
	var status apierrors.APIStatus
	switch {
	case errors.Is(err, context.DeadlineExceeded), apierrors.IsTimeout(err), apierrors.IsServerTimeout(err):
		return "the downstream API server did not answer in time"
	case errors.As(err, &status):
		msg := status.Status().Message
		if msg == "" || holdsValue(msg, data) {
			return "the downstream API server refused it (" + string(apierrors.ReasonForError(err)) + ")"
		}
		return msg
	case holdsValue(err.Error(), data):
		return "the downstream API server could not be reached"
	default:
		return err.Error()
	}
}

// holdsValue reports whether msg contains one of the values, raw or base64-encoded.
func holdsValue(msg string, data map[string][]byte) bool {
	for _, v := range data {
		if len(v) == 0 {
			continue
		}
		if strings.Contains(msg, string(v)) || strings.Contains(msg, base64.StdEncoding.EncodeToString(v)) {
			return true
		}
	}
	return false
}

// ManagedSecrets is a watch cache of the Secrets secret-relay manages downstream
// (those with its managed-by label), so that a warm admission and the sync
// controller read local copies without an API call. Writes go to the API.
//
// It keeps no values: each copy's data is replaced by a digest (see cachedCopy),
// so that 10,000 copies cost their metadata, not their data a second time beside
// the upstream cache. A copy someone edited by hand still differs from what is
// desired.
type ManagedSecrets struct {
	ClientsetLocalSecrets
	informer cache.SharedIndexInformer
}

// NewManagedSecrets returns the cache; Run starts it.
func NewManagedSecrets(kube kubernetes.Interface) *ManagedSecrets {
	inf := cache.NewSharedIndexInformer(secretsListWatch(kube, metav1.NamespaceAll, func(o *metav1.ListOptions) {
		o.LabelSelector = LabelManagedBy + "=" + ManagedByValue
	}), &corev1.Secret{}, 0, cache.Indexers{})
	_ = inf.SetTransform(compactCopy) // cannot fail before the informer runs
	return &ManagedSecrets{ClientsetLocalSecrets: ClientsetLocalSecrets{Client: kube}, informer: inf}
}

// WritingWith returns the same cache writing through kube, a client with its own rate
// limits: admission writes then never queue behind background ones.
func (m *ManagedSecrets) WritingWith(kube kubernetes.Interface) *ManagedSecrets {
	return &ManagedSecrets{ClientsetLocalSecrets: ClientsetLocalSecrets{Client: kube}, informer: m.informer}
}

// Run fills and follows the cache until ctx ends.
func (m *ManagedSecrets) Run(ctx context.Context) { m.informer.RunWithContext(ctx) }

// Synced reports whether the first list is in.
func (m *ManagedSecrets) Synced() bool { return m.informer.HasSynced() }

// Informer is the underlying informer, for the sync controller's event handlers.
func (m *ManagedSecrets) Informer() cache.SharedIndexInformer { return m.informer }

// Get returns the managed Secret from the cache, shared: it must not be modified, and
// its data is a digest that only HoldsData reads. A
// name the cache does not hold is reported as absent even if an unmanaged Secret has
// it: creating it then fails with AlreadyExists, and the mutator reads it with Latest
// and refuses to touch it.
func (m *ManagedSecrets) Get(ctx context.Context, namespace, name string) (*corev1.Secret, error) {
	if !m.informer.HasSynced() {
		return m.ClientsetLocalSecrets.Get(ctx, namespace, name)
	}
	obj, ok, err := m.informer.GetStore().GetByKey(namespace + "/" + name)
	if err != nil || !ok {
		return nil, err
	}
	s, _ := SecretOf(obj)
	return s, nil
}

// secretsListWatch lists and watches the Secrets of namespace that tweak selects,
// through the typed client, so that a fake clientset serves it too.
func secretsListWatch(kube kubernetes.Interface, namespace string, tweak func(*metav1.ListOptions)) *cache.ListWatch {
	secrets := kube.CoreV1().Secrets(namespace)
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			tweak(&o)
			return secrets.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			tweak(&o)
			return secrets.Watch(ctx, o)
		},
	}
}

// digestKey is the annotation that holds, in a Secret from the cache, the digest
// that stands for its data. No object can have it (annotation keys are qualified
// names), so a cached copy written back by mistake is refused by the API server
// rather than stored; Apply drops it.
const digestKey = "\x00sha256"

// managedLabels are the labels of nearly every copy, shared by the Secrets the cache
// returns. Cached objects are never modified.
var managedLabels = map[string]string{LabelManagedBy: ManagedByValue}

// immutable and mutable are the shared values of a cached copy's Immutable.
var immutable, mutable = true, false

// cachedCopy is what the copies cache keeps of a managed Secret: no managed fields,
// and the data replaced by its unkeyed digest, which lives in memory only (written
// anywhere, it would let a reader who can guess a value confirm it).
//
// Nearly every copy is exactly what secret-relay wrote: its label, its three
// annotations, no owner, no finalizer. Such a copy is kept as these fields, about
// 700 B, where a decoded corev1.Secret costs about 1,250 B (a 320 B struct and a
// 336 B annotations map before any string). Any other copy is kept whole, so that
// Apply, which updates the object it read, never drops what someone put on it.
type cachedCopy struct {
	namespace, name         string
	uid                     types.UID
	resourceVersion         string
	created                 metav1.Time
	source, token, syncedAt string
	typ                     corev1.SecretType
	immutable               *bool
	digest                  [sha256.Size]byte
	// whole is the copy, digested, when the fields above cannot stand for it.
	whole *corev1.Secret
}

// GetObjectMeta gives the informer the key and version of the copy.
func (c *cachedCopy) GetObjectMeta() metav1.Object {
	if c.whole != nil {
		return &c.whole.ObjectMeta
	}
	return &metav1.ObjectMeta{Namespace: c.namespace, Name: c.name, UID: c.uid, ResourceVersion: c.resourceVersion}
}

// secret is the copy as a Secret whose data is its digest: new but for its labels,
// which are shared.
func (c *cachedCopy) secret() *corev1.Secret {
	if c.whole != nil {
		return c.whole
	}
	s := c.metadataOnly()
	s.Annotations[digestKey] = string(c.digest[:])
	return s
}

func (c *cachedCopy) metadataOnly() *corev1.Secret {
	annotations := make(map[string]string, 4)
	put := func(key, value string) {
		if value != "" {
			annotations[key] = value
		}
	}
	put(AnnotationSource, c.source)
	put(AnnotationDataHash, c.token)
	put(AnnotationSyncedAt, c.syncedAt)
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: c.namespace, Name: c.name, UID: c.uid, ResourceVersion: c.resourceVersion, CreationTimestamp: c.created,
			Labels: managedLabels, Annotations: annotations,
		},
		Type:      c.typ,
		Immutable: c.immutable,
	}
}

// compactCopy is the copies cache's transform: it turns a managed Secret into a
// cachedCopy.
func compactCopy(obj any) (any, error) {
	s, ok := obj.(*corev1.Secret)
	if !ok {
		return StripManagedFields(obj) // a cachedCopy already, or a tombstone
	}
	s.ManagedFields = nil
	c := &cachedCopy{
		namespace: s.Namespace, name: s.Name, uid: s.UID, resourceVersion: s.ResourceVersion, created: s.CreationTimestamp,
		source: s.Annotations[AnnotationSource], token: s.Annotations[AnnotationDataHash], syncedAt: s.Annotations[AnnotationSyncedAt],
		typ: s.Type, immutable: s.Immutable,
	}
	copy(c.digest[:], LengthDelimitedSum(sha256.New(), s.Data))
	s.Data = nil
	if c.immutable != nil {
		c.immutable = &mutable
		if *s.Immutable {
			c.immutable = &immutable
		}
	}
	if c.typ == corev1.SecretTypeOpaque {
		c.typ = corev1.SecretTypeOpaque // one string for every Opaque copy
	}
	// Compared field by field, by reflection, so that no field, not even one a
	// later API version adds, is lost by keeping the fields above alone.
	rebuilt := c.metadataOnly()
	rebuilt.TypeMeta = s.TypeMeta
	if equality.Semantic.DeepEqual(rebuilt, s) {
		return c, nil
	}
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	s.Annotations[digestKey] = string(c.digest[:])
	if maps.Equal(s.Labels, managedLabels) {
		s.Labels = managedLabels
	}
	return &cachedCopy{whole: s}, nil
}

// SecretOf returns the Secret an object of the copies cache stands for, as Get
// does: its data is a digest that only HoldsData reads, and it must not be
// modified.
func SecretOf(obj any) (*corev1.Secret, bool) {
	switch o := obj.(type) {
	case *cachedCopy:
		return o.secret(), true
	case *corev1.Secret:
		return o, true
	}
	return nil, false
}

// CopySource returns the namespace and source annotation of an object of the copies
// cache, without making a Secret of it.
func CopySource(obj any) (namespace, source string, ok bool) {
	switch o := obj.(type) {
	case *cachedCopy:
		if o.whole != nil {
			return o.whole.Namespace, o.whole.Annotations[AnnotationSource], true
		}
		return o.namespace, o.source, true
	case *corev1.Secret:
		return o.Namespace, o.Annotations[AnnotationSource], true
	}
	return "", "", false
}

// HoldsData reports whether Secret s holds exactly data. s may be a copy from the
// cache, which keeps only the digest of its data.
func HoldsData(s *corev1.Secret, data map[string][]byte) bool {
	if d, ok := s.Annotations[digestKey]; ok {
		return d == string(LengthDelimitedSum(sha256.New(), data))
	}
	return maps.EqualFunc(s.Data, data, bytes.Equal)
}

// SameData reports whether Secrets a and b hold the same data. Either may be a
// copy from the cache, which keeps only the digest of its data.
func SameData(a, b *corev1.Secret) bool {
	da, okA := a.Annotations[digestKey]
	db, okB := b.Annotations[digestKey]
	switch {
	case okA && okB:
		return da == db
	case okA:
		return HoldsData(a, b.Data)
	case okB:
		return HoldsData(b, a.Data)
	}
	return maps.EqualFunc(a.Data, b.Data, bytes.Equal)
}

// StripManagedFields is an informer transform that drops managed fields before an
// object is cached: they are large and secret-relay never reads them.
func StripManagedFields(obj any) (any, error) {
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
	}
	return obj, nil
}
