package spaclient

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// marker stands for a secret in a malformed key file (not valid base64: it has a '-').
const marker = "MARKER-s3cr3t"

// TestKeyFileErrorsKeepSecrets: `sesame open` reading a malformed key file (native or fwknop,
// key or HMAC key) gives an error that quotes none of it.
func TestKeyFileErrorsKeepSecrets(t *testing.T) {
	files := []struct{ name, data string }{
		{"passphrase alone", marker + " with spaces\n"},
		{"word alone", marker + "\n"},
		{"colon", marker + ": x\n"},
		{"stray line", "KEY x\n" + marker + "\n"},
		{"stray line with value", "KEY x\n" + marker + " y\n"},
		{"bad base64", "KEY_BASE64 " + marker + "\n"},
		{"bad hmac base64", "KEY x\nHMAC_KEY_BASE64: " + marker + "\n"},
		{"bad digest", "KEY x\nHMAC_DIGEST_TYPE " + marker + "\n"},
		{"bad mode", "KEY x\nENCRYPTION_MODE " + marker + "\n"},
		{"sesame shared key", "sesame-shared-v1 " + marker + "\n"},
		{"sesame private key", "sesame-priv-v1 " + marker + "\n"},
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "bad.key")
	uses := map[string]func() error{
		"fwknop key file": func() error {
			data, err := ReadSecretFile(path)
			if err == nil {
				var kf fwknopKeyFile
				if kf, err = parseFwknopKeyFile(path, data, "192.0.2.7"); err == nil && kf.Key == nil {
					return nil // no key: the caller says so, quoting nothing
				}
			}
			return err
		},
		"fwknop hmac key file": func() error {
			data, err := ReadSecretFile(path)
			if err == nil {
				_, err = hmacOnlyFile(path, data)
			}
			return err
		},
		"native key file": func() error {
			_, err := sesameCredential("alice", path, "")
			return err
		},
		"native key pair": func() error {
			_, err := sesameCredential("alice", path, "sesame-pub-v1 AAAA")
			return err
		},
	}
	for _, f := range files {
		for use, fn := range uses {
			t.Run(f.name+"/"+use, func(t *testing.T) {
				if err := os.WriteFile(path, []byte(f.data), 0o600); err != nil {
					t.Fatal(err)
				}
				if err := fn(); err != nil && strings.Contains(err.Error(), "s3cr3t") {
					t.Errorf("the error quotes the key file: %v", err)
				}
			})
		}
	}
}

// The client reads the key files the server reads: one base64 key alone is the key.
func TestParseFwknopKeyFileBare(t *testing.T) {
	kf, err := parseFwknopKeyFile("f", []byte("# k\n"+testKeyB64+"\n"), "")
	if err != nil || len(kf.Key) != 32 {
		t.Fatalf("got %+v, %v", kf, err)
	}
	h, err := hmacOnlyFile("f", []byte("HMAC_KEY_BASE64: "+testHMACB64+"\n"))
	if err != nil || len(h) == 0 {
		t.Fatalf("got %d bytes, %v", len(h), err)
	}
	if _, err := parseFwknopKeyFile("f", []byte("KEY x\nENCRYPTION_MODE ecb\n"), ""); err == nil || !strings.Contains(err.Error(), "only CBC") {
		t.Errorf("ecb: %v", err)
	}
}
