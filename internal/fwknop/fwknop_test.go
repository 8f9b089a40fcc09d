package fwknop

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/netport"
)

// vector is one testdata/vectors/*.txt file: "name: value" lines.
type vector map[string]string

func loadVectors(t testing.TB) map[string]vector {
	t.Helper()
	files, err := filepath.Glob("testdata/vectors/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no vectors: %v", err)
	}
	out := map[string]vector{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		v := vector{}
		sc := bufio.NewScanner(bytes.NewReader(data))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "#") {
				continue
			}
			k, val, ok := strings.Cut(line, ": ")
			if ok {
				v[k] = val
			}
		}
		out[strings.TrimSuffix(filepath.Base(f), ".txt")] = v
	}
	return out
}

func (v vector) keys(t testing.TB) Keys {
	t.Helper()
	var k Keys
	switch v["enc_key_kind"] {
	case "b64":
		b, err := base64.StdEncoding.DecodeString(v["KEY_BASE64"])
		if err != nil {
			t.Fatal(err)
		}
		k.Key = b
	case "pass":
		k.Key = []byte(v["KEY"])
	}
	switch v["hmac_key_kind"] {
	case "b64":
		b, err := base64.StdEncoding.DecodeString(v["HMAC_KEY_BASE64"])
		if err != nil {
			t.Fatal(err)
		}
		k.HMACKey = b
	case "pass":
		k.HMACKey = []byte(v["HMAC_KEY"])
	}
	if ht := v["hmac_type"]; ht != "none" && ht != "" {
		d, err := ParseDigest(ht)
		if err != nil {
			t.Fatal(err)
		}
		k.HMACDigest = d
	}
	return k
}

func TestDecodeVectors(t *testing.T) {
	vecs := loadVectors(t)
	if len(vecs) != 17 {
		t.Errorf("got %d vectors, want 17", len(vecs))
	}
	for name, v := range vecs {
		t.Run(name, func(t *testing.T) {
			wire := []byte(v["packet"])
			m, err := Decode(wire, v.keys(t))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if m.Random != v["field.Random Value"] {
				t.Errorf("Random = %q, want %q", m.Random, v["field.Random Value"])
			}
			if m.User != v["field.Username"] {
				t.Errorf("User = %q, want %q", m.User, v["field.Username"])
			}
			ts, _ := strconv.ParseInt(v["field.Timestamp"], 10, 64)
			if !m.Timestamp.Equal(time.Unix(ts, 0)) {
				t.Errorf("Timestamp = %v, want %d", m.Timestamp, ts)
			}
			if m.Version != v["field.FKO Version"] {
				t.Errorf("Version = %q", m.Version)
			}
			typ, _, _ := strings.Cut(v["field.Message Type"], " ")
			if strconv.Itoa(int(m.Type)) != typ {
				t.Errorf("Type = %d, want %s", m.Type, typ)
			}
			// Rebuild the message string from the decoded fields.
			msg := m.AllowIP.String()
			if m.Type == TypeCommand {
				msg += "," + m.Command
			} else {
				for _, p := range m.Ports {
					msg += "," + p.String()
				}
			}
			if msg != v["field.Message String"] {
				t.Errorf("message = %q, want %q", msg, v["field.Message String"])
			}
			wantNAT := v["field.Nat Access"]
			if wantNAT == "<NULL>" {
				wantNAT = ""
			}
			if m.NATAccess != wantNAT {
				t.Errorf("NATAccess = %q, want %q", m.NATAccess, wantNAT)
			}
			if v["field.Server Auth"] != "<NULL>" || m.ServerAuth != "" {
				t.Errorf("ServerAuth = %q", m.ServerAuth)
			}
			if got := strconv.Itoa(int(m.ClientTimeout / time.Second)); got != v["field.Client Timeout"] {
				t.Errorf("ClientTimeout = %s, want %s", got, v["field.Client Timeout"])
			}
			dt, _, _ := strings.Cut(v["field.Digest Type"], " ")
			if strconv.Itoa(int(m.Digest)) != dt {
				t.Errorf("Digest = %v, want %s", m.Digest, dt)
			}
			if b64(m.DigestValue) != v["field.SPA Data Digest"] {
				t.Errorf("DigestValue = %s, want %s", b64(m.DigestValue), v["field.SPA Data Digest"])
			}
			if len(m.ReplayDigest) != 32 {
				t.Errorf("ReplayDigest is %d bytes, want 32", len(m.ReplayDigest))
			}
			// The plaintext fields re-encode to exactly the client's encoding.
			enc, err := m.encodeFields(nil)
			if err != nil {
				t.Fatal(err)
			}
			if enc != v["field.Encoded Data"] {
				t.Errorf("re-encoded fields\n got %s\nwant %s", enc, v["field.Encoded Data"])
			}
		})
	}
}

