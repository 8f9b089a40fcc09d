// Package fwknop reads and writes fwknop 2.x single packet authorization packets (Rijndael + HMAC) and its configuration files.
package fwknop

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/sesame-knock/sesame/internal/netport"
)

// Errors returned by Decode and Encode, always wrapped with more detail. None
// of them ever carries key material.
var (
	ErrTooShort  = errors.New("packet too short")
	ErrTooLong   = errors.New("packet too long")
	ErrBadHMAC   = errors.New("HMAC mismatch")
	ErrDecrypt   = errors.New("decryption failed")
	ErrBadDigest = errors.New("inner digest mismatch")
	ErrMalformed = errors.New("malformed packet")
	ErrKey       = errors.New("invalid key")
)

// Limits of the wire format (SPEC.md §7, §7.1).
const (
	MinPacketLen = 140  // fwknopd drops shorter payloads
	MaxPacketLen = 1500 // fwknopd drops longer payloads
	// MaxRijndaelLen is the longest S (base64 of "Salted__"||salt||ciphertext,
	// with its prefix) libfko still treats as Rijndael; Encode refuses longer.
	MaxRijndaelLen = 399
	// ProtocolVersion is the version field the stock client sends.
	ProtocolVersion = "3.0.0"
	// DefaultPort is the default UDP port of fwknopd.
	DefaultPort = 62201
)

// Type is the message type field.
type Type int

// The message types of SPEC.md §2.
const (
	TypeCommand                     Type = 0
	TypeAccess                      Type = 1
	TypeNATAccess                   Type = 2
	TypeClientTimeoutAccess         Type = 3
	TypeClientTimeoutNATAccess      Type = 4
	TypeLocalNATAccess              Type = 5
	TypeClientTimeoutLocalNATAccess Type = 6
)

// HasNAT reports whether the type carries a NAT access field.
func (t Type) HasNAT() bool {
	return t == TypeNATAccess || t == TypeClientTimeoutNATAccess || t == TypeLocalNATAccess || t == TypeClientTimeoutLocalNATAccess
}

// HasTimeout reports whether the type carries a client timeout field.
func (t Type) HasTimeout() bool {
	return t == TypeClientTimeoutAccess || t == TypeClientTimeoutNATAccess || t == TypeClientTimeoutLocalNATAccess
}

// Keys are the per-stanza secrets and algorithm choices. Both sides must agree
// on all of them; nothing here is signalled on the wire.
type Keys struct {
	Key            []byte // Rijndael passphrase or base64-decoded KEY_BASE64; at most 32 bytes
	HMACKey        []byte // nil means no HMAC (old-style packets)
	HMACDigest     Digest // zero means SHA-256
	EncryptionMode Mode   // zero means CBC
}

// String describes the keys without revealing them, also when Keys is
// printed as part of a larger value (AccessStanza, RCStanza).
func (k Keys) String() string {
	h := "none"
	if k.HMACKey != nil {
		h = k.HMACDigest.String()
	}
	return fmt.Sprintf("{key:<redacted %d bytes> hmac:%s mode:%v}", len(k.Key), h, k.EncryptionMode)
}

// GoString is String, so %#v does not reveal the keys either.
func (k Keys) GoString() string { return k.String() }

// LogValue keeps keys out of slog output.
func (k Keys) LogValue() slog.Value { return slog.StringValue(k.String()) }

