package config

import (
	"strings"
	"testing"

	"github.com/sesame-knock/sesame/internal/spa"
)

// markedValues returns the tokens of data after each line's setting name (split as
// ParseFwknopKeyFile does) that carry the marker '~' (which no error template contains) and are
// not part of the name: text an error must never quote, since a value may be a key.
func markedValues(data []byte) []string {
	var out []string
	for l := range strings.SplitSeq(string(data), "\n") {
		l = strings.TrimSpace(l)
		i := strings.IndexAny(l, " \t")
		if i < 0 {
			continue
		}
		for _, tok := range strings.FieldsFunc(l[i:], func(r rune) bool { return r == ' ' || r == '\t' }) {
			if len(tok) >= 8 && strings.Contains(tok, "~") && !strings.Contains(l[:i], tok) {
				out = append(out, tok)
			}
		}
	}
	return out
}

// FuzzKeyFile checks what the configuration does with a key file's bytes: the fwknop key-file
// parser and the native key text (comments dropped, then a shared key or a key pair). No panic,
// no error quotes a value, and an accepted fwknop file always has an encryption key.
func FuzzKeyFile(f *testing.F) {
	for _, s := range []string{
		"KEY_BASE64 c2VjcmV0IGtleQ==\nHMAC_KEY_BASE64 aG1hYyBrZXkgbG9uZ2VyIHRoYW4gdGhhdA==\n",
		"# a comment\nKEY pass~phrase~long\nHMAC_KEY hmac~pass~long\n",
		"c2VjcmV0IGtleQ==\n",
		"KEY_BASE64 not~valid~base64\n",
		"NOT_A_KEY some~value~here\n",
		"HMAC_KEY_BASE64 aG1hYyBrZXk=\n",
		"# sesame key\nsesame-shared-v1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",
		"sesame-priv-v1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n# trailing comment\n",
		"sesame-shared-v1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\nsesame-shared-v1 AAAA\n",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		check := func(what string, err error) {
			for _, tok := range markedValues(data) {
				if strings.Contains(err.Error(), tok) {
					t.Fatalf("%s error quotes a value: %v", what, err)
				}
			}
		}
		key, _, err := ParseFwknopKeyFile(data)
		switch {
		case err != nil:
			check("ParseFwknopKeyFile", err)
		case key == nil:
			t.Fatal("ParseFwknopKeyFile: no error and no key")
		}
		text := keyText(data)
		if strings.Contains(text, "\n#") || strings.HasPrefix(text, "#") {
			t.Fatalf("keyText kept a comment line: %q", text)
		}
		if _, err := spa.ParseSharedKey(text); err != nil {
			check("shared key", err)
		}
		if _, err := spa.ParseKeyPair(text); err != nil {
			check("key pair", err)
		}
	})
}
