package spaclient

import (
	"strings"
	"testing"
)

// valueTokens returns, per line of data, the tokens of the value (split from the setting's
// name as parseFwknopKeyFile does) that carry the marker '~' (which no error template contains)
// and are not part of the name: text an error must never quote, since a value may be a key.
func valueTokens(data []byte) []string {
	var out []string
	for l := range strings.SplitSeq(string(data), "\n") {
		l = strings.TrimSpace(l)
		k, v, ok := strings.Cut(l, ":")
		if i := strings.IndexAny(l, " \t"); i >= 0 && (!ok || i < len(k)) {
			k, v = l[:i], l[i+1:]
		}
		for _, tok := range strings.FieldsFunc(v, func(r rune) bool { return r == ' ' || r == '\t' }) {
			if len(tok) >= 8 && strings.Contains(tok, "~") && !strings.Contains(k, tok) {
				out = append(out, tok)
			}
		}
	}
	return out
}

// FuzzFwknopKeyFile checks the fwknop key-file parsers: no panic, and no error quotes a value.
func FuzzFwknopKeyFile(f *testing.F) {
	for _, s := range []struct{ data, host string }{
		{"KEY_BASE64 c2VjcmV0IGtleQ==\nHMAC_KEY_BASE64 aG1hYyBrZXkgbG9uZ2VyIHRoYW4gdGhhdA==\n", ""},
		{"KEY_BASE64: c2VjcmV0IGtleQ==\nHMAC_DIGEST_TYPE: SHA512\nUSE_HMAC Y\n", ""},
		{"# comment\nKEY pass~phrase~long\nHMAC_KEY hmac~pass~long\nENCRYPTION_MODE CBC\n", ""},
		{"server.example.org: my~pass~phrase\n", "server.example.org"},
		{"other.host: my~pass~phrase\n", "server.example.org"},
		{"KEY_BASE64 not~base64~at~all\n", ""},
		{"HMAC_DIGEST_TYPE no~such~digest\n", ""},
		{"ENCRYPTION_MODE legacy~mode~here\n", ""},
		{"aG1hYyBrZXk=", ""},
		{"", ""},
	} {
		f.Add([]byte(s.data), s.host)
	}
	f.Fuzz(func(t *testing.T, data []byte, host string) {
		check := func(what string, err error) {
			if err == nil {
				return
			}
			if err.Error() == "" {
				t.Fatalf("%s: empty error", what)
			}
			for _, tok := range valueTokens(data) {
				if strings.Contains(err.Error(), tok) && !strings.Contains(host, tok) {
					t.Fatalf("%s error quotes a value: %v", what, err)
				}
			}
		}
		_, err := parseFwknopKeyFile("keyfile", data, host)
		check("parseFwknopKeyFile", err)
		k, err := hmacOnlyFile("keyfile", data)
		check("hmacOnlyFile", err)
		if err == nil && k == nil {
			t.Fatal("hmacOnlyFile: no error and no key")
		}
	})
}