// Message holds the decoded fields of an SPA packet.
type Message struct {
	Random    string    // 16 decimal digits; Encode fills it from rand when empty
	User      string    // username field
	Timestamp time.Time // whole seconds
	Version   string    // "3.0.0"; Encode uses ProtocolVersion when empty
	Type      Type
	// AllowIP is the address to open for; 0.0.0.0 means "the packet's source".
	AllowIP netip.Addr
	// Ports are the requested proto/port pairs (not used by TypeCommand).
	Ports []netport.Port
	// Command is the command text of a TypeCommand message.
	Command string
	// NATAccess is the "host,port" NAT field of types 2, 4, 5 and 6.
	NATAccess string
	// ServerAuth is the optional server-auth field; fwknopd ignores it.
	ServerAuth string
	// ClientTimeout is the client-requested rule lifetime (types 3, 4, 6).
	ClientTimeout time.Duration
	// Digest is the inner digest algorithm; Encode uses SHA-256 when zero.
	Digest Digest
	// DigestValue is the raw inner digest (set by Decode).
	DigestValue []byte
	// ReplayDigest is the replay-cache key (set by Decode): SHA-256 of the decrypted
	// plaintext, which the inner digest authenticates. Keyed on what was decoded rather
	// than on the wire text, it is the same for every encoding of one packet.
	ReplayDigest []byte
}

// FromSource reports whether AllowIP asks for the packet's source address.
func (m *Message) FromSource() bool {
	return m.AllowIP == netip.IPv4Unspecified()
}

// IsWireChar reports whether c may appear in a payload: the base64 alphabet without '=', as
// the stock client strips the padding of every layer. A payload with '=' (or any other byte)
// is malformed: accepting it would let one packet be sent in many spellings.
func IsWireChar(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/'
}

func (k Keys) check() error {
	if len(k.Key) == 0 || len(k.Key) > maxKeyLen {
		return fmt.Errorf("%w: encryption key must be 1-%d bytes", ErrKey, maxKeyLen)
	}
	if len(k.HMACKey) > maxHMACKey {
		return fmt.Errorf("%w: HMAC key longer than %d bytes", ErrKey, maxHMACKey)
	}
	if k.HMACKey != nil && !k.HMACDigest.valid() {
		return fmt.Errorf("%w: unknown HMAC digest %d", ErrKey, int(k.HMACDigest))
	}
	if k.HMACKey != nil && k.EncryptionMode == ModeLegacy {
		return fmt.Errorf("%w: legacy encryption mode is incompatible with HMAC", ErrKey)
	}
	if _, ok := modeNames[k.EncryptionMode.orDefault()]; !ok {
		return fmt.Errorf("%w: unsupported encryption mode %d", ErrKey, int(k.EncryptionMode))
	}
	return nil
}

// Precheck tells, without any key, whether wire can be an fwknop payload: its length is within
// MinPacketLen and MaxPacketLen, it does not start with the Salted__ prefix the stock client
// strips, and it is unpadded base64 text. Decode makes the same checks first; Precheck lets a
// caller refuse before trying every stanza's keys. Its errors wrap ErrTooShort, ErrTooLong or
// ErrMalformed, with detail.
func Precheck(wire []byte) error {
	if err := precheck(wire); err != nil {
		return fmt.Errorf("fwknop: precheck: %w", err)
	}
	return nil
}

// Precheck's failures, built once: a flood of garbage costs no allocation.
var (
	errSalted    = fmt.Errorf("%w: starts with the Salted__ prefix", ErrMalformed)
	errNotBase64 = fmt.Errorf("%w: not unpadded base64 text", ErrMalformed)
)

func precheck(wire []byte) error {
	switch {
	case len(wire) < MinPacketLen:
		return fmt.Errorf("%w: %d bytes", ErrTooShort, len(wire))
	case len(wire) > MaxPacketLen:
		return fmt.Errorf("%w: %d bytes", ErrTooLong, len(wire))
	case bytes.HasPrefix(wire, saltedPrefixBytes):
		return errSalted
	}
	for _, c := range wire {
		if !IsWireChar(c) {
			return errNotBase64
		}
	}
	return nil
}

// saltedPrefixBytes is saltedPrefix for hash writes; never modified.
var saltedPrefixBytes = []byte(saltedPrefix)

// errBadHMAC is Decode's error for a packet whose HMAC does not match, built once: every
// configured stanza but one refuses each legitimate packet this way, and a flood all of them.
var errBadHMAC = fmt.Errorf("fwknop: decode: %w", ErrBadHMAC)

