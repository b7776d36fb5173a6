package webhook

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The messages of the annotation parser: how it names items, kinds of value and
// user-supplied tokens, within one short line.

// itemLabel names item i (0-based) for a message: `item 2 ("db")`, or `item 2` when the
// item has no usable name.
func itemLabel(i int, name string) string {
	if isValidName(name) {
		return fmt.Sprintf("item %d (%s)", i+1, quoteShort(name))
	}
	return fmt.Sprintf("item %d", i+1)
}

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

// kindOf describes the kind of a decoded value, for messages.
func kindOf(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case string:
		return "a string"
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	default:
		return "a number"
	}
}

// jsonKind describes the kind of a JSON value from its first byte, for messages.
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
