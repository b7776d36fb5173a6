package webhook

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"path"
	"slices"
	"strings"

	yamlv2 "go.yaml.in/yaml/v2"
	"k8s.io/apimachinery/pkg/util/validation"
	kjson "sigs.k8s.io/json"

	"github.com/secret-relay/secret-relay/relay"
)

// Limits on the secret-relay.io/secrets annotation. The API server already caps all
// annotations of a pod at 256 KiB together; these keep the work of one admission small.
const (
	maxSecretsBytes = 64 << 10
	maxSecretsItems = 64
)

// maxEcho caps how much of one user-supplied token a message repeats.
const maxEcho = 64

// Hints appended to name and key errors, so that the user need not look the rules up.
const (
	nameHint = "use a lowercase RFC 1123 subdomain"
	keyHint  = "use alphanumerics, '-', '_' or '.'"
)

// errNoStore is the error for an item that names no store on a pod that names none.
var errNoStore = fmt.Errorf("no store: set store on the item or annotate the pod with %s", relay.AnnotationStore)

// parseStoreRef parses "NAME", "SecretStore/NAME" or "ClusterSecretStore/NAME". A bare
// NAME is a SecretStore.
func parseStoreRef(s string) (relay.StoreRef, error) {
	if s == "" {
		return relay.StoreRef{}, errors.New("the store reference is empty")
	}
	ref := relay.StoreRef{Kind: relay.SecretStoreKind, Name: s}
	if kind, name, ok := strings.Cut(s, "/"); ok {
		switch relay.StoreKind(kind) {
		case relay.SecretStoreKind, relay.ClusterSecretStoreKind:
			ref = relay.StoreRef{Kind: relay.StoreKind(kind), Name: name}
		default:
			return relay.StoreRef{}, fmt.Errorf("store kind %s in %s is not %s or %s",
				quoteShort(kind), quoteShort(s), relay.SecretStoreKind, relay.ClusterSecretStoreKind)
		}
	}
	if !isValidName(ref.Name) {
		return relay.StoreRef{}, fmt.Errorf("store name %s is not a valid name: %s", quoteShort(ref.Name), nameHint)
	}
	return ref, nil
}

// ParseAnnotations reads secret-relay.io/store and secret-relay.io/secrets from a pod's
// annotations. It returns (nil, nil) when the pod has no secret-relay.io/secrets
// annotation, and an empty, non-nil slice for an empty list.
//
// Parsing is strict: anything it does not understand is an error rather than ignored,
// because a silently dropped reference becomes a pod started without its Secret. Every
// error is a *DenyError that names the annotation and, for an item, its position
// (counted from 1) and its name when known.
func ParseAnnotations(annotations map[string]string) ([]relay.SecretRequest, error) {
	value, ok := annotations[relay.AnnotationSecrets]
	if !ok {
		return nil, nil
	}

	var defaultStore *relay.StoreRef
	if s, ok := annotations[relay.AnnotationStore]; ok {
		ref, err := parseStoreRef(s)
		if err != nil {
			return nil, Denyf("annotation %s: %v", relay.AnnotationStore, err)
		}
		defaultStore = &ref
	}

	items, err := decodeList(value)
	if err != nil {
		return nil, Denyf("annotation %s: %v", relay.AnnotationSecrets, err)
	}

	requests := make([]relay.SecretRequest, 0, len(items))
	byName := map[string]int{}
	byMountPath := map[string]int{}
	for i, it := range items {
		req, err := parseItem(it, defaultStore)
		if err == nil {
			err = checkUnique(req, requests, byName, byMountPath)
		}
		if err != nil {
			return nil, Denyf("annotation %s: %s: %v", relay.AnnotationSecrets, itemLabel(i, req.Name), err)
		}
		byName[req.Name] = i
		if req.MountPath != "" {
			byMountPath[req.MountPath] = i
		}
		requests = append(requests, req)
	}
	return requests, nil
}

// checkUnique refuses a second local Secret of one name, and a second volume at one
// mount path, which the API server would refuse only after the Secrets were written.
func checkUnique(req relay.SecretRequest, earlier []relay.SecretRequest, byName, byMountPath map[string]int) error {
	if j, ok := byName[req.Name]; ok {
		return fmt.Errorf("name %s is already used by %s", quoteShort(req.Name), itemLabel(j, earlier[j].Name))
	}
	if j, ok := byMountPath[req.MountPath]; ok {
		return fmt.Errorf("mountPath %s is already used by %s", quoteShort(req.MountPath), itemLabel(j, earlier[j].Name))
	}
	return nil
}

