package fwknop

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha3"
	"crypto/sha512"
	"encoding/base64"
	"fmt"
	"hash"
	"strings"
)

// Digest is a hash algorithm, numbered as libfko numbers it. It names both the
// inner digest of a packet and the HMAC algorithm.
type Digest int

// The digest algorithms of fwknop. The zero value means "the default", SHA-256.
const (
	DigestMD5     Digest = 1
	DigestSHA1    Digest = 2
	DigestSHA256  Digest = 3
	DigestSHA384  Digest = 4
	DigestSHA512  Digest = 5
	DigestSHA3256 Digest = 6
	DigestSHA3512 Digest = 7
)

var digestNames = map[Digest]string{
	DigestMD5: "md5", DigestSHA1: "sha1", DigestSHA256: "sha256", DigestSHA384: "sha384",
	DigestSHA512: "sha512", DigestSHA3256: "sha3_256", DigestSHA3512: "sha3_512",
}

// String returns the fwknop name, e.g. "sha256" or "sha3_256".
func (d Digest) String() string {
	if n, ok := digestNames[d.orDefault()]; ok {
		return n
	}
	return fmt.Sprintf("digest(%d)", int(d))
}

// ParseDigest parses md5, sha1, sha256, sha384, sha512, sha3_256 and sha3_512
// in any case; "sha3-256" and "sha3-512" are accepted as well.
func ParseDigest(s string) (Digest, error) {
	n := strings.ReplaceAll(strings.ToLower(strings.TrimSpace(s)), "-", "_")
	for d, name := range digestNames {
		if name == n {
			return d, nil
		}
	}
	return 0, fmt.Errorf("unknown digest type %q", s)
}

func (d Digest) orDefault() Digest {
	if d == 0 {
		return DigestSHA256
	}
	return d
}

func (d Digest) valid() bool {
	_, ok := digestNames[d.orDefault()]
	return ok
}

func (d Digest) newHash() func() hash.Hash {
	switch d.orDefault() {
	case DigestMD5:
		return md5.New
	case DigestSHA1:
		return sha1.New
	case DigestSHA256:
		return sha256.New
	case DigestSHA384:
		return sha512.New384
	case DigestSHA512:
		return sha512.New
	case DigestSHA3256:
		return func() hash.Hash { return sha3.New256() }
	case DigestSHA3512:
		return func() hash.Hash { return sha3.New512() }
	}
	return nil
}

// size is the digest's output length in bytes.
func (d Digest) size() int {
	switch d.orDefault() {
	case DigestMD5:
		return md5.Size
	case DigestSHA1:
		return sha1.Size
	case DigestSHA256, DigestSHA3256:
		return sha256.Size
	case DigestSHA384:
		return sha512.Size384
	case DigestSHA512, DigestSHA3512:
		return sha512.Size
	}
	return 0
}

// b64Len is the length of b64nopad(hash) for the digest.
func (d Digest) b64Len() int {
	return base64.RawStdEncoding.EncodedLen(d.size())
}

func (d Digest) sum(data []byte) []byte {
	h := d.newHash()()
	h.Write(data)
	return h.Sum(nil)
}

func (d Digest) hmac(key, data []byte) []byte {
	m := hmac.New(d.newHash(), key)
	m.Write(data)
	return m.Sum(nil)
}

// digestsByLen lists the candidate inner digests for a b64nopad length, in the
// order libfko tries them.
func digestsByLen(n int) []Digest {
	switch n {
	case 22:
		return []Digest{DigestMD5}
	case 27:
		return []Digest{DigestSHA1}
	case 43:
		return []Digest{DigestSHA256, DigestSHA3256}
	case 64:
		return []Digest{DigestSHA384}
	case 86:
		return []Digest{DigestSHA512, DigestSHA3512}
	}
	return nil
}

// Mode is a Rijndael encryption mode, numbered as libfko numbers it. It is not
// on the wire: both sides must be configured alike.
type Mode int

// The encryption modes. The zero value means "the default", CBC. Only CBC is
// verified against packets from the real client; the others are implemented
// from SPEC.md §5.1 and covered by round-trip tests only.
const (
	ModeECB    Mode = 1
	ModeCBC    Mode = 2
	ModeCFB    Mode = 3
	ModeOFB    Mode = 5
	ModeCTR    Mode = 6
	ModeLegacy Mode = 8
)

var modeNames = map[Mode]string{
	ModeECB: "ecb", ModeCBC: "cbc", ModeCFB: "cfb", ModeOFB: "ofb", ModeCTR: "ctr", ModeLegacy: "legacy",
}

// String returns the lower-case fwknop name, e.g. "cbc".
func (m Mode) String() string {
	if n, ok := modeNames[m.orDefault()]; ok {
		return n
	}
	return fmt.Sprintf("mode(%d)", int(m))
}

