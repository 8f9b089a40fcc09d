package spa

import (
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/hpke"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"

	"golang.org/x/crypto/chacha20poly1305"
)

// Text forms of key files: a label, one space, standard base64 with padding.
const (
	sharedLabel = "sesame-shared-v1"
	privLabel   = "sesame-priv-v1"
	pubLabel    = "sesame-pub-v1"
)

// Key derivation labels (HKDF-SHA256 info strings), see PROTOCOL.md §4.
const (
	infoSharedHint = "sesame-v1 shared hint"
	infoSharedAEAD = "sesame-v1 shared aead"
	infoEd25519    = "sesame-v1 ed25519"
	infoX25519     = "sesame-v1 x25519"
	infoPairMAC    = "sesame-v1 pair mac"
	prefixPairHint = "sesame-v1 pair hint"
	prefixSig      = "sesame-v1 sig"
	hpkeInfo       = "sesame-v1 spa"
)

// ErrKeyFormat is returned by the key parsers.
var ErrKeyFormat = errors.New("bad key format")

// KeyHint is the 16-byte client lookup tag carried in every packet header.
type KeyHint [16]byte

func derive(secret []byte, info string, n int) []byte {
	prk, err := hkdf.Extract(sha256.New, secret, nil)
	if err != nil {
		panic(err) // cannot happen for SHA-256
	}
	out, err := hkdf.Expand(sha256.New, prk, info, n)
	if err != nil {
		panic(err)
	}
	return out
}

func readRand(rand io.Reader, n int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(rand, b); err != nil {
		return nil, fmt.Errorf("read random: %w", err)
	}
	return b, nil
}

func marshalKey(label string, b []byte) []byte {
	return []byte(label + " " + base64.StdEncoding.EncodeToString(b))
}

func parseKey(label, s string, n int) ([]byte, error) {
	f := strings.Fields(s)
	if len(f) != 2 || f[0] != label {
		return nil, fmt.Errorf("%w: want %q followed by base64", ErrKeyFormat, label)
	}
	b, err := base64.StdEncoding.DecodeString(f[1])
	if err != nil || len(b) != n {
		return nil, fmt.Errorf("%w: %s key must be %d bytes of base64", ErrKeyFormat, label, n)
	}
	return b, nil
}

// SharedKey is a 32-byte secret shared by one client and the server (kind 1).
// Its String, GoString and LogValue methods never reveal it.
type SharedKey [32]byte

// GenerateSharedKey reads a new shared key from rand.
func GenerateSharedKey(rand io.Reader) (SharedKey, error) {
	var k SharedKey
	if _, err := io.ReadFull(rand, k[:]); err != nil {
		return k, fmt.Errorf("spa: generate shared key: %w", err)
	}
	return k, nil
}

// MarshalText returns "sesame-shared-v1 <base64>". This is the only method
// that reveals the key; write its output only to a private key file.
func (k SharedKey) MarshalText() ([]byte, error) { return marshalKey(sharedLabel, k[:]), nil }

// UnmarshalText parses the MarshalText form.
func (k *SharedKey) UnmarshalText(b []byte) error {
	v, err := ParseSharedKey(string(b))
	*k = v
	return err
}

// ParseSharedKey parses "sesame-shared-v1 <base64>"; surrounding white space is ignored.
func ParseSharedKey(s string) (SharedKey, error) {
	var k SharedKey
	b, err := parseKey(sharedLabel, s, len(k))
	if err != nil {
		return k, fmt.Errorf("spa: parse shared key: %w", err)
	}
	copy(k[:], b)
	return k, nil
}

func (k SharedKey) String() string       { return sharedLabel + " <redacted>" }
func (k SharedKey) GoString() string     { return "spa.SharedKey{<redacted>}" }
func (k SharedKey) LogValue() slog.Value { return slog.StringValue(k.String()) }

// Hint returns the packet key hint of a shared key.
func (k SharedKey) Hint() KeyHint {
	var h KeyHint
	copy(h[:], derive(k[:], infoSharedHint, len(h)))
	return h
}

func (k SharedKey) aead() cipher.AEAD {
	a, err := chacha20poly1305.NewX(derive(k[:], infoSharedAEAD, chacha20poly1305.KeySize))
	if err != nil {
		panic(err) // key size is fixed
	}
	return a
}

