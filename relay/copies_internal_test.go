package relay

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The memory the copies cache saves depends on copies as written being kept
// compact; what they look like from the outside is tested in copies_test.go.
func TestCompactCopy(t *testing.T) {
	written := func() *corev1.Secret {
		return &corev1.Secret{
			TypeMeta: metav1.TypeMeta{Kind: "Secret", APIVersion: "v1"}, // as a watch decodes it
			ObjectMeta: metav1.ObjectMeta{
				Name: "db", Namespace: "default", UID: "uid-1", ResourceVersion: "7", CreationTimestamp: metav1.Now(),
				Labels:        map[string]string{LabelManagedBy: ManagedByValue},
				Annotations:   map[string]string{AnnotationSource: "{}", AnnotationDataHash: "v2:t", AnnotationSyncedAt: "2026-01-01T00:00:00Z"},
				ManagedFields: []metav1.ManagedFieldsEntry{{Manager: ManagedByValue}},
			},
			Type: corev1.SecretTypeOpaque,
			Data: map[string][]byte{"k": []byte("v")},
		}
	}
	obj, err := compactCopy(written())
	require.NoError(t, err)
	c := obj.(*cachedCopy)
	assert.Nil(t, c.whole, "a copy as written is kept compact")
	assert.Same(t, c, must(compactCopy(c)), "a cached copy is not transformed again")

	labelled := written()
	labelled.Labels["team"] = "a"
	obj, err = compactCopy(labelled)
	require.NoError(t, err)
	assert.NotNil(t, obj.(*cachedCopy).whole, "a copy with more is kept whole")
}

func must(obj any, err error) any {
	if err != nil {
		panic(err)
	}
	return obj
}