// ParseMode parses cbc, ecb, cfb, ofb, ctr and legacy in any case.
func ParseMode(s string) (Mode, error) {
	n := strings.ToLower(strings.TrimSpace(s))
	for m, name := range modeNames {
		if name == n {
			return m, nil
		}
	}
	return 0, fmt.Errorf("unsupported encryption mode %q", s)
}

func (m Mode) orDefault() Mode {
	if m == 0 {
		return ModeCBC
	}
	return m
}

const (
	saltedMagic  = "Salted__"
	saltedPrefix = "U2FsdGVkX1" // b64 of "Salted__" plus the top bits of the salt
	maxKeyLen    = 32
	maxHMACKey   = 136
)

// deriveKeyIV is OpenSSL's EVP_BytesToKey with MD5 and one iteration, giving
// an AES-256 key and a 16-byte IV.
func deriveKeyIV(pass, salt []byte) (key, iv []byte) {
	var out, prev []byte
	for len(out) < 48 {
		h := md5.New()
		h.Write(prev)
		h.Write(pass)
		h.Write(salt)
		prev = h.Sum(nil)
		out = append(out, prev...)
	}
	return out[:32], out[32:48]
}

// legacyPass pads a passphrase with '0' to 16 bytes or truncates it to 16.
func legacyPass(pass []byte) []byte {
	p := make([]byte, 16)
	for i := range p {
		p[i] = '0'
	}
	copy(p, pass)
	return p
}

// crypt encrypts or decrypts data (a multiple of 16 bytes) in place.
func crypt(mode Mode, key, iv, data []byte, encrypt bool) error {
	block, err := aes.NewCipher(key)
	if err != nil {
		return err
	}
	switch mode.orDefault() {
	case ModeCBC, ModeLegacy:
		if encrypt {
			cipher.NewCBCEncrypter(block, iv).CryptBlocks(data, data)
		} else {
			cipher.NewCBCDecrypter(block, iv).CryptBlocks(data, data)
		}
	case ModeECB:
		for i := 0; i < len(data); i += aes.BlockSize {
			if encrypt {
				block.Encrypt(data[i:i+aes.BlockSize], data[i:i+aes.BlockSize])
			} else {
				block.Decrypt(data[i:i+aes.BlockSize], data[i:i+aes.BlockSize])
			}
		}
	case ModeCFB:
		cfb(block, iv, data, encrypt)
	case ModeOFB:
		ofb(block, iv, data)
	case ModeCTR:
		cipher.NewCTR(block, iv).XORKeyStream(data, data)
	default:
		return fmt.Errorf("unsupported encryption mode %v", mode)
	}
	return nil
}

// cfb is full-block (128-bit segment) CFB.
func cfb(block cipher.Block, iv, data []byte, encrypt bool) {
	reg := make([]byte, aes.BlockSize)
	copy(reg, iv)
	ks := make([]byte, aes.BlockSize)
	for i := 0; i < len(data); i += aes.BlockSize {
		block.Encrypt(ks, reg)
		chunk := data[i : i+aes.BlockSize]
		if encrypt {
			for j := range chunk {
				chunk[j] ^= ks[j]
			}
			copy(reg, chunk)
		} else {
			copy(reg, chunk)
			for j := range chunk {
				chunk[j] ^= ks[j]
			}
		}
	}
}

func ofb(block cipher.Block, iv, data []byte) {
	reg := make([]byte, aes.BlockSize)
	copy(reg, iv)
	for i := 0; i < len(data); i += aes.BlockSize {
		block.Encrypt(reg, reg)
		for j := range aes.BlockSize {
			data[i+j] ^= reg[j]
		}
	}
}

func pkcs7Pad(p []byte) []byte {
	n := aes.BlockSize - len(p)%aes.BlockSize
	out := make([]byte, len(p)+n)
	copy(out, p)
	for i := len(p); i < len(out); i++ {
		out[i] = byte(n)
	}
	return out
}

// pkcs7Unpad strips consistent padding and, like libfko, leaves the data
// alone when the padding is inconsistent (later checks then fail).
func pkcs7Unpad(p []byte) []byte {
	if len(p) == 0 {
		return p
	}
	n := int(p[len(p)-1])
	if n < 1 || n > aes.BlockSize || n > len(p) {
		return p
	}
	for _, b := range p[len(p)-n:] {
		if int(b) != n {
			return p
		}
	}
	return p[:len(p)-n]
}

// b64 is the b64nopad encoding used by every fwknop layer.
func b64(b []byte) string { return base64.RawStdEncoding.EncodeToString(b) }

// unb64 decodes leniently like libfko: it stops at the first '=' and accepts
// unpadded input.
func unb64(s string) ([]byte, error) {
	if i := strings.IndexByte(s, '='); i >= 0 {
		s = s[:i]
	}
	return base64.RawStdEncoding.DecodeString(s)
}
