// Package spa implements sesame's native single packet authorization protocol (docs/PROTOCOL.md): pure wire format and cryptography, no I/O.
package spa

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/hpke"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/sesame-knock/sesame/internal/netport"
	"golang.org/x/crypto/chacha20poly1305"
)

// Errors returned by Open and Seal, always wrapped with "spa: open: ..." and
// detail. They never contain key material.
var (
	ErrTooShort      = errors.New("packet too short")
	ErrTooLong       = errors.New("packet too long")
	ErrMalformed     = errors.New("malformed packet")
	ErrUnknownClient = errors.New("unknown client")
	ErrBadMAC        = errors.New("MAC mismatch")
	ErrDecrypt       = errors.New("decryption failed")
	ErrBadSignature  = errors.New("bad signature")
	ErrStale         = errors.New("timestamp too old")
	ErrFuture        = errors.New("timestamp in the future")
)

// Kind is the credential kind of a packet.
type Kind byte

// The credential kinds.
const (
	KindShared Kind = 1 // per-client shared key, XChaCha20-Poly1305
	KindPair   Kind = 2 // per-client key pair, HPKE + Ed25519
)

func (k Kind) String() string {
	switch k {
	case KindShared:
		return "shared"
	case KindPair:
		return "pair"
	}
	return fmt.Sprintf("kind(%d)", byte(k))
}

// Wire layout constants (PROTOCOL.md §2).
const (
	Magic          = "SSM1"
	HeaderLen      = 4 + 1 + 16 // magic, kind, key hint
	NonceLen       = 16         // body nonce, the replay key
	MaxIDLen       = 64
	MaxPorts       = 16
	bodyPad        = 32
	minBody        = 64
	maxBody        = 160
	sharedNonce    = chacha20poly1305.NonceSizeX // 24
	aeadTag        = 16
	encLen         = 32
	sigLen         = ed25519.SignatureSize // 64
	macLen         = 16
	sharedOverhead = HeaderLen + sharedNonce + aeadTag
	pairOverhead   = HeaderLen + encLen + sigLen + aeadTag + macLen

	// MinPacketLen and MaxPacketLen bound every valid packet; anything outside
	// is rejected before looking at its contents.
	MinPacketLen = sharedOverhead + minBody // 125
	MaxPacketLen = pairOverhead + maxBody   // 309
	// DefaultMaxAge is the default accepted clock difference.
	DefaultMaxAge = 120 * time.Second
)

// Address types in the body.
const (
	addrSource = 0
	addrIPv4   = 4
	addrIPv6   = 6
)

// Request is an authorization request: open Ports for Addr for Duration.
type Request struct {
	// Client is the client identity; Seal takes it from the credential.
	Client string
	// Kind is the credential kind the packet used (set by Open).
	Kind Kind
	// Timestamp is the send time with millisecond precision (Seal uses now).
	Timestamp time.Time
	// Nonce is 16 random bytes (Seal reads them from rand).
	Nonce [NonceLen]byte
	// Addr is the address to open for; the zero Addr (or an unspecified
	// address when sealing) means "the packet's source address".
	Addr netip.Addr
	// Ports are the requested ports, 1 to MaxPorts, TCP or UDP.
	Ports []netport.Port
	// Duration is the requested lifetime in whole seconds; 0 means the
	// server's default.
	Duration time.Duration

	hint KeyHint
}

// FromSource reports whether the request asks for the packet's source address.
func (r *Request) FromSource() bool { return !r.Addr.IsValid() }

// ReplayKey returns the key under which the caller records the request in its
// replay cache: the 16-byte key hint followed by the 16-byte nonce. Keep it
// until ReplayExpiry.
func (r *Request) ReplayKey() []byte {
	return append(r.hint[:], r.Nonce[:]...)
}

// ReplayMargin is how much longer than the last moment a packet can pass Open's
// age check its replay entry is kept, so that no rounding or clock step between
// the two checks lets a replay in.
const ReplayMargin = 5 * time.Second

// ReplayExpiry returns when the replay entry may be dropped: ReplayMargin after
// the timestamp stops passing Open's age check (now - timestamp < maxAge) with
// this or any smaller maxAge.
func (r *Request) ReplayExpiry(maxAge time.Duration) time.Time {
	if maxAge <= 0 {
		maxAge = DefaultMaxAge
	}
	return r.Timestamp.Add(maxAge + ReplayMargin)
}

