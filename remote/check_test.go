package remote

import (
	"encoding/base64"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestTokenClaims(t *testing.T) {
	jwt := func(payload string) string {
		return "eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString([]byte(payload)) + ".c2lnbmF0dXJl"
	}
	for name, test := range map[string]struct {
		token string
		want  jwtClaims
	}{
		"A list of audiences should be read.": {
			token: jwt(`{"iss":"https://127.0.0.1:6443","aud":["a","b"],"exp":1800000000}`),
			want:  jwtClaims{Issuer: "https://127.0.0.1:6443", Audiences: []string{"a", "b"}, Expires: time.Unix(1800000000, 0)},
		},
		"A single audience should be read as a list of one.": {
			token: jwt(`{"iss":"i","aud":"a","exp":1}`),
			want:  jwtClaims{Issuer: "i", Audiences: []string{"a"}, Expires: time.Unix(1, 0)},
		},
		"Something that is not a JWT should give nothing, not fail.": {token: "opaque-token"},
	} {
		t.Run(name, func(t *testing.T) { assert.Equal(t, test.want, tokenClaims(test.token)) })
	}
}