// item is one entry of the list: for JSON, still raw, to be decoded strictly once on
// its own, so that a duplicate field is told against its item; for YAML, already
// decoded with the whole document.
type item struct {
	raw  json.RawMessage
	tree any
}

// decodeList checks the size of the secrets annotation and decodes its list.
//
// Valid JSON is taken as JSON, because the YAML 1.1 parser under sigs.k8s.io/yaml
// rejects some valid JSON (the escape \/); each item is decoded later, strictly, on
// its own. Anything else is YAML, decoded once, strictly, so that a key given twice
// is an error; a stream of several documents is refused, since reading the first
// would drop the rest.
func decodeList(value string) ([]item, error) {
	if len(value) > maxSecretsBytes {
		return nil, fmt.Errorf("the value is %d bytes, over the limit of %d (64 KiB)", len(value), maxSecretsBytes)
	}
	if strings.TrimSpace(value) == "" {
		return nil, errors.New("not a YAML or JSON list: the value is empty")
	}
	var items []item
	if json.Valid([]byte(value)) {
		var raws []json.RawMessage
		if err := json.Unmarshal([]byte(value), &raws); err != nil {
			return nil, fmt.Errorf("not a YAML or JSON list: got %s", jsonKind([]byte(value)))
		}
		for _, raw := range raws {
			items = append(items, item{raw: raw})
		}
	} else {
		doc, err := decodeYAML(value)
		if err != nil {
			return nil, fmt.Errorf("not a YAML or JSON list: %s", briefError(err))
		}
		list, ok := doc.([]any)
		if !ok {
			return nil, fmt.Errorf("not a YAML or JSON list: got %s", kindOf(doc))
		}
		for _, v := range list {
			items = append(items, item{tree: v})
		}
	}
	if len(items) > maxSecretsItems {
		return nil, fmt.Errorf("the list has %d items, over the limit of %d", len(items), maxSecretsItems)
	}
	return items, nil
}

// decodeYAML decodes the one YAML document of value, strictly, into nil, a bool, a
// number, a string, []any or map[string]any.
func decodeYAML(value string) (any, error) {
	dec := yamlv2.NewDecoder(strings.NewReader(value))
	dec.SetStrict(true)
	var doc any
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	var next any
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
		return fromYAML(doc), nil
	case err != nil:
		return nil, err
	default:
		return nil, errors.New("more than one YAML document")
	}
}

// fromYAML turns yaml.v2's maps, keyed by anything, into maps keyed by strings.
func fromYAML(v any) any {
	switch v := v.(type) {
	case map[any]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			m[fmt.Sprint(k)] = fromYAML(e)
		}
		return m
	case []any:
		for i, e := range v {
			v[i] = fromYAML(e)
		}
	}
	return v
}

// parseItem parses one item of the list, either form. On error, the returned request
// still holds the item's name when it could be read, to label the message.
func parseItem(it item, defaultStore *relay.StoreRef) (relay.SecretRequest, error) {
	v := it.tree
	if it.raw != nil {
		strict, err := kjson.UnmarshalStrict(it.raw, &v)
		if err != nil {
			return relay.SecretRequest{}, errors.New(briefError(err))
		}
		var field interface{ FieldPath() string }
		if len(strict) > 0 && errors.As(strict[0], &field) {
			// The one strict error decoding into a tree can have: a duplicate key.
			name, _ := nameOf(v)
			return relay.SecretRequest{Name: name}, fmt.Errorf("duplicate field %s", quoteShort(field.FieldPath()))
		}
	}
	switch v := v.(type) {
	case string:
		return parseShorthand(v, defaultStore)
	case map[string]any:
		return parseObject(v, defaultStore)
	case bool, int, int64, float64:
		return relay.SecretRequest{}, fmt.Errorf("must be a string or an object, got %s (quote names that YAML reads as numbers or booleans)", kindOf(v))
	default:
		return relay.SecretRequest{}, fmt.Errorf("must be a string or an object, got %s", kindOf(v))
	}
}