// Decode authenticates, decrypts and parses one SPA payload. The checks run
// cheapest first: length, prefix and alphabet, then the HMAC (constant time,
// before any decryption), then decryption, the plaintext rules of SPEC.md
// §1.1 and the inner digest. Only the canonical spelling decodes: no '=', no
// trailing bytes, no non-zero unused bits in the last base64 character. The
// caller does the replay check (ReplayDigest) and the age check on Timestamp.
func Decode(wire []byte, keys Keys) (*Message, error) {
	const op = "fwknop: decode"
	if err := precheck(wire); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if err := keys.check(); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	body := wire
	if keys.HMACKey != nil {
		n := keys.HMACDigest.b64Len()
		if len(wire) <= n {
			return nil, fmt.Errorf("%s: %w: no room for the HMAC", op, ErrTooShort)
		}
		var tag []byte
		body, tag = wire[:len(wire)-n], wire[len(wire)-n:]
		// The MAC covers the Salted__ prefix the client stripped, then the body: written in two
		// parts, so a packet refused here costs no copy of itself.
		m := hmac.New(keys.HMACDigest.newHash(), keys.HMACKey)
		m.Write(saltedPrefixBytes)
		m.Write(body)
		var enc [86]byte // b64nopad of the longest digest (64 bytes)
		base64.RawStdEncoding.Encode(enc[:n], m.Sum(nil))
		if !hmac.Equal(enc[:n], tag) {
			return nil, errBadHMAC
		}
	}
	return decodeBody(op, append([]byte(saltedPrefix), body...), keys)
}

// strictB64 decodes only the canonical unpadded spelling: the unused low bits of the last
// character must be zero, so no two texts decode to the same bytes.
var strictB64 = base64.RawStdEncoding.Strict()

func decodeBody(op string, s []byte, keys Keys) (*Message, error) {
	raw := make([]byte, strictB64.DecodedLen(len(s)))
	n, err := strictB64.Decode(raw, s)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: bad or non-canonical base64", op, ErrMalformed)
	}
	raw = raw[:n]
	if len(raw) < 16+16 || !bytes.HasPrefix(raw, []byte(saltedMagic)) {
		return nil, fmt.Errorf("%s: %w: too little ciphertext", op, ErrDecrypt)
	}
	salt, ct := raw[8:16], raw[16:]
	if len(ct)%16 != 0 {
		return nil, fmt.Errorf("%s: %w: ciphertext not a multiple of the block size", op, ErrDecrypt)
	}
	pass := keys.Key
	if keys.EncryptionMode == ModeLegacy {
		pass = legacyPass(pass)
	}
	key, iv := deriveKeyIV(pass, salt)
	if err := crypt(keys.EncryptionMode, key, iv, ct, false); err != nil {
		return nil, fmt.Errorf("%s: %w: %v", op, ErrDecrypt, err)
	}
	pt := pkcs7Unpad(ct)
	// fwknop's "did decryption work?" check: 16 digits then ':'.
	if len(pt) < 17 || pt[16] != ':' {
		return nil, fmt.Errorf("%s: %w: plaintext does not start with the random value", op, ErrDecrypt)
	}
	for _, c := range pt[:16] {
		if c < '0' || c > '9' {
			return nil, fmt.Errorf("%s: %w: plaintext does not start with the random value", op, ErrDecrypt)
		}
	}
	m, err := parsePlaintext(string(pt))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	rd := sha256.Sum256(pt)
	m.ReplayDigest = rd[:]
	return m, nil
}

func malformed(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, a...))
}