// TestV01Decomposition pins the worked example of SPEC.md §6.
func TestV01Decomposition(t *testing.T) {
	v := loadVectors(t)["v01_access_default"]
	key, iv := deriveKeyIV(v.keys(t).Key, []byte{0x7a, 0xbe, 0x09, 0x20, 0x04, 0x75, 0x46, 0x55})
	if got := hexs(key); got != "4120772c1ca08661e3ecb90cb936660ccccc495c85c30089bd47706b4b8910d9" {
		t.Errorf("key = %s", got)
	}
	if got := hexs(iv); got != "6918301b41ca145ee6fafcea68d00268" {
		t.Errorf("iv = %s", got)
	}
}

func hexs(b []byte) string {
	const h = "0123456789abcdef"
	var s strings.Builder
	for _, c := range b {
		s.WriteByte(h[c>>4])
		s.WriteByte(h[c&15])
	}
	return s.String()
}

// respell returns wire with its last base64 character replaced by the one that differs only in
// the lowest unused bit, or nil when the last character carries no unused bits. A lenient
// decoder reads both spellings as the same bytes.
func respell(wire []byte, bodyLen int) []byte {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	if (len(saltedPrefix)+bodyLen)%4 == 0 {
		return nil
	}
	out := bytes.Clone(wire)
	i := bodyLen - 1
	out[i] = alphabet[strings.IndexByte(alphabet, out[i])^1]
	return out
}

// TestDecodeRefusesRespelledPackets: a packet decodes in exactly one spelling. Without HMAC
// nothing else authenticates the text, so '=' padding, trailing bytes or a non-canonical last
// character would give the same packet a new replay key each time (issue 9 item 1). Every such
// variant is refused as malformed, and the replay digest is a function of what was decoded.
func TestDecodeRefusesRespelledPackets(t *testing.T) {
	rng := rand.NewChaCha8([32]byte{42})
	now := time.Unix(1_800_000_000, 0)
	for _, keys := range []Keys{
		{Key: []byte("passphrase only")},
		{Key: []byte("with hmac"), HMACKey: []byte("hmac key")},
	} {
		m := Message{User: "root", Timestamp: now, Type: TypeAccess, AllowIP: netip.IPv4Unspecified(),
			Ports: []netport.Port{{Proto: netport.TCP, Num: 22}}}
		// Find a packet whose last body character has unused bits, so the respelling exists.
		var wire, alt []byte
		for range 16 {
			w, err := Encode(&m, keys, rng)
			if err != nil {
				t.Fatal(err)
			}
			bodyLen := len(w)
			if keys.HMACKey != nil {
				bodyLen -= keys.HMACDigest.b64Len()
			}
			if alt = respell(w, bodyLen); alt != nil {
				wire = w
				break
			}
			m.Random = ""
		}
		if wire == nil {
			t.Fatal("no packet with a respellable last character in 16 tries")
		}
		first, err := Decode(wire, keys)
		if err != nil {
			t.Fatalf("hmac=%v: the packet itself: %v", keys.HMACKey != nil, err)
		}
		variants := map[string][]byte{
			"=":             append(bytes.Clone(wire), '='),
			"==":            append(bytes.Clone(wire), "=="...),
			"=AAAA":         append(bytes.Clone(wire), "=AAAA"...),
			"AAAA":          append(bytes.Clone(wire), "AAAA"...),
			"A":             append(bytes.Clone(wire), 'A'),
			"newline":       append(bytes.Clone(wire), '\n'),
			"non-canonical": alt,
		}
		for name, v := range variants {
			if _, err := Decode(v, keys); err == nil {
				t.Errorf("hmac=%v: variant %q decoded; want it refused", keys.HMACKey != nil, name)
			} else if keys.HMACKey == nil && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrDecrypt) {
				t.Errorf("hmac=%v: variant %q: %v, want malformed", keys.HMACKey != nil, name, err)
			}
		}
		// The same message encrypted again (new salt): another text, the same replay digest.
		again, err := Encode(&Message{Random: first.Random, User: first.User, Timestamp: first.Timestamp,
			Type: first.Type, AllowIP: first.AllowIP, Ports: first.Ports}, keys, rng)
		if err != nil {
			t.Fatal(err)
		}
		second, err := Decode(again, keys)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(again, wire) || !bytes.Equal(first.ReplayDigest, second.ReplayDigest) {
			t.Errorf("hmac=%v: re-encrypted message: replay digests %x and %x, want equal", keys.HMACKey != nil, first.ReplayDigest, second.ReplayDigest)
		}
	}
}