// parseShorthand parses the string form REMOTE: the whole upstream Secret REMOTE, copied
// to a local Secret of the same name.
func parseShorthand(remote string, defaultStore *relay.StoreRef) (relay.SecretRequest, error) {
	req := relay.SecretRequest{Name: remote}
	if remote == "" {
		return req, errors.New("is an empty string")
	}
	if !isValidName(remote) {
		return req, fmt.Errorf("%s is not a valid Secret name: %s", quoteShort(remote), nameHint)
	}
	if defaultStore == nil {
		return req, errNoStore
	}
	req.Store = *defaultStore
	req.DataFrom = []relay.DataFromEntry{{Extract: relay.RemoteRef{Key: remote}}}
	req.WholeSecret = true
	return req, nil
}

// shape is what one value of the object form must be: its kind, and for an object its
// fields, for a list its elements.
type shape struct {
	kind   string
	fields map[string]shape
	elem   *shape
}

var (
	stringShape = shape{kind: "a string"}
	itemShape   = shape{kind: "an object", fields: map[string]shape{
		"name":      stringShape,
		"store":     stringShape,
		"env":       {kind: "a boolean"},
		"mountPath": stringShape,
		"data": {kind: "a list", elem: &shape{kind: "an object", fields: map[string]shape{
			"secretKey": stringShape,
			"remoteRef": {kind: "an object", fields: map[string]shape{"key": stringShape, "property": stringShape}},
		}}},
		// extract has no property: dataFrom copies whole Secrets.
		"dataFrom": {kind: "a list", elem: &shape{kind: "an object", fields: map[string]shape{
			"extract": {kind: "an object", fields: map[string]shape{"key": stringShape}},
		}}},
	}}
)

// problems are the first of each kind of problem a walk of an item found.
type problems struct{ wrongType, unknown, empty error }

// check walks v against s. typed is v's path without indexes, as type errors name
// it ("data.secretKey"); at is its path with them ("data[0].secretKey").
func (s shape) check(v any, typed, at string, p *problems) {
	if v == nil || v == "" && s.kind == stringShape.kind {
		// A user who wrote null or "" meant something: it is not absent.
		if p.empty == nil {
			p.empty = fmt.Errorf("%s is empty", at)
		}
		return
	}
	if got := kindOf(v); got != s.kind {
		if p.wrongType == nil {
			p.wrongType = fmt.Errorf("%s must be %s, got %s", typed, s.kind, got)
		}
		return
	}
	join := func(path, key string) string {
		if path == "" {
			return key
		}
		return path + "." + key
	}
	switch v := v.(type) {
	case map[string]any:
		for _, k := range slices.Sorted(maps.Keys(v)) {
			sub, ok := s.fields[k]
			if !ok {
				if p.unknown == nil {
					p.unknown = fmt.Errorf("unknown field %s", quoteShort(join(at, k)))
				}
				continue
			}
			sub.check(v[k], join(typed, k), join(at, k), p)
		}
	case []any:
		for i, e := range v {
			s.elem.check(e, typed, fmt.Sprintf("%s[%d]", at, i), p)
		}
	}
}

// parseObject parses the object form: its shape first (types, then unknown fields,
// then empty values), then its rules.
func parseObject(m map[string]any, defaultStore *relay.StoreRef) (relay.SecretRequest, error) {
	name, _ := nameOf(m)
	var p problems
	itemShape.check(m, "", "", &p)
	if err := cmp.Or(p.wrongType, p.unknown, p.empty); err != nil {
		return relay.SecretRequest{Name: name}, err
	}
	str := func(m any, key string) string { s, _ := m.(map[string]any)[key].(string); return s }
	env, _ := m["env"].(bool)
	req := relay.SecretRequest{Name: name, Env: env, MountPath: str(m, "mountPath")}
	data, _ := m["data"].([]any)
	for _, d := range data {
		ref, _ := d.(map[string]any)["remoteRef"].(map[string]any)
		req.Data = append(req.Data, relay.DataEntry{SecretKey: str(d, "secretKey"), RemoteRef: relay.RemoteRef{Key: str(ref, "key"), Property: str(ref, "property")}})
	}
	dataFrom, _ := m["dataFrom"].([]any)
	for _, d := range dataFrom {
		extract, _ := d.(map[string]any)["extract"].(map[string]any)
		req.DataFrom = append(req.DataFrom, relay.DataFromEntry{Extract: relay.RemoteRef{Key: str(extract, "key")}})
	}
	return validate(req, str(m, "store"), defaultStore)
}

// nameOf is an item's name when it is a string, to label a message.
func nameOf(v any) (string, bool) {
	m, _ := v.(map[string]any)
	name, ok := m["name"].(string)
	return name, ok
}