func checkID(id string) error {
	if len(id) == 0 || len(id) > MaxIDLen {
		return fmt.Errorf("client id must be 1-%d bytes", MaxIDLen)
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x21 || id[i] > 0x7e {
			return errors.New("client id must be printable ASCII without spaces")
		}
	}
	return nil
}

// marshalBody encodes the plaintext body, zero-padded to a multiple of 32
// bytes (at least 64).
func marshalBody(r *Request) ([]byte, error) {
	if err := checkID(r.Client); err != nil {
		return nil, err
	}
	if len(r.Ports) == 0 || len(r.Ports) > MaxPorts {
		return nil, fmt.Errorf("want 1-%d ports, got %d", MaxPorts, len(r.Ports))
	}
	if r.Duration < 0 || r.Duration%time.Second != 0 || r.Duration/time.Second > 1<<32-1 {
		return nil, fmt.Errorf("duration %v is not a whole number of seconds in range", r.Duration)
	}
	b := make([]byte, 0, maxBody)
	b = binary.BigEndian.AppendUint64(b, uint64(r.Timestamp.UnixMilli()))
	b = append(b, r.Nonce[:]...)
	a := r.Addr.Unmap()
	switch {
	case !a.IsValid() || a.IsUnspecified():
		b = append(b, addrSource)
	case a.Is4():
		b = append(b, addrIPv4)
		b = append(b, a.AsSlice()...)
	default:
		if a.Zone() != "" {
			return nil, errors.New("address must not have a zone")
		}
		b = append(b, addrIPv6)
		b = append(b, a.AsSlice()...)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(r.Duration/time.Second))
	b = append(b, byte(len(r.Client)))
	b = append(b, r.Client...)
	b = append(b, byte(len(r.Ports)))
	for _, p := range r.Ports {
		if (p.Proto != netport.TCP && p.Proto != netport.UDP) || p.Num == 0 {
			return nil, fmt.Errorf("port %v: only tcp and udp ports 1-65535", p)
		}
		b = append(b, byte(p.Proto))
		b = binary.BigEndian.AppendUint16(b, p.Num)
	}
	n := max(minBody, (len(b)+bodyPad-1)/bodyPad*bodyPad)
	return append(b, make([]byte, n-len(b))...), nil
}

// parseBody decodes a body; all padding must be zero.
func parseBody(b []byte) (*Request, error) {
	r := &Request{}
	rd := reader{b: b}
	ms := rd.u64()
	copy(r.Nonce[:], rd.take(NonceLen))
	switch rd.u8() {
	case addrSource:
	case addrIPv4:
		r.Addr = netip.AddrFrom4([4]byte(rd.take(4)))
		if r.Addr.IsUnspecified() {
			return nil, errors.New("explicit address 0.0.0.0")
		}
	case addrIPv6:
		r.Addr = netip.AddrFrom16([16]byte(rd.take(16)))
		if r.Addr.IsUnspecified() || r.Addr.Is4In6() {
			return nil, errors.New("explicit address :: or IPv4-mapped")
		}
	default:
		return nil, errors.New("unknown address type")
	}
	r.Duration = time.Duration(rd.u32()) * time.Second
	r.Client = string(rd.take(int(rd.u8())))
	n := int(rd.u8())
	for range n {
		p := netport.Port{Proto: netport.Proto(rd.u8()), Num: rd.u16()}
		if (p.Proto != netport.TCP && p.Proto != netport.UDP) || p.Num == 0 {
			if rd.bad {
				break
			}
			return nil, fmt.Errorf("bad port %v", p)
		}
		r.Ports = append(r.Ports, p)
	}
	if rd.bad {
		return nil, errors.New("truncated body")
	}
	if err := checkID(r.Client); err != nil {
		return nil, err
	}
	if n == 0 || n > MaxPorts {
		return nil, fmt.Errorf("want 1-%d ports, got %d", MaxPorts, n)
	}
	if ms >= 1<<62 { // PROTOCOL.md: MUST be < 2^62
		return nil, errors.New("timestamp out of range")
	}
	r.Timestamp = time.UnixMilli(int64(ms))
	if len(b) != max(minBody, (rd.off+bodyPad-1)/bodyPad*bodyPad) || !allZero(b[rd.off:]) {
		return nil, errors.New("bad padding")
	}
	return r, nil
}