func TestDecodeWrongKeys(t *testing.T) {
	v := loadVectors(t)["v01_access_default"]
	good := v.keys(t)
	wire := []byte(v["packet"])
	tests := []struct {
		name string
		keys Keys
		want error
	}{
		{"wrong hmac key", Keys{Key: good.Key, HMACKey: []byte("nope")}, ErrBadHMAC},
		{"wrong hmac type", Keys{Key: good.Key, HMACKey: good.HMACKey, HMACDigest: DigestSHA512}, ErrBadHMAC},
		{"wrong enc key", Keys{Key: []byte("wrong"), HMACKey: good.HMACKey}, ErrDecrypt},
		{"no key", Keys{HMACKey: good.HMACKey}, ErrKey},
		{"key too long", Keys{Key: make([]byte, 33)}, ErrKey},
		// Read as one text, body and tag end in a character with non-zero unused bits.
		{"hmac expected but none", Keys{Key: []byte("wrong")}, ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode(wire, tc.keys)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			for _, secret := range [][]byte{good.Key, good.HMACKey, []byte(v["KEY_BASE64"]), []byte(v["HMAC_KEY_BASE64"])} {
				if bytes.Contains([]byte(err.Error()), secret) {
					t.Fatal("error contains key material")
				}
			}
		})
	}
}

