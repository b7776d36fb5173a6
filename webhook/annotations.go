package webhook

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"path"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	yamlv2 "go.yaml.in/yaml/v2"
	"k8s.io/apimachinery/pkg/util/validation"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

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

// secretItem is the object form of one secret-relay.io/secrets entry, as the user writes it.
// It has its own wire types, apart from relay.SecretRequest, so that the annotation's format
// cannot change by accident with the internal types.
type secretItem struct {
	Name      string         `json:"name"`
	Store     string         `json:"store"`
	Data      []itemData     `json:"data"`
	DataFrom  []itemDataFrom `json:"dataFrom"`
	Env       bool           `json:"env"`
	MountPath string         `json:"mountPath"`
}

type itemData struct {
	SecretKey string        `json:"secretKey"`
	RemoteRef itemRemoteRef `json:"remoteRef"`
}

type itemRemoteRef struct {
	Key      string `json:"key"`
	Property string `json:"property"`
}

type itemDataFrom struct {
	Extract itemExtract `json:"extract"`
}

// itemExtract has no property: dataFrom copies whole Secrets.
type itemExtract struct {
	Key string `json:"key"`
}

// ParseStoreRef parses "NAME", "SecretStore/NAME" or "ClusterSecretStore/NAME". A bare
// NAME is a SecretStore. Any error is a *DenyError.
func ParseStoreRef(s string) (relay.StoreRef, error) {
	ref, err := parseStoreRef(s)
	if err != nil {
		return relay.StoreRef{}, Denyf("%v", err)
	}
	return ref, nil
}

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

	raws, err := splitList(value)
	if err != nil {
		return nil, Denyf("annotation %s: %v", relay.AnnotationSecrets, err)
	}

	requests := make([]relay.SecretRequest, 0, len(raws))
	byName := map[string]int{}
	byMountPath := map[string]int{}
	for i, raw := range raws {
		req, err := parseItem(raw, defaultStore)
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

// itemLabel names item i (0-based) for a message: `item 2 ("db")`, or `item 2` when the
// item has no usable name.
func itemLabel(i int, name string) string {
	if isValidName(name) {
		return fmt.Sprintf("item %d (%s)", i+1, quoteShort(name))
	}
	return fmt.Sprintf("item %d", i+1)
}

// splitList checks the size of the secrets annotation and splits its list into items,
// each as JSON.
func splitList(value string) ([]json.RawMessage, error) {
	if len(value) > maxSecretsBytes {
		return nil, fmt.Errorf("the value is %d bytes, over the limit of %d (64 KiB)", len(value), maxSecretsBytes)
	}
	if strings.TrimSpace(value) == "" {
		return nil, errors.New("not a YAML or JSON list: the value is empty")
	}
	doc, err := toJSON([]byte(value))
	if err != nil {
		return nil, fmt.Errorf("not a YAML or JSON list: %s", briefError(err))
	}
	if kind := jsonKind(doc); kind != "a list" {
		return nil, fmt.Errorf("not a YAML or JSON list: got %s", kind)
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(doc, &raws); err != nil {
		return nil, fmt.Errorf("not a YAML or JSON list: %s", briefError(err))
	}
	if len(raws) > maxSecretsItems {
		return nil, fmt.Errorf("the list has %d items, over the limit of %d", len(raws), maxSecretsItems)
	}
	return raws, nil
}

// toJSON converts the annotation's value to JSON.
//
// Valid JSON is taken as it is, because the YAML 1.1 parser under sigs.k8s.io/yaml
// rejects some valid JSON (the escape \/, for one). Its objects are checked for
// duplicate keys later, when each item is decoded.
//
// YAML is converted strictly, so that a key given twice is an error. A YAML stream of
// several documents is refused: sigs.k8s.io/yaml would read the first and drop the rest.
func toJSON(value []byte) ([]byte, error) {
	if json.Valid(value) {
		return value, nil
	}
	if err := checkSingleDocument(value); err != nil {
		return nil, err
	}
	return yaml.YAMLToJSONStrict(value)
}

// checkSingleDocument refuses a YAML stream of more than one document. It uses the
// parser under sigs.k8s.io/yaml, so that both agree on where a document ends.
func checkSingleDocument(value []byte) error {
	dec := yamlv2.NewDecoder(bytes.NewReader(value))
	var doc any
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	}
	switch err := dec.Decode(&doc); {
	case errors.Is(err, io.EOF):
		return nil
	case err != nil:
		return err
	default:
		return errors.New("more than one YAML document")
	}
}

// jsonKind describes the type of one JSON value, for messages.
func jsonKind(raw []byte) string {
	raw = bytes.TrimLeft(raw, " \t\r\n")
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '[':
		return "a list"
	case '{':
		return "an object"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	default:
		return "a number"
	}
}

