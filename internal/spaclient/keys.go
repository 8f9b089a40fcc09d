package spaclient

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/sesame-knock/sesame/internal/fwknop"
	"github.com/sesame-knock/sesame/internal/spa"
)

// maxKeyFile bounds what is read from a key file.
const maxKeyFile = 64 << 10

// ReadSecretFile reads a file holding a secret key, refusing it (on Unix)
// when group or others may access it.
func ReadSecretFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("read key file: %s is not a regular file", path)
	}
	if err := checkPrivate(path, fi); err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("read key file %s: %w", path, err)
	}
	if len(data) > maxKeyFile {
		return nil, fmt.Errorf("read key file: %s is too large to be a key file", path)
	}
	return data, nil
}

func isInlinePub(s string) bool { return strings.HasPrefix(strings.TrimSpace(s), "sesame-pub-v1 ") }

// sesameCredential loads a native credential: a shared key file, or a
// private key file plus the server's public key (a file or an inline key).
func sesameCredential(id, keyFile, serverKey string) (spa.ClientCredential, error) {
	cred := spa.ClientCredential{ID: id}
	if id == "" {
		return cred, usagef("no client identity: give --id NAME (the name of the server's [[spa.client]])")
	}
	if keyFile == "" {
		return cred, usagef("no key: give --key-file FILE (see 'sesame keygen')")
	}
	data, err := ReadSecretFile(keyFile)
	if err != nil {
		if b, rerr := os.ReadFile(keyFile); rerr == nil && isInlinePub(string(b)) {
			return cred, usagef("%s is a public key: --key-file takes the private key (the file without .pub)", keyFile)
		}
		return cred, err
	}
	text := strings.TrimSpace(string(data))
	label, _, _ := strings.Cut(text, " ")
	switch label {
	case "sesame-shared-v1":
		if serverKey != "" {
			return cred, usagef("%s is a shared key, which takes no server key: drop --server-key", keyFile)
		}
		k, err := spa.ParseSharedKey(text)
		if err != nil {
			return cred, fmt.Errorf("key file %s: %w", keyFile, err)
		}
		cred.Shared = &k
	case "sesame-priv-v1":
		if serverKey == "" {
			return cred, usagef("%s is a key pair: give the server's public key with --server-key FILE", keyFile)
		}
		kp, err := spa.ParseKeyPair(text)
		if err != nil {
			return cred, fmt.Errorf("key file %s: %w", keyFile, err)
		}
		pub, err := loadPublic(serverKey)
		if err != nil {
			return cred, err
		}
		cred.Pair, cred.Server = kp, &pub
	case "sesame-pub-v1":
		return cred, usagef("%s is a public key: --key-file takes the private key (the file without .pub)", keyFile)
	default:
		return cred, fmt.Errorf("key file %s: %w: want a sesame-shared-v1 or sesame-priv-v1 key (for fwknop keys add --fwknop)", keyFile, spa.ErrKeyFormat)
	}
	return cred, nil
}

// loadPublic reads a server public key from a file, or parses it inline.
func loadPublic(s string) (spa.PublicKey, error) {
	if isInlinePub(s) {
		p, err := spa.ParsePublicKey(s)
		if err != nil {
			return p, fmt.Errorf("server key: %w", err)
		}
		return p, nil
	}
	data, err := os.ReadFile(s)
	if err != nil {
		return spa.PublicKey{}, fmt.Errorf("read server key: %w", err)
	}
	p, err := spa.ParsePublicKey(string(data))
	if err != nil {
		return p, fmt.Errorf("server key %s: %w", s, err)
	}
	return p, nil
}

// fwknopKeyFile is what a fwknop key file sets.
type fwknopKeyFile struct {
	Key, HMACKey []byte
	HMACDigest   fwknop.Digest
}

// parseFwknopKeyFile reads a key file in fwknop.ParseKeyFile's grammar (the lines 'sesame
// keygen --fwknop -o' and 'fwknop -k -K' write, or one base64 key), with fwknop's --get-key
// format "HOST: passphrase" for host. Errors never quote the file.
func parseFwknopKeyFile(name string, data []byte, host string) (fwknopKeyFile, error) {
	kf, err := fwknop.ParseKeyFile(data, host)
	if err != nil {
		return fwknopKeyFile{}, fmt.Errorf("key file %s: %w", name, err)
	}
	if kf.EncryptionMode != 0 && kf.EncryptionMode != fwknop.ModeCBC {
		return fwknopKeyFile{}, fmt.Errorf("key file %s: ENCRYPTION_MODE: only CBC is supported", name)
	}
	return fwknopKeyFile{Key: kf.EncryptionKey(), HMACKey: kf.HMACKey, HMACDigest: kf.HMACDigest}, nil
}

// hmacOnlyFile reads an HMAC key file: its HMAC_KEY_BASE64 or HMAC_KEY line, else its only key.
func hmacOnlyFile(name string, data []byte) ([]byte, error) {
	kf, err := fwknop.ParseKeyFile(data, "")
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", name, err)
	}
	if kf.HMACFileKey() == nil {
		return nil, fmt.Errorf("key file %s: no HMAC_KEY_BASE64 or HMAC_KEY line", name)
	}
	return kf.HMACFileKey(), nil
}