// PublicKey is the public half of a KeyPair: an Ed25519 verification key and
// an X25519 key, 64 bytes in all.
type PublicKey struct {
	Sign [32]byte // Ed25519
	DH   [32]byte // X25519
}

func (p PublicKey) bytes() []byte { return append(p.Sign[:], p.DH[:]...) }

// MarshalText returns "sesame-pub-v1 <base64 of Sign||DH>".
func (p PublicKey) MarshalText() ([]byte, error) { return marshalKey(pubLabel, p.bytes()), nil }

// UnmarshalText parses the MarshalText form.
func (p *PublicKey) UnmarshalText(b []byte) error {
	v, err := ParsePublicKey(string(b))
	*p = v
	return err
}

// String returns the MarshalText form (public keys are not secret).
func (p PublicKey) String() string { b, _ := p.MarshalText(); return string(b) }

// ParsePublicKey parses "sesame-pub-v1 <base64>".
func ParsePublicKey(s string) (PublicKey, error) {
	var p PublicKey
	b, err := parseKey(pubLabel, s, 64)
	if err != nil {
		return p, fmt.Errorf("spa: parse public key: %w", err)
	}
	copy(p.Sign[:], b[:32])
	copy(p.DH[:], b[32:])
	if _, err := ecdh.X25519().NewPublicKey(p.DH[:]); err != nil {
		return p, fmt.Errorf("spa: parse public key: %w", ErrKeyFormat)
	}
	return p, nil
}

// KeyPair is a client's or the server's key pair (kind 2). Both halves are
// derived from one 32-byte seed. Its String, GoString and LogValue methods
// never reveal the seed.
type KeyPair struct {
	seed [32]byte
	sign ed25519.PrivateKey
	dh   *ecdh.PrivateKey
	pub  PublicKey
}

// GeneratePair reads a 32-byte seed from rand and derives a key pair.
func GeneratePair(rand io.Reader) (*KeyPair, error) {
	var seed [32]byte
	if _, err := io.ReadFull(rand, seed[:]); err != nil {
		return nil, fmt.Errorf("spa: generate key pair: %w", err)
	}
	return NewKeyPair(seed)
}

// NewKeyPair derives a key pair from a seed:
// Ed25519 seed = HKDF-SHA256(seed, "sesame-v1 ed25519"),
// X25519 scalar = HKDF-SHA256(seed, "sesame-v1 x25519").
func NewKeyPair(seed [32]byte) (*KeyPair, error) {
	k := &KeyPair{seed: seed}
	k.sign = ed25519.NewKeyFromSeed(derive(seed[:], infoEd25519, ed25519.SeedSize))
	dh, err := ecdh.X25519().NewPrivateKey(derive(seed[:], infoX25519, 32))
	if err != nil {
		return nil, fmt.Errorf("spa: derive key pair: %w", err)
	}
	k.dh = dh
	copy(k.pub.Sign[:], k.sign.Public().(ed25519.PublicKey))
	copy(k.pub.DH[:], dh.PublicKey().Bytes())
	return k, nil
}

// Public returns the public key.
func (k *KeyPair) Public() PublicKey { return k.pub }

// MarshalText returns "sesame-priv-v1 <base64 seed>". Write it only to a
// private key file.
func (k *KeyPair) MarshalText() ([]byte, error) { return marshalKey(privLabel, k.seed[:]), nil }

// ParseKeyPair parses "sesame-priv-v1 <base64 seed>".
func ParseKeyPair(s string) (*KeyPair, error) {
	b, err := parseKey(privLabel, s, 32)
	if err != nil {
		return nil, fmt.Errorf("spa: parse private key: %w", err)
	}
	return NewKeyPair([32]byte(b))
}

func (k *KeyPair) String() string       { return privLabel + " <redacted> (" + k.pub.String() + ")" }
func (k *KeyPair) GoString() string     { return "spa.KeyPair{<redacted>}" }
func (k *KeyPair) LogValue() slog.Value { return slog.StringValue(k.String()) }

func pairHint(server, client PublicKey) KeyHint {
	h := sha256.New()
	h.Write([]byte(prefixPairHint))
	h.Write(server.bytes())
	h.Write(client.bytes())
	var out KeyHint
	copy(out[:], h.Sum(nil))
	return out
}

