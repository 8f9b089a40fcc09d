package spa

import (
	"strings"
	"testing"
)

// secretTokens returns the fields of s that could be key material: 24 or more characters of the
// base64 alphabet, which no error template contains.
func secretTokens(s string) []string {
	var out []string
	for _, f := range strings.Fields(s) {
		if len(f) >= 24 && strings.Trim(f, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=") == "" {
			out = append(out, f)
		}
	}
	return out
}

// FuzzParseKeys checks the key-file parsers: no panic, whatever parses survives a round trip
// through MarshalText, and no error or String form quotes key material.
func FuzzParseKeys(f *testing.F) {
	var seed [32]byte
	for i := range seed {
		seed[i] = byte(i * 7)
	}
	kp, err := NewKeyPair(seed)
	if err != nil {
		f.Fatal(err)
	}
	shared, _ := SharedKey(seed).MarshalText()
	priv, _ := kp.MarshalText()
	pub, _ := kp.Public().MarshalText()
	for _, s := range []string{string(shared), string(priv), string(pub),
		"  " + string(shared) + "\n", string(shared) + " extra", strings.Replace(string(priv), "=", "", 1),
		"sesame-shared-v1 AAAA", "sesame-pub-v1 " + strings.Repeat("A", 86) + "==", "sesame-priv-v1", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		noSecret := func(what string, err error) {
			for _, tok := range secretTokens(s) {
				if strings.Contains(err.Error(), tok) {
					t.Fatalf("%s error quotes key material: %v", what, err)
				}
			}
		}
		if k, err := ParseSharedKey(s); err != nil {
			noSecret("shared key", err)
		} else {
			b, _ := k.MarshalText()
			if k2, err := ParseSharedKey(string(b)); err != nil || k2 != k {
				t.Fatalf("shared key does not round-trip: %v", err)
			}
			if strings.Contains(k.String(), string(b[len(sharedLabel)+1:])) {
				t.Fatal("SharedKey.String reveals the key")
			}
		}
		if p, err := ParsePublicKey(s); err != nil {
			noSecret("public key", err)
		} else if p2, err := ParsePublicKey(p.String()); err != nil || p2 != p {
			t.Fatalf("public key does not round-trip: %v", err)
		}
		if k, err := ParseKeyPair(s); err != nil {
			noSecret("private key", err)
		} else {
			b, _ := k.MarshalText()
			k2, err := ParseKeyPair(string(b))
			if err != nil || k2.Public() != k.Public() {
				t.Fatalf("key pair does not round-trip: %v", err)
			}
			if strings.Contains(k.String(), string(b[len(privLabel)+1:])) {
				t.Fatal("KeyPair.String reveals the seed")
			}
		}
	})
}
