package remote

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestEndpointRESTConfig(t *testing.T) {
	ca := []byte("-----BEGIN CERTIFICATE-----\n")
	tests := map[string]struct {
		ep     Endpoint
		expErr string
	}{
		"A token endpoint should give a bearer-token config.": {ep: Endpoint{URL: "https://127.0.0.1:6443", CA: ca, Token: "t"}},
		"A certificate endpoint should give a client-cert config.": {
			ep: Endpoint{URL: "https://127.0.0.1:6443", CA: ca, ClientCert: []byte("c"), ClientKey: []byte("k")},
		},
		"An http URL should be refused.":       {ep: Endpoint{URL: "http://127.0.0.1:6443", CA: ca, Token: "t"}, expErr: "must be an https URL"},
		"A missing CA should be refused.":      {ep: Endpoint{URL: "https://127.0.0.1:6443", Token: "t"}, expErr: "no CA bundle"},
		"No credentials should be refused.":    {ep: Endpoint{URL: "https://127.0.0.1:6443", CA: ca}, expErr: "no credentials"},
		"Both auth methods should be refused.": {ep: Endpoint{URL: "https://h", CA: ca, Token: "t", ClientCert: []byte("c"), ClientKey: []byte("k")}, expErr: "exactly one"},
		"A certificate without a key should be refused.": {
			ep: Endpoint{URL: "https://h", CA: ca, ClientCert: []byte("c")}, expErr: "both a certificate and a key",
		},
	}
	for name, test := range tests {
		t.Run(name, func(t *testing.T) {
			cfg, err := test.ep.RESTConfig()
			if test.expErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), test.expErr)
				assert.NotContains(t, err.Error(), "\"t\"", "no credential in the message")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, test.ep.URL, cfg.Host)
			assert.Equal(t, test.ep.Token, cfg.BearerToken)
			assert.Equal(t, ca, cfg.CAData)
			assert.EqualValues(t, UpstreamQPS, cfg.QPS, "QPS is set explicitly")
			assert.Equal(t, UpstreamBurst, cfg.Burst, "Burst is set explicitly")
		})
	}
}

func TestEndpointFingerprintChangesWithEveryField(t *testing.T) {
	base := Endpoint{URL: "https://h", CA: []byte("ca"), Token: "t"}
	variants := []Endpoint{
		{URL: "https://h2", CA: []byte("ca"), Token: "t"},
		{URL: "https://h", CA: []byte("ca2"), Token: "t"},
		{URL: "https://h", CA: []byte("ca"), Token: "t2"},
		{URL: "https://h", CA: []byte("ca"), ClientCert: []byte("t")},
	}
	assert.Equal(t, base.fingerprint(), Endpoint{URL: "https://h", CA: []byte("ca"), Token: "t"}.fingerprint())
	for _, v := range variants {
		assert.NotEqual(t, base.fingerprint(), v.fingerprint(), "%+v", v)
	}
}