func allZero(b []byte) bool {
	var acc byte
	for _, c := range b {
		acc |= c
	}
	return acc == 0
}

type reader struct {
	b   []byte
	off int
	bad bool
}

func (r *reader) take(n int) []byte {
	if r.bad || n > len(r.b)-r.off {
		r.bad = true
		return make([]byte, n)
	}
	out := r.b[r.off : r.off+n]
	r.off += n
	return out
}

func (r *reader) u8() byte    { return r.take(1)[0] }
func (r *reader) u16() uint16 { return binary.BigEndian.Uint16(r.take(2)) }
func (r *reader) u32() uint32 { return binary.BigEndian.Uint32(r.take(4)) }
func (r *reader) u64() uint64 { return binary.BigEndian.Uint64(r.take(8)) }

func header(kind Kind, hint KeyHint) []byte {
	h := make([]byte, 0, HeaderLen)
	h = append(h, Magic...)
	h = append(h, byte(kind))
	return append(h, hint[:]...)
}

// Seal builds a packet for req with cred. It sets the identity from
// cred.ID, the timestamp from now and the nonce from rand, and reads from
// rand in this order: the 16-byte body nonce, then 24 bytes of AEAD nonce
// (kind 1) or the 32-byte ephemeral X25519 scalar (kind 2).
func Seal(req Request, cred ClientCredential, now time.Time, rand io.Reader) ([]byte, error) {
	const op = "spa: seal"
	req.Client = cred.ID
	req.Timestamp = now
	nonce, err := readRand(rand, NonceLen)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	copy(req.Nonce[:], nonce)
	body, err := marshalBody(&req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %v", op, ErrMalformed, err)
	}
	switch {
	case cred.Shared != nil && cred.Pair == nil:
		hdr := header(KindShared, cred.Shared.Hint())
		n, err := readRand(rand, sharedNonce)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
		pkt := append(hdr, n...)
		return cred.Shared.aead().Seal(pkt, n, body, hdr), nil
	case cred.Pair != nil && cred.Server != nil && cred.Shared == nil:
		client := cred.Pair.pub
		mac, err := pairMACKey(cred.Pair.dh, cred.Server.DH, *cred.Server, client)
		if err != nil {
			return nil, fmt.Errorf("%s: bad server public key: %w", op, err)
		}
		hdr := header(KindPair, pairHint(*cred.Server, client))
		skE, err := readRand(rand, 32)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
		enc, err := ephemeralPublic(skE)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
		sig := ed25519.Sign(cred.Pair.sign, sigMessage(*cred.Server, hdr, enc, body))
		enc2, ct, err := hpkeSeal(skE, cred.Server.DH, []byte(hpkeInfo), hdr, append(body, sig...))
		if err != nil || !bytes.Equal(enc, enc2) {
			return nil, fmt.Errorf("%s: hpke: %v", op, err)
		}
		pkt := append(append(hdr, enc...), ct...)
		return append(pkt, pairMAC(mac, pkt)...), nil
	}
	return nil, fmt.Errorf("%s: credential needs either Shared, or Pair and Server", op)
}

func ephemeralPublic(skE []byte) ([]byte, error) {
	k, err := ecdh.X25519().NewPrivateKey(skE)
	if err != nil {
		return nil, err
	}
	return k.PublicKey().Bytes(), nil
}

func sigMessage(server PublicKey, hdr, enc, body []byte) []byte {
	m := make([]byte, 0, len(prefixSig)+64+len(hdr)+len(enc)+len(body))
	m = append(m, prefixSig...)
	m = append(m, server.bytes()...)
	m = append(m, hdr...)
	m = append(m, enc...)
	return append(m, body...)
}

func pairMAC(key, data []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(data)
	return m.Sum(nil)[:macLen]
}