// parsePlaintext applies SPEC.md §1.1 to a decrypted plaintext.
func parsePlaintext(p string) (*Message, error) {
	if len(p) < 36 || len(p) >= 1500 {
		return nil, malformed("plaintext length %d out of range", len(p))
	}
	for i := 0; i < len(p); i++ {
		if p[i] < 0x20 || p[i] > 0x7e {
			return nil, malformed("non-printable plaintext")
		}
	}
	if strings.Count(p, ":") < 6 {
		return nil, malformed("too few fields")
	}
	i := strings.LastIndexByte(p, ':')
	emsg, dig := p[:i], p[i+1:]
	cands := digestsByLen(len(dig))
	if cands == nil {
		return nil, fmt.Errorf("%w: digest length %d matches no algorithm", ErrBadDigest, len(dig))
	}
	m := &Message{}
	for _, d := range cands {
		sum := d.sum([]byte(emsg))
		if subtle.ConstantTimeCompare([]byte(b64(sum)), []byte(dig)) == 1 {
			m.Digest, m.DigestValue = d, sum
			break
		}
	}
	if m.Digest == 0 {
		return nil, fmt.Errorf("%w", ErrBadDigest)
	}
	f := strings.Split(emsg, ":")
	if len(f[0]) != 16 {
		return nil, malformed("random value must be 16 digits")
	}
	m.Random = f[0]
	u, err := decodeField(f[1], 64)
	if err != nil || len(u) == 0 || !validUser(u) {
		return nil, malformed("bad username field")
	}
	m.User = u
	if len(f[2]) == 0 || len(f[2]) > 12 || !allDigits(f[2]) {
		return nil, malformed("bad timestamp")
	}
	ts, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil {
		return nil, malformed("bad timestamp")
	}
	m.Timestamp = time.Unix(ts, 0)
	if len(f[3]) == 0 || len(f[3]) > 8 {
		return nil, malformed("bad version")
	}
	m.Version = f[3]
	if len(f[4]) == 0 || len(f[4]) > 2 || !allDigits(f[4]) {
		return nil, malformed("bad message type")
	}
	t, _ := strconv.Atoi(f[4])
	if t > 6 {
		return nil, malformed("unknown message type %d", t)
	}
	m.Type = Type(t)
	rest := f[5:] // message, then type-specific fields; digest already removed
	maxRest := 2
	switch {
	case m.Type == TypeClientTimeoutNATAccess || m.Type == TypeClientTimeoutLocalNATAccess:
		maxRest = 4
	case m.Type.HasNAT() || m.Type.HasTimeout():
		maxRest = 3
	}
	if len(rest) > maxRest {
		return nil, malformed("too many fields for type %d", t)
	}
	msg, err := decodeField(rest[0], 256)
	if err != nil || msg == "" {
		return nil, malformed("bad message field")
	}
	if err := m.parseMessage(msg); err != nil {
		return nil, err
	}
	rest = rest[1:]
	if m.Type.HasNAT() {
		if len(rest) == 0 {
			return nil, malformed("missing NAT field")
		}
		nat, err := decodeField(rest[0], 256)
		if err != nil || !validNAT(nat) {
			return nil, malformed("bad NAT field")
		}
		m.NATAccess = nat
		rest = rest[1:]
	}
	if m.Type.HasTimeout() {
		if len(rest) == 0 {
			return nil, malformed("missing client timeout")
		}
		if len(rest) == 2 {
			sa, err := decodeField(rest[0], 1500)
			if err != nil {
				return nil, malformed("bad server auth field")
			}
			m.ServerAuth = sa
			rest = rest[1:]
		}
		to := rest[0]
		n, err := strconv.Atoi(to)
		if !allDigits(to) || err != nil || len(to) > 5 || n > 65536 {
			return nil, malformed("bad client timeout")
		}
		m.ClientTimeout = time.Duration(n) * time.Second
		rest = rest[1:]
	} else if len(rest) == 1 {
		sa, err := decodeField(rest[0], 1500)
		if err != nil {
			return nil, malformed("bad server auth field")
		}
		m.ServerAuth = sa
		rest = rest[1:]
	}
	if len(rest) != 0 {
		return nil, malformed("too many fields for type %d", t)
	}
	return m, nil
}