// validate checks an object item's rules, and gives it its store: the one it names
// (store), or the pod's default.
func validate(req relay.SecretRequest, store string, defaultStore *relay.StoreRef) (relay.SecretRequest, error) {
	switch {
	case req.Name == "":
		return req, errors.New("name is required")
	case !isValidName(req.Name):
		return req, fmt.Errorf("name %s is not a valid Secret name: %s", quoteShort(req.Name), nameHint)
	}

	switch {
	case store != "":
		ref, err := parseStoreRef(store)
		if err != nil {
			return req, err
		}
		req.Store = ref
	case defaultStore != nil:
		req.Store = *defaultStore
	default:
		return req, errNoStore
	}

	if len(req.Data) == 0 && len(req.DataFrom) == 0 {
		return req, errors.New("needs at least one data or dataFrom entry")
	}
	if err := checkData(req.Data); err != nil {
		return req, err
	}
	if err := checkDataFrom(req.DataFrom); err != nil {
		return req, err
	}
	if req.MountPath != "" {
		if err := checkMountPath(req.MountPath); err != nil {
			return req, err
		}
	}
	return req, nil
}

func checkData(entries []relay.DataEntry) error {
	seen := map[string]int{}
	for i, d := range entries {
		at := fmt.Sprintf("data[%d]", i)
		switch {
		case d.SecretKey == "":
			return fmt.Errorf("%s.secretKey is required", at)
		case !isValidKey(d.SecretKey):
			return fmt.Errorf("%s.secretKey %s is not a valid Secret key: %s", at, quoteShort(d.SecretKey), keyHint)
		case d.RemoteRef.Key == "":
			return fmt.Errorf("%s.remoteRef.key is required", at)
		case !isValidName(d.RemoteRef.Key):
			return fmt.Errorf("%s.remoteRef.key %s is not a valid Secret name: %s", at, quoteShort(d.RemoteRef.Key), nameHint)
		case d.RemoteRef.Property != "" && !isValidKey(d.RemoteRef.Property):
			return fmt.Errorf("%s.remoteRef.property %s is not a valid Secret key: %s", at, quoteShort(d.RemoteRef.Property), keyHint)
		}
		if j, ok := seen[d.SecretKey]; ok {
			return fmt.Errorf("%s.secretKey %s is already used by data[%d]", at, quoteShort(d.SecretKey), j)
		}
		seen[d.SecretKey] = i
	}
	return nil
}

// checkDataFrom refuses the same remote Secret twice: both entries would yield the
// same keys. Keys that a dataFrom entry shares with data entries or with another
// remote Secret are only known upstream, when the plan is made.
func checkDataFrom(entries []relay.DataFromEntry) error {
	seen := map[string]int{}
	for i, d := range entries {
		at := fmt.Sprintf("dataFrom[%d]", i)
		switch key := d.Extract.Key; {
		case key == "":
			return fmt.Errorf("%s.extract.key is required", at)
		case !isValidName(key):
			return fmt.Errorf("%s.extract.key %s is not a valid Secret name: %s", at, quoteShort(key), nameHint)
		}
		if j, ok := seen[d.Extract.Key]; ok {
			return fmt.Errorf("%s.extract.key %s is already used by dataFrom[%d]", at, quoteShort(d.Extract.Key), j)
		}
		seen[d.Extract.Key] = i
	}
	return nil
}

// checkMountPath accepts a clean absolute path other than "/". A colon is refused as
// the kubelet treats it as a separator on some platforms.
func checkMountPath(p string) error {
	switch {
	case !strings.HasPrefix(p, "/"):
		return fmt.Errorf("mountPath %s is not an absolute path", quoteShort(p))
	case p == "/":
		return errors.New(`mountPath must not be "/"`)
	case strings.Contains(p, ":"):
		return fmt.Errorf("mountPath %s must not contain ':'", quoteShort(p))
	case path.Clean(p) != p:
		return fmt.Errorf(`mountPath %s is not a clean path: no "..", ".", "//" or trailing "/"`, quoteShort(p))
	}
	return nil
}

// isValidName reports whether s is a valid name for a Secret or a store.
func isValidName(s string) bool { return len(validation.IsDNS1123Subdomain(s)) == 0 }

// isValidKey reports whether s is a valid key of a Secret's data.
func isValidKey(s string) bool { return len(validation.IsConfigMapKey(s)) == 0 }