// Open authenticates, decrypts and parses a packet. Checks run in this
// order, cheapest first: length, header, key lookup, MAC (constant time),
// decryption, signature (kind 2), body, identity, age (|now - timestamp| <
// maxAge, strictly; maxAge <= 0 means DefaultMaxAge). The caller then checks
// ReplayKey against its replay cache. Garbage never reaches a public-key
// operation: kind 2 packets must pass a MAC keyed per client first.
func Open(pkt []byte, keys Keyring, now time.Time, maxAge time.Duration) (*Request, error) {
	const op = "spa: open"
	if len(pkt) < MinPacketLen {
		return nil, fmt.Errorf("%s: %w: %d bytes", op, ErrTooShort, len(pkt))
	}
	if len(pkt) > MaxPacketLen {
		return nil, fmt.Errorf("%s: %w: %d bytes", op, ErrTooLong, len(pkt))
	}
	if string(pkt[:4]) != Magic {
		return nil, fmt.Errorf("%s: %w: bad magic", op, ErrMalformed)
	}
	kind := Kind(pkt[4])
	var bodyLen int
	switch kind {
	case KindShared:
		bodyLen = len(pkt) - sharedOverhead
	case KindPair:
		bodyLen = len(pkt) - pairOverhead
	default:
		return nil, fmt.Errorf("%s: %w: unknown kind %d", op, ErrMalformed, pkt[4])
	}
	if bodyLen < minBody || bodyLen > maxBody || bodyLen%bodyPad != 0 {
		return nil, fmt.Errorf("%s: %w: bad length %d for kind %v", op, ErrMalformed, len(pkt), kind)
	}
	hint := KeyHint(pkt[5:HeaderLen])
	c := keys.Lookup(hint)
	if c == nil || c.kind != kind {
		return nil, errUnknownClient
	}
	hdr := pkt[:HeaderLen]
	var body []byte
	switch kind {
	case KindShared:
		n := pkt[HeaderLen : HeaderLen+sharedNonce]
		var err error
		body, err = c.aead.Open(nil, n, pkt[HeaderLen+sharedNonce:], hdr)
		if err != nil {
			return nil, c.errBadMAC
		}
	case KindPair:
		data, tag := pkt[:len(pkt)-macLen], pkt[len(pkt)-macLen:]
		if !hmac.Equal(pairMAC(c.mac, data), tag) {
			return nil, c.errBadMAC
		}
		c.pkOps.Add(1)
		enc := data[HeaderLen : HeaderLen+encLen]
		rcp, err := hpke.NewRecipient(enc, c.hpkeKey, hpke.HKDFSHA256(), hpke.ChaCha20Poly1305(), []byte(hpkeInfo))
		if err != nil {
			return nil, fmt.Errorf("%s: client %q: %w", op, c.ID, ErrDecrypt)
		}
		pt, err := rcp.Open(hdr, data[HeaderLen+encLen:])
		if err != nil {
			return nil, fmt.Errorf("%s: client %q: %w", op, c.ID, ErrDecrypt)
		}
		body, sig := pt[:len(pt)-sigLen], pt[len(pt)-sigLen:]
		c.pkOps.Add(1)
		if !ed25519.Verify(c.sign, sigMessage(c.serverPub, hdr, enc, body), sig) {
			return nil, fmt.Errorf("%s: client %q: %w", op, c.ID, ErrBadSignature)
		}
		return finish(op, c, kind, hint, body, now, maxAge)
	}
	return finish(op, c, kind, hint, body, now, maxAge)
}

// errUnknownClient is Open's error for a key hint no client has, built once (floods of random
// hints are the cheapest attack on the SPA port).
var errUnknownClient = fmt.Errorf("spa: open: %w", ErrUnknownClient)

func finish(op string, c *Client, kind Kind, hint KeyHint, body []byte, now time.Time, maxAge time.Duration) (*Request, error) {
	r, err := parseBody(body)
	if err != nil {
		return nil, fmt.Errorf("%s: client %q: %w: %v", op, c.ID, ErrMalformed, err)
	}
	if r.Client != c.ID {
		return nil, fmt.Errorf("%s: client %q: %w: packet names another identity", op, c.ID, ErrUnknownClient)
	}
	r.Kind, r.hint = kind, hint
	if maxAge <= 0 {
		maxAge = DefaultMaxAge
	}
	// Strictly inside the window: a packet exactly maxAge old is stale, so it is never accepted
	// at the moment its replay entry could expire.
	switch d := now.Sub(r.Timestamp); {
	case d >= maxAge:
		return nil, fmt.Errorf("%s: client %q: %w: %v old", op, c.ID, ErrStale, d.Round(time.Millisecond))
	case d <= -maxAge:
		return nil, fmt.Errorf("%s: client %q: %w: %v ahead", op, c.ID, ErrFuture, (-d).Round(time.Millisecond))
	}
	return r, nil
}