func decodeField(s string, maxEnc int) (string, error) {
	if len(s) > maxEnc {
		return "", errors.New("field too long")
	}
	b, err := unb64(s)
	return string(b), err
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

func validUser(u string) bool {
	if len(u) > 48 {
		return false
	}
	for i := 0; i < len(u); i++ {
		c := u[i]
		if c < 0x20 || c > 0x7e || strings.IndexByte(`"/\[]:;|=,+*?<>`, c) >= 0 {
			return false
		}
	}
	return true
}

func validNAT(s string) bool {
	host, port, ok := strings.Cut(s, ",")
	if !ok || host == "" || strings.Contains(port, ",") || strings.ContainsAny(host, " /?\"'\\") {
		return false
	}
	_, err := netport.ParseNumber(port)
	return err == nil
}

// parseMessage parses "<allow_ip>,<spec>[,<spec>…]" or, for commands,
// "<allow_ip>,<command>".
func (m *Message) parseMessage(s string) error {
	ip, rest, ok := strings.Cut(s, ",")
	if !ok || rest == "" {
		return malformed("message lacks a comma")
	}
	if len(ip) < 7 || len(ip) > 15 || strings.Count(ip, ".") != 3 || strings.Trim(ip, "0123456789.") != "" {
		return malformed("bad allow IP")
	}
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return malformed("bad allow IP")
	}
	m.AllowIP = a
	if m.Type == TypeCommand {
		m.Command = rest
		return nil
	}
	for spec := range strings.SplitSeq(rest, ",") {
		p, err := parseSpec(spec)
		if err != nil {
			return err
		}
		m.Ports = append(m.Ports, p)
	}
	return nil
}

func parseSpec(spec string) (netport.Port, error) {
	proto, num, ok := strings.Cut(spec, "/")
	if !ok || len(proto) > 3 || len(num) == 0 || len(num) > 5 {
		return netport.Port{}, malformed("bad proto/port %q", spec)
	}
	var p netport.Proto
	switch proto {
	case "tcp":
		p = netport.TCP
	case "udp":
		p = netport.UDP
	default:
		return netport.Port{}, malformed("bad protocol in %q", spec)
	}
	n, err := netport.ParseNumber(num)
	if err != nil {
		return netport.Port{}, malformed("bad port in %q", spec)
	}
	return netport.Port{Proto: p, Num: n}, nil
}

// Encode builds the wire payload for m the way the stock 2.6 client does:
// type upgraded to 3/4/6 when ClientTimeout > 0 (and back when 0), version
// 3.0.0, inner digest, PKCS#7, random salt, AES-256 and, when keys.HMACKey is
// set, the HMAC tag. rand supplies the salt and, if m.Random is empty, the
// random value. Encode refuses packets fwknopd could not decrypt (MaxRijndaelLen).
func Encode(m *Message, keys Keys, rand io.Reader) ([]byte, error) {
	const op = "fwknop: encode"
	if err := keys.check(); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	emsg, err := m.encodeFields(rand)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	d := m.Digest.orDefault()
	if !d.valid() {
		return nil, fmt.Errorf("%s: %w: unknown digest %d", op, ErrMalformed, int(m.Digest))
	}
	p := emsg + ":" + b64(d.sum([]byte(emsg)))
	if len(p) < 36 || len(p) >= 1500 {
		return nil, fmt.Errorf("%s: %w: plaintext length %d", op, ErrMalformed, len(p))
	}
	salt := make([]byte, 8)
	if _, err := io.ReadFull(rand, salt); err != nil {
		return nil, fmt.Errorf("%s: read random salt: %w", op, err)
	}
	pass := keys.Key
	if keys.EncryptionMode == ModeLegacy {
		pass = legacyPass(pass)
	}
	key, iv := deriveKeyIV(pass, salt)
	ct := pkcs7Pad([]byte(p))
	if err := crypt(keys.EncryptionMode, key, iv, ct, true); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	s := b64(append(append([]byte(saltedMagic), salt...), ct...))
	if len(s) > MaxRijndaelLen {
		return nil, fmt.Errorf("%s: %w: %d base64 chars, fwknopd accepts at most %d (shorten the message)", op, ErrTooLong, len(s), MaxRijndaelLen)
	}
	wire := s[len(saltedPrefix):]
	if keys.HMACKey != nil {
		wire += b64(keys.HMACDigest.hmac(keys.HMACKey, []byte(s)))
	}
	if len(wire) < MinPacketLen {
		return nil, fmt.Errorf("%s: %w: %d bytes", op, ErrTooShort, len(wire))
	}
	return []byte(wire), nil
}