// pairMACKey derives the per-client outer MAC key from the static X25519 DH
// between the client and the server.
func pairMACKey(local *ecdh.PrivateKey, remote [32]byte, server, client PublicKey) ([]byte, error) {
	pub, err := ecdh.X25519().NewPublicKey(remote[:])
	if err != nil {
		return nil, err
	}
	z, err := local.ECDH(pub)
	if err != nil {
		return nil, err
	}
	info := prefixPairMACInfo(server, client)
	return derive(z, info, 32), nil
}

func prefixPairMACInfo(server, client PublicKey) string {
	return infoPairMAC + string(server.bytes()) + string(client.bytes())
}

// ClientCredential is what a client needs to Seal: its identity and either
// a shared key (kind 1) or its key pair plus the server's public key (kind 2).
type ClientCredential struct {
	ID     string
	Shared *SharedKey
	Pair   *KeyPair
	Server *PublicKey
}

// Client is the server's record of one client, built once at configuration
// time with NewSharedClient or NewPairClient (all per-client derivations,
// including the static DH, happen there). Use it by pointer.
type Client struct {
	ID   string
	kind Kind
	hint KeyHint

	aead cipher.AEAD // kind 1

	sign      ed25519.PublicKey // kind 2
	mac       []byte
	serverPub PublicKey
	hpkeKey   hpke.PrivateKey

	pkOps atomic.Uint64 // public-key operations performed for this client (tests)

	// errBadMAC is Open's error for this client's packets that fail authentication, built once:
	// a flood of wrong-key packets under a real client's hint costs no allocation to describe.
	errBadMAC error
}

func newClient(c *Client) *Client {
	c.errBadMAC = fmt.Errorf("spa: open: client %q: %w", c.ID, ErrBadMAC)
	return c
}

// String names the client without revealing its derived keys.
func (c *Client) String() string { return fmt.Sprintf("%s (%v, hint %x)", c.ID, c.kind, c.hint[:]) }

// GoString is String, so %#v does not reveal derived keys either.
func (c *Client) GoString() string { return c.String() }

// Kind returns the credential kind.
func (c *Client) Kind() Kind { return c.kind }

// Hint returns the key hint under which the client's packets arrive.
func (c *Client) Hint() KeyHint { return c.hint }

// NewSharedClient returns the server record for a shared-key client.
func NewSharedClient(id string, key SharedKey) (*Client, error) {
	if err := checkID(id); err != nil {
		return nil, fmt.Errorf("spa: client %q: %w", id, err)
	}
	return newClient(&Client{ID: id, kind: KindShared, hint: key.Hint(), aead: key.aead()}), nil
}

// NewPairClient returns the server record for a key-pair client. The server
// stores only the client's public key; server is the server's own key pair.
func NewPairClient(id string, client PublicKey, server *KeyPair) (*Client, error) {
	if err := checkID(id); err != nil {
		return nil, fmt.Errorf("spa: client %q: %w", id, err)
	}
	mac, err := pairMACKey(server.dh, client.DH, server.pub, client)
	if err != nil {
		return nil, fmt.Errorf("spa: client %q: bad X25519 public key: %w", id, err)
	}
	priv, err := hpke.NewDHKEMPrivateKey(server.dh)
	if err != nil {
		return nil, fmt.Errorf("spa: client %q: %w", id, err)
	}
	return newClient(&Client{
		ID: id, kind: KindPair, hint: pairHint(server.pub, client),
		sign: ed25519.PublicKey(client.Sign[:]), mac: mac, serverPub: server.pub, hpkeKey: priv,
	}), nil
}

// Keyring finds the client a packet claims to come from by its key hint.
// Lookup returns nil when there is none.
type Keyring interface {
	Lookup(hint KeyHint) *Client
}

// Clients is a map-backed Keyring.
type Clients map[KeyHint]*Client

// Lookup implements Keyring.
func (c Clients) Lookup(h KeyHint) *Client { return c[h] }

// NewKeyring indexes clients by hint. Two clients with the same hint (the same
// key) or the same ID are an error.
func NewKeyring(clients ...*Client) (Clients, error) {
	m := make(Clients, len(clients))
	ids := map[string]bool{}
	for _, c := range clients {
		if _, dup := m[c.hint]; dup {
			return nil, fmt.Errorf("spa: client %q: key already used by another client", c.ID)
		}
		if ids[c.ID] {
			return nil, fmt.Errorf("spa: client %q: duplicate client id", c.ID)
		}
		m[c.hint], ids[c.ID] = c, true
	}
	return m, nil
}