func TestDecodeWireChecks(t *testing.T) {
	v := loadVectors(t)["v01_access_default"]
	keys := v.keys(t)
	wire := v["packet"]
	tests := []struct {
		name string
		wire string
		want error
	}{
		{"empty", "", ErrTooShort},
		{"139 bytes", wire[:139], ErrTooShort},
		{"1501 bytes", strings.Repeat("A", 1501), ErrTooLong},
		{"salted prefix", saltedPrefix + wire, ErrMalformed},
		{"newline", wire + "\n", ErrMalformed},
		{"bad char", wire[:50] + "-" + wire[51:], ErrMalformed},
		{"truncated", wire[:len(wire)-1], ErrBadHMAC},
		{"extra char", wire + "A", ErrBadHMAC},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Decode([]byte(tc.wire), keys); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

// TestTamper flips every byte position of real packets: the HMAC must catch
// every change and Decode must never panic.
func TestTamper(t *testing.T) {
	for name, v := range loadVectors(t) {
		wire := []byte(v["packet"])
		keys := v.keys(t)
		for i := range wire {
			w := slices.Clone(wire)
			if w[i] == 'A' {
				w[i] = 'B'
			} else {
				w[i] = 'A'
			}
			m, err := Decode(w, keys)
			if keys.HMACKey != nil {
				if !errors.Is(err, ErrBadHMAC) {
					t.Fatalf("%s: byte %d: err = %v, want ErrBadHMAC", name, i, err)
				}
				continue
			}
			// Without HMAC a flipped bit must still be caught by decryption
			// checks or the digest (low bits of the last char may be unused).
			if err == nil && i != len(wire)-1 {
				t.Fatalf("%s: byte %d: tampered packet accepted: %+v", name, i, m)
			}
		}
	}
}

// TestTamperPlaintext re-encrypts modified plaintexts with the right keys so
// that the HMAC passes and the plaintext rules are exercised.
func TestTamperPlaintext(t *testing.T) {
	keys := Keys{Key: []byte("fwknoptest"), HMACKey: []byte("hmacpass123")}
	good := "1329880131102658:cm9vdA:1795302428:3.0.0:1:MTAuMC4wLjIsdGNwLzIy"
	tests := []struct {
		name  string
		emsg  string
		digst string // empty: correct SHA-256 digest
		want  error
	}{
		{"ok", good, "", nil},
		{"bad digest", good, b64(make([]byte, 32)), ErrBadDigest},
		{"digest length", good, "abc", ErrBadDigest},
		{"random not digits", "13298801311026x8:cm9vdA:1795302428:3.0.0:1:MTAuMC4wLjIsdGNwLzIy", "", ErrDecrypt},
		{"bad user char", "1329880131102658:" + b64([]byte("a/b")) + ":1795302428:3.0.0:1:MTAuMC4wLjIsdGNwLzIy", "", ErrMalformed},
		{"empty user", "1329880131102658::1795302428:3.0.0:1:MTAuMC4wLjIsdGNwLzIy", "", ErrMalformed},
		{"long timestamp", "1329880131102658:cm9vdA:1795302428000:3.0.0:1:MTAuMC4wLjIsdGNwLzIy", "", ErrMalformed},
		{"type 7", "1329880131102658:cm9vdA:1795302428:3.0.0:7:MTAuMC4wLjIsdGNwLzIy", "", ErrMalformed},
		{"too many fields", good + ":YQ:YQ", "", ErrMalformed},
		{"server auth ok", good + ":YQ", "", nil},
		{"type 3 no timeout", "1329880131102658:cm9vdA:1795302428:3.0.0:3:MTAuMC4wLjIsdGNwLzIy", "", ErrMalformed},
		{"type 3 timeout too big", "1329880131102658:cm9vdA:1795302428:3.0.0:3:MTAuMC4wLjIsdGNwLzIy:65537", "", ErrMalformed},
		{"type 2 no nat", "1329880131102658:cm9vdA:1795302428:3.0.0:2:MTAuMC4wLjIsdGNwLzIy", "", ErrMalformed},
		{"icmp", "1329880131102658:cm9vdA:1795302428:3.0.0:1:" + b64([]byte("10.0.0.2,icmp/0")), "", ErrMalformed},
		{"port 0", "1329880131102658:cm9vdA:1795302428:3.0.0:1:" + b64([]byte("10.0.0.2,tcp/0")), "", ErrMalformed},
		{"upper TCP", "1329880131102658:cm9vdA:1795302428:3.0.0:1:" + b64([]byte("10.0.0.2,TCP/22")), "", ErrMalformed},
		{"ipv6", "1329880131102658:cm9vdA:1795302428:3.0.0:1:" + b64([]byte("::1,tcp/22")), "", ErrMalformed},
		{"non printable", "1329880131102658:cm9vdA:1795302428:3.0.0:1:MTAuMC4wLjIsdGNwLzIy\x01", "", ErrMalformed},
	}
	rng := rand.NewChaCha8([32]byte{1})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := tc.digst
			if d == "" {
				d = b64(DigestSHA256.sum([]byte(tc.emsg)))
			}
			wire := encryptRaw(t, tc.emsg+":"+d, keys, rng)
			_, err := Decode(wire, keys)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func encryptRaw(t *testing.T, p string, keys Keys, rng *rand.ChaCha8) []byte {
	t.Helper()
	salt := make([]byte, 8)
	rng.Read(salt)
	key, iv := deriveKeyIV(keys.Key, salt)
	ct := pkcs7Pad([]byte(p))
	if err := crypt(keys.EncryptionMode, key, iv, ct, true); err != nil {
		t.Fatal(err)
	}
	s := b64(append(append([]byte(saltedMagic), salt...), ct...))
	return []byte(s[10:] + b64(keys.HMACDigest.hmac(keys.HMACKey, []byte(s))))
}

func TestRoundTrip(t *testing.T) {
	base := Message{
		User:      "alice",
		Timestamp: time.Unix(1795302428, 0),
		Type:      TypeAccess,
		AllowIP:   netip.MustParseAddr("192.0.2.7"),
		Ports:     []netport.Port{{Proto: netport.TCP, Num: 22}, {Proto: netport.UDP, Num: 53}},
	}
	rng := rand.NewChaCha8([32]byte{2})
	digests := []Digest{0, DigestMD5, DigestSHA1, DigestSHA256, DigestSHA384, DigestSHA512, DigestSHA3256, DigestSHA3512}
	for _, d := range digests {
		for _, hd := range digests {
			for _, mode := range []Mode{0, ModeECB, ModeCFB, ModeOFB, ModeCTR} {
				name := d.String() + "/hmac-" + hd.String() + "/" + mode.String()
				t.Run(name, func(t *testing.T) {
					m := base
					m.Digest = d
					keys := Keys{Key: []byte("0123456789abcdef0123456789abcdef"), HMACKey: []byte("hmac key"), HMACDigest: hd, EncryptionMode: mode}
					wire, err := Encode(&m, keys, rng)
					if err != nil {
						t.Fatal(err)
					}
					got, err := Decode(wire, keys)
					if err != nil {
						t.Fatal(err)
					}
					if got.Digest != d.orDefault() || got.User != m.User || !got.Timestamp.Equal(m.Timestamp) ||
						got.AllowIP != m.AllowIP || !slices.Equal(got.Ports, m.Ports) || len(got.Random) != 16 || got.Version != ProtocolVersion {
						t.Fatalf("round trip mismatch: %+v", got)
					}
				})
			}
		}
	}
}

func TestRoundTripTypes(t *testing.T) {
	rng := rand.NewChaCha8([32]byte{3})
	src := netip.IPv4Unspecified()
	tcp22 := []netport.Port{{Proto: netport.TCP, Num: 22}}
	tests := []struct {
		name     string
		m        Message
		keys     Keys
		wantType Type
	}{
		{"access", Message{Type: TypeAccess, Ports: tcp22}, Keys{Key: []byte("k"), HMACKey: []byte("h")}, TypeAccess},
		{"timeout upgrades", Message{Type: TypeAccess, Ports: tcp22, ClientTimeout: time.Minute}, Keys{Key: []byte("k"), HMACKey: []byte("h")}, TypeClientTimeoutAccess},
		{"zero downgrades", Message{Type: TypeClientTimeoutAccess, Ports: tcp22}, Keys{Key: []byte("k"), HMACKey: []byte("h")}, TypeAccess},
		{"nat", Message{Type: TypeNATAccess, Ports: tcp22, NATAccess: "192.168.10.5,22"}, Keys{Key: []byte("k"), HMACKey: []byte("h")}, TypeNATAccess},
		{"nat timeout", Message{Type: TypeNATAccess, Ports: tcp22, NATAccess: "192.168.10.5,22", ClientTimeout: 45 * time.Second}, Keys{Key: []byte("k"), HMACKey: []byte("h")}, TypeClientTimeoutNATAccess},
		{"local nat timeout", Message{Type: TypeLocalNATAccess, Ports: tcp22, NATAccess: "127.0.0.1,22", ClientTimeout: 30 * time.Second}, Keys{Key: []byte("k"), HMACKey: []byte("h")}, TypeClientTimeoutLocalNATAccess},
		{"command", Message{Type: TypeCommand, Command: "echo hello"}, Keys{Key: []byte("k"), HMACKey: []byte("h")}, TypeCommand},
		{"server auth + timeout", Message{Type: TypeAccess, Ports: tcp22, ServerAuth: "pw", ClientTimeout: 10 * time.Second}, Keys{Key: []byte("k"), HMACKey: []byte("h")}, TypeClientTimeoutAccess},
		{"no hmac", Message{Type: TypeAccess, Ports: tcp22}, Keys{Key: []byte("fwknoptest")}, TypeAccess},
		{"legacy", Message{Type: TypeAccess, Ports: tcp22}, Keys{Key: []byte("fwknoptest"), EncryptionMode: ModeLegacy}, TypeAccess},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := tc.m
			m.User, m.Timestamp, m.AllowIP = "root", time.Unix(1795302428, 0), src
			wire, err := Encode(&m, tc.keys, rng)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Decode(wire, tc.keys)
			if err != nil {
				t.Fatal(err)
			}
			if got.Type != tc.wantType || got.NATAccess != m.NATAccess || got.Command != m.Command ||
				got.ClientTimeout != m.ClientTimeout || got.ServerAuth != m.ServerAuth || !got.FromSource() {
				t.Fatalf("got %+v", got)
			}
		})
	}
}

func TestEncodeRefuses(t *testing.T) {
	rng := rand.NewChaCha8([32]byte{4})
	ok := Message{User: "root", Timestamp: time.Unix(1, 0), Type: TypeAccess, AllowIP: netip.MustParseAddr("10.0.0.2"), Ports: []netport.Port{{Proto: netport.TCP, Num: 22}}}
	keys := Keys{Key: []byte("k"), HMACKey: []byte("h")}
	tests := []struct {
		name string
		edit func(*Message)
		keys Keys
		want error
	}{
		{"long command (v25)", func(m *Message) { m.Type = TypeCommand; m.Command = "echo " + strings.Repeat("x", 160) }, keys, ErrTooLong},
		{"ipv6", func(m *Message) { m.AllowIP = netip.MustParseAddr("2001:db8::1") }, keys, ErrMalformed},
		{"no ports", func(m *Message) { m.Ports = nil }, keys, ErrMalformed},
		{"bad user", func(m *Message) { m.User = "a:b" }, keys, ErrMalformed},
		{"icmp", func(m *Message) { m.Ports = []netport.Port{{Proto: netport.ICMP}} }, keys, ErrMalformed},
		{"legacy + hmac", func(*Message) {}, Keys{Key: []byte("k"), HMACKey: []byte("h"), EncryptionMode: ModeLegacy}, ErrKey},
		{"key too long", func(*Message) {}, Keys{Key: make([]byte, 33)}, ErrKey},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := ok
			tc.edit(&m)
			if _, err := Encode(&m, tc.keys, rng); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

// TestV25 documents that the long-command vector is well formed: Decode
// accepts it (fwknopd would not, see SPEC.md §7.1), Encode refuses to build it.
func TestV25(t *testing.T) {
	v := loadVectors(t)["v25_long_command_over_400"]
	m, err := Decode([]byte(v["packet"]), v.keys(t))
	if err != nil {
		t.Fatal(err)
	}
	m.Random = ""
	if _, err := Encode(m, v.keys(t), rand.NewChaCha8([32]byte{})); !errors.Is(err, ErrTooLong) {
		t.Fatalf("Encode err = %v, want ErrTooLong", err)
	}
}

func FuzzDecode(f *testing.F) {
	vecs := loadVectors(f)
	for _, v := range vecs {
		f.Add([]byte(v["packet"]))
	}
	keys := vecs["v01_access_default"].keys(f)
	f.Fuzz(func(t *testing.T, wire []byte) {
		m, err := Decode(wire, keys)
		if err == nil && m == nil {
			t.Fatal("nil message without error")
		}
		// Also exercise the plaintext parser directly (no crypto in the way).
		if len(wire) > 17 && allDigits(string(wire[:16])) && wire[16] == ':' {
			_, _ = parsePlaintext(string(wire))
		}
		_, _ = Decode(wire, Keys{Key: []byte("fwknoptest")})
	})
}