// parseItem parses one item of the list, either form. On error, the returned request
// still holds the item's name when it could be read, to label the message.
func parseItem(raw json.RawMessage, defaultStore *relay.StoreRef) (relay.SecretRequest, error) {
	switch kind := jsonKind(raw); kind {
	case "a string":
		var remote string
		if err := json.Unmarshal(raw, &remote); err != nil {
			return relay.SecretRequest{}, errors.New(briefError(err))
		}
		return parseShorthand(remote, defaultStore)
	case "an object":
		return parseObject(raw, defaultStore)
	case "a number", "a boolean":
		return relay.SecretRequest{}, fmt.Errorf("must be a string or an object, got %s (quote names that YAML reads as numbers or booleans)", kind)
	default:
		return relay.SecretRequest{}, fmt.Errorf("must be a string or an object, got %s", kind)
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

// parseObject parses the object form.
func parseObject(raw json.RawMessage, defaultStore *relay.StoreRef) (relay.SecretRequest, error) {
	var it secretItem
	// sigs.k8s.io/json, which the API server uses for strict field validation, matches
	// keys case-sensitively (encoding/json would take "Name" for "name") and reports
	// unknown and duplicate fields with their paths.
	strictErrs, err := kjson.UnmarshalStrict(raw, &it)
	if err != nil {
		return relay.SecretRequest{Name: it.Name}, describeDecodeError(raw, err)
	}
	if len(strictErrs) > 0 {
		return relay.SecretRequest{Name: it.Name}, describeStrictError(strictErrs[0])
	}
	// Typed decoding reads null and "" as absent; a user who wrote them meant something.
	var tree any
	if err := json.Unmarshal(raw, &tree); err != nil {
		return relay.SecretRequest{Name: it.Name}, errors.New(briefError(err))
	}
	if at := findEmpty(tree, ""); at != "" {
		return relay.SecretRequest{Name: it.Name}, fmt.Errorf("%s is empty", at)
	}
	return it.request(defaultStore)
}

// describeDecodeError explains a failed decode of an item. sigs.k8s.io/json reports a
// type mismatch with an internal type whose message names Go types; encoding/json,
// decoding the same input, gives it as a *json.UnmarshalTypeError, from which a message
// in the user's terms can be made.
func describeDecodeError(raw []byte, err error) error {
	var typeErr *json.UnmarshalTypeError
	if errors.As(json.Unmarshal(raw, new(secretItem)), &typeErr) && typeErr.Field != "" {
		got, _, _ := strings.Cut(typeErr.Value, " ")
		return fmt.Errorf("%s must be %s, got %s", typeErr.Field, describeType(typeErr.Type), describeValue(got))
	}
	return errors.New(briefError(err))
}

// describeStrictError shortens the field path in `unknown field "a.b"`, which a user
// can make as long as the annotation.
func describeStrictError(err error) error {
	var fieldErr interface{ FieldPath() string }
	if errors.As(err, &fieldErr) {
		quoted := strconv.Quote(fieldErr.FieldPath())
		if problem, ok := strings.CutSuffix(err.Error(), " "+quoted); ok {
			return fmt.Errorf("%s %s", problem, quoteShort(fieldErr.FieldPath()))
		}
	}
	return errors.New(briefError(err))
}

func describeType(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Slice:
		return "a list"
	case reflect.Struct:
		return "an object"
	default:
		return t.Kind().String()
	}
}

func describeValue(v string) string {
	switch v {
	case "array":
		return "a list"
	case "object":
		return "an object"
	case "bool":
		return "a boolean"
	case "number":
		return "a number"
	case "string":
		return "a string"
	default:
		return v
	}
}

// findEmpty returns the path of the first null or empty string in v, visiting keys in
// order so that the answer is stable, or "" when there is none.
func findEmpty(v any, at string) string {
	switch v := v.(type) {
	case nil:
		return at
	case string:
		if v == "" {
			return at
		}
	case []any:
		for i, e := range v {
			if p := findEmpty(e, fmt.Sprintf("%s[%d]", at, i)); p != "" {
				return p
			}
		}
	case map[string]any:
		for _, k := range slices.Sorted(maps.Keys(v)) {
			sub := k
			if at != "" {
				sub = at + "." + k
			}
			if p := findEmpty(v[k], sub); p != "" {
				return p
			}
		}
	}
	return ""
}

// request validates a decoded object item and turns it into a relay.SecretRequest.
func (it secretItem) request(defaultStore *relay.StoreRef) (relay.SecretRequest, error) {
	req := relay.SecretRequest{Name: it.Name, Env: it.Env, MountPath: it.MountPath}

	switch {
	case it.Name == "":
		return req, errors.New("name is required")
	case !isValidName(it.Name):
		return req, fmt.Errorf("name %s is not a valid Secret name: %s", quoteShort(it.Name), nameHint)
	}

	switch {
	case it.Store != "":
		ref, err := parseStoreRef(it.Store)
		if err != nil {
			return req, err
		}
		req.Store = ref
	case defaultStore != nil:
		req.Store = *defaultStore
	default:
		return req, errNoStore
	}

	if len(it.Data) == 0 && len(it.DataFrom) == 0 {
		return req, errors.New("needs at least one data or dataFrom entry")
	}
	data, err := parseData(it.Data)
	if err != nil {
		return req, err
	}
	req.Data = data
	dataFrom, err := parseDataFrom(it.DataFrom)
	if err != nil {
		return req, err
	}
	req.DataFrom = dataFrom

	if it.MountPath != "" {
		if err := checkMountPath(it.MountPath); err != nil {
			return req, err
		}
	}
	return req, nil
}

func parseData(entries []itemData) ([]relay.DataEntry, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	out := make([]relay.DataEntry, 0, len(entries))
	seen := map[string]int{}
	for i, d := range entries {
		at := fmt.Sprintf("data[%d]", i)
		switch {
		case d.SecretKey == "":
			return nil, fmt.Errorf("%s.secretKey is required", at)
		case !isValidKey(d.SecretKey):
			return nil, fmt.Errorf("%s.secretKey %s is not a valid Secret key: %s", at, quoteShort(d.SecretKey), keyHint)
		case d.RemoteRef.Key == "":
			return nil, fmt.Errorf("%s.remoteRef.key is required", at)
		case !isValidName(d.RemoteRef.Key):
			return nil, fmt.Errorf("%s.remoteRef.key %s is not a valid Secret name: %s", at, quoteShort(d.RemoteRef.Key), nameHint)
		case d.RemoteRef.Property != "" && !isValidKey(d.RemoteRef.Property):
			return nil, fmt.Errorf("%s.remoteRef.property %s is not a valid Secret key: %s", at, quoteShort(d.RemoteRef.Property), keyHint)
		}
		if j, ok := seen[d.SecretKey]; ok {
			return nil, fmt.Errorf("%s.secretKey %s is already used by data[%d]", at, quoteShort(d.SecretKey), j)
		}
		seen[d.SecretKey] = i
		out = append(out, relay.DataEntry{
			SecretKey: d.SecretKey,
			RemoteRef: relay.RemoteRef{Key: d.RemoteRef.Key, Property: d.RemoteRef.Property},
		})
	}
	return out, nil
}

// parseDataFrom refuses the same remote Secret twice: both entries would yield the same
// keys. Keys that a dataFrom entry shares with data entries or with another remote
// Secret are only known upstream, when the plan is made.
func parseDataFrom(entries []itemDataFrom) ([]relay.DataFromEntry, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	out := make([]relay.DataFromEntry, 0, len(entries))
	seen := map[string]int{}
	for i, d := range entries {
		at := fmt.Sprintf("dataFrom[%d]", i)
		switch key := d.Extract.Key; {
		case key == "":
			return nil, fmt.Errorf("%s.extract.key is required", at)
		case !isValidName(key):
			return nil, fmt.Errorf("%s.extract.key %s is not a valid Secret name: %s", at, quoteShort(key), nameHint)
		}
		if j, ok := seen[d.Extract.Key]; ok {
			return nil, fmt.Errorf("%s.extract.key %s is already used by dataFrom[%d]", at, quoteShort(d.Extract.Key), j)
		}
		seen[d.Extract.Key] = i
		out = append(out, relay.DataFromEntry{Extract: relay.RemoteRef{Key: d.Extract.Key}})
	}
	return out, nil
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

// quoteShort quotes a user-supplied token for a message, cut so that the quoted text
// stays within maxEcho bytes. It cuts between runes, never inside an escape.
func quoteShort(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		_, size := utf8.DecodeRuneInString(s[i:])
		escaped := strconv.Quote(s[i : i+size])
		escaped = escaped[1 : len(escaped)-1]
		if b.Len()+len(escaped) > maxEcho {
			return `"` + b.String() + `"...`
		}
		b.WriteString(escaped)
		i += size
	}
	return `"` + b.String() + `"`
}

// briefError makes a library's error message fit in a denial: one line, at most 160 bytes.
// Parser messages can quote pieces of the input.
func briefError(err error) string {
	const limit = 160
	msg := strings.Join(strings.Fields(err.Error()), " ")
	if len(msg) <= limit {
		return msg
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart(msg[cut]) {
		cut--
	}
	return msg[:cut] + "..."
}