func (m *Message) encodeFields(rand io.Reader) (string, error) {
	rnd := m.Random
	if rnd == "" {
		var err error
		if rnd, err = randomDigits(rand); err != nil {
			return "", err
		}
	}
	if len(rnd) != 16 || !allDigits(rnd) {
		return "", malformed("random value must be 16 digits")
	}
	if m.User == "" || !validUser(m.User) {
		return "", malformed("username must be 1-48 printable characters without \"/\\[]:;|=,+*?<>")
	}
	if m.Timestamp.Unix() < 0 {
		return "", malformed("negative timestamp")
	}
	ver := m.Version
	if ver == "" {
		ver = ProtocolVersion
	}
	if len(ver) > 8 || strings.Contains(ver, ":") {
		return "", malformed("bad version")
	}
	t := m.Type
	to := int64(m.ClientTimeout / time.Second)
	if to < 0 || to > 65536 {
		return "", malformed("client timeout out of range")
	}
	switch {
	case to > 0 && t == TypeAccess:
		t = TypeClientTimeoutAccess
	case to > 0 && t == TypeNATAccess:
		t = TypeClientTimeoutNATAccess
	case to > 0 && t == TypeLocalNATAccess:
		t = TypeClientTimeoutLocalNATAccess
	case to == 0 && t == TypeClientTimeoutAccess:
		t = TypeAccess
	case to == 0 && t == TypeClientTimeoutNATAccess:
		t = TypeNATAccess
	case to == 0 && t == TypeClientTimeoutLocalNATAccess:
		t = TypeLocalNATAccess
	}
	if t < 0 || t > 6 {
		return "", malformed("unknown message type %d", int(t))
	}
	if !m.AllowIP.Is4() {
		return "", malformed("allow IP must be IPv4 (0.0.0.0 for the packet source)")
	}
	msg := m.AllowIP.String()
	if t == TypeCommand {
		if m.Command == "" {
			return "", malformed("empty command")
		}
		msg += "," + m.Command
	} else {
		if len(m.Ports) == 0 {
			return "", malformed("no ports")
		}
		for _, p := range m.Ports {
			if (p.Proto != netport.TCP && p.Proto != netport.UDP) || p.Num == 0 {
				return "", malformed("bad port %v", p)
			}
			msg += "," + p.String()
		}
	}
	if len(b64([]byte(msg))) > 256 {
		return "", malformed("message longer than 192 bytes")
	}
	fields := []string{rnd, b64([]byte(m.User)), strconv.FormatInt(m.Timestamp.Unix(), 10), ver, strconv.Itoa(int(t)), b64([]byte(msg))}
	if t.HasNAT() {
		if !validNAT(m.NATAccess) {
			return "", malformed("NAT access must be host,port")
		}
		fields = append(fields, b64([]byte(m.NATAccess)))
	}
	if m.ServerAuth != "" {
		fields = append(fields, b64([]byte(m.ServerAuth)))
	}
	if t.HasTimeout() {
		fields = append(fields, strconv.FormatInt(to, 10))
	}
	return strings.Join(fields, ":"), nil
}

// randomDigits returns 16 decimal digits from rand, without modulo bias.
func randomDigits(rand io.Reader) (string, error) {
	var out [16]byte
	buf := make([]byte, 32)
	n := 0
	for n < len(out) {
		if _, err := io.ReadFull(rand, buf); err != nil {
			return "", fmt.Errorf("read random value: %w", err)
		}
		for _, b := range buf {
			if b < 250 && n < len(out) {
				out[n] = '0' + b%10
				n++
			}
		}
	}
	return string(out[:]), nil
}
