package spa

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/hpke"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/netport"
)

var (
	t0    = time.UnixMilli(1795302428123)
	tcp22 = netport.Port{Proto: netport.TCP, Num: 22}
	udp53 = netport.Port{Proto: netport.UDP, Num: 53}
)

func seeded(seed byte) *rand.ChaCha8 { return rand.NewChaCha8([32]byte{seed}) }

// fixture holds one server and two clients (one per kind).
type fixture struct {
	server     *KeyPair
	pair       *KeyPair
	shared     SharedKey
	sharedCred ClientCredential
	pairCred   ClientCredential
	sharedC    *Client
	pairC      *Client
	ring       Clients
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{}
	var err error
	if f.server, err = GeneratePair(seeded(1)); err != nil {
		t.Fatal(err)
	}
	if f.pair, err = GeneratePair(seeded(2)); err != nil {
		t.Fatal(err)
	}
	if f.shared, err = GenerateSharedKey(seeded(3)); err != nil {
		t.Fatal(err)
	}
	spub := f.server.Public()
	f.sharedCred = ClientCredential{ID: "alice", Shared: &f.shared}
	f.pairCred = ClientCredential{ID: "bob", Pair: f.pair, Server: &spub}
	if f.sharedC, err = NewSharedClient("alice", f.shared); err != nil {
		t.Fatal(err)
	}
	if f.pairC, err = NewPairClient("bob", f.pair.Public(), f.server); err != nil {
		t.Fatal(err)
	}
	if f.ring, err = NewKeyring(f.sharedC, f.pairC); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) creds() map[string]ClientCredential {
	return map[string]ClientCredential{"shared": f.sharedCred, "pair": f.pairCred}
}

func TestRoundTrip(t *testing.T) {
	f := newFixture(t)
	reqs := []Request{
		{Ports: []netport.Port{tcp22}},
		{Ports: []netport.Port{tcp22, udp53}, Addr: netip.MustParseAddr("192.0.2.7"), Duration: time.Minute},
		{Ports: []netport.Port{udp53}, Addr: netip.MustParseAddr("2001:db8::1"), Duration: 3600 * time.Second},
		{Ports: slices.Repeat([]netport.Port{tcp22}, MaxPorts), Addr: netip.MustParseAddr("2001:db8::1")},
	}
	for kind, cred := range f.creds() {
		for i, req := range reqs {
			t.Run(fmt.Sprintf("%s/%d", kind, i), func(t *testing.T) {
				pkt, err := Seal(req, cred, t0, seeded(9))
				if err != nil {
					t.Fatal(err)
				}
				if len(pkt) < MinPacketLen || len(pkt) > MaxPacketLen {
					t.Fatalf("packet length %d out of bounds", len(pkt))
				}
				got, err := Open(pkt, f.ring, t0.Add(time.Second), 0)
				if err != nil {
					t.Fatal(err)
				}
				if got.Client != cred.ID || !got.Timestamp.Equal(t0) || got.Addr != req.Addr || got.Duration != req.Duration ||
					!slices.Equal(got.Ports, req.Ports) || got.FromSource() != !req.Addr.IsValid() || got.Kind.String() != kind {
					t.Fatalf("got %+v, want %+v", got, req)
				}
				if len(got.ReplayKey()) != 32 || !got.ReplayExpiry(DefaultMaxAge).Equal(t0.Add(DefaultMaxAge+ReplayMargin)) {
					t.Fatalf("replay key %x expiry %v", got.ReplayKey(), got.ReplayExpiry(DefaultMaxAge))
				}
			})
		}
	}
}

func TestSizes(t *testing.T) {
	f := newFixture(t)
	long := Request{Ports: slices.Repeat([]netport.Port{tcp22}, MaxPorts), Addr: netip.MustParseAddr("2001:db8::1")}
	longID := strings.Repeat("x", MaxIDLen)
	for kind, cred := range f.creds() {
		small, err := Seal(Request{Ports: []netport.Port{tcp22}}, cred, t0, seeded(1))
		if err != nil {
			t.Fatal(err)
		}
		cred.ID = longID
		big, err := Seal(long, cred, t0, seeded(1))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d bytes (one port) .. %d bytes (64-byte id, 16 ports, IPv6)", kind, len(small), len(big))
		if len(big) > MaxPacketLen || len(big) > 1200 {
			t.Errorf("%s: %d bytes", kind, len(big))
		}
	}
}

func TestOpenErrors(t *testing.T) {
	f := newFixture(t)
	otherServer, _ := GeneratePair(seeded(50))
	other := otherServer.Public()
	wrongShared := SharedKey{1}
	for kind, cred := range f.creds() {
		// A 96-byte body, so that dropping one 32-byte block still leaves a
		// valid length.
		big := Request{Ports: slices.Repeat([]netport.Port{udp53}, 10), Addr: netip.MustParseAddr("2001:db8::1")}
		pkt, err := Seal(big, cred, t0, seeded(7))
		if err != nil {
			t.Fatal(err)
		}
		flip := func(i int) []byte { p := slices.Clone(pkt); p[i] ^= 0x01; return p }
		n := len(pkt)
		tests := []struct {
			name string
			pkt  []byte
			now  time.Time
			want error
		}{
			{"ok", pkt, t0, nil},
			// The window is open: a packet exactly maxAge old (or ahead) is refused, so it cannot
			// pass at the instant its replay entry (ReplayExpiry) could be dropped.
			{"inside window old", pkt, t0.Add(DefaultMaxAge - time.Nanosecond), nil},
			{"inside window new", pkt, t0.Add(-DefaultMaxAge + time.Nanosecond), nil},
			{"edge of window old", pkt, t0.Add(DefaultMaxAge), ErrStale},
			{"edge of window new", pkt, t0.Add(-DefaultMaxAge), ErrFuture},
			{"stale", pkt, t0.Add(DefaultMaxAge + time.Millisecond), ErrStale},
			{"future", pkt, t0.Add(-DefaultMaxAge - time.Millisecond), ErrFuture},
			{"empty", nil, t0, ErrTooShort},
			{"truncated to min-1", pkt[:MinPacketLen-1], t0, ErrTooShort},
			{"truncated by one", pkt[:n-1], t0, ErrMalformed},
			{"truncated by a pad block", pkt[:n-bodyPad], t0, ErrBadMAC},
			{"oversized", append(slices.Clone(pkt), make([]byte, MaxPacketLen)...), t0, ErrTooLong},
			{"extended by a pad block", append(slices.Clone(pkt), make([]byte, bodyPad)...), t0, ErrBadMAC},
			{"magic", flip(0), t0, ErrMalformed},
			{"kind", flip(4), t0, ErrMalformed},
			{"hint", flip(5), t0, ErrUnknownClient},
			{"hint last", flip(HeaderLen - 1), t0, ErrUnknownClient},
			{"after header", flip(HeaderLen), t0, ErrBadMAC},
			{"middle", flip(n / 2), t0, ErrBadMAC},
			{"last byte", flip(n - 1), t0, ErrBadMAC},
		}
		for _, tc := range tests {
			t.Run(kind+"/"+tc.name, func(t *testing.T) {
				_, err := Open(tc.pkt, f.ring, tc.now, DefaultMaxAge)
				if !errors.Is(err, tc.want) {
					t.Fatalf("err = %v, want %v", err, tc.want)
				}
			})
		}
		// Every single-bit flip anywhere is rejected.
		for i := range pkt {
			for bit := range 8 {
				p := slices.Clone(pkt)
				p[i] ^= 1 << bit
				if _, err := Open(p, f.ring, t0, 0); err == nil {
					t.Fatalf("%s: flip byte %d bit %d accepted", kind, i, bit)
				}
			}
		}
		// The kind byte swapped to the other kind: lengths no longer fit or
		// the hint names a client of the other kind.
		p := slices.Clone(pkt)
		p[4] ^= 3
		if _, err := Open(p, f.ring, t0, 0); err == nil {
			t.Fatalf("%s: kind swap accepted", kind)
		}
	}
	t.Run("wrong shared key", func(t *testing.T) {
		pkt, _ := Seal(Request{Ports: []netport.Port{tcp22}}, ClientCredential{ID: "alice", Shared: &wrongShared}, t0, seeded(1))
		if _, err := Open(pkt, f.ring, t0, 0); !errors.Is(err, ErrUnknownClient) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("wrong server key", func(t *testing.T) {
		pkt, _ := Seal(Request{Ports: []netport.Port{tcp22}}, ClientCredential{ID: "bob", Pair: f.pair, Server: &other}, t0, seeded(1))
		if _, err := Open(pkt, f.ring, t0, 0); !errors.Is(err, ErrUnknownClient) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("unknown client", func(t *testing.T) {
		if _, err := Open(nil, Clients{}, t0, 0); !errors.Is(err, ErrTooShort) {
			t.Fatal(err)
		}
		pkt, _ := Seal(Request{Ports: []netport.Port{tcp22}}, f.sharedCred, t0, seeded(1))
		if _, err := Open(pkt, Clients{}, t0, 0); !errors.Is(err, ErrUnknownClient) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("identity mismatch", func(t *testing.T) {
		cred := f.sharedCred
		cred.ID = "mallory"
		pkt, _ := Seal(Request{Ports: []netport.Port{tcp22}}, cred, t0, seeded(1))
		if _, err := Open(pkt, f.ring, t0, 0); !errors.Is(err, ErrUnknownClient) {
			t.Fatalf("err = %v", err)
		}
	})
}

// TestPairForgery checks that the server's own secrets (its private key and
// the per-client MAC key, i.e. a stolen server configuration) cannot forge a
// client's packet: the outer MAC and HPKE pass, the signature does not.
func TestPairForgery(t *testing.T) {
	f := newFixture(t)
	body, err := marshalBody(&Request{Client: "bob", Timestamp: t0, Ports: []netport.Port{tcp22}})
	if err != nil {
		t.Fatal(err)
	}
	hdr := header(KindPair, f.pairC.hint)
	skE := make([]byte, 32)
	enc, _ := ephemeralPublic(skE)
	forger, _ := GeneratePair(seeded(66))
	sig := ed25519.Sign(forger.sign, sigMessage(f.server.Public(), hdr, enc, body))
	_, ct, err := hpkeSeal(skE, f.server.Public().DH, []byte(hpkeInfo), hdr, append(body, sig...))
	if err != nil {
		t.Fatal(err)
	}
	pkt := append(append(hdr, enc...), ct...)
	pkt = append(pkt, pairMAC(f.pairC.mac, pkt)...)
	if _, err := Open(pkt, f.ring, t0, 0); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("err = %v, want ErrBadSignature", err)
	}
	// Valid MAC, garbage ciphertext: ErrDecrypt.
	g := slices.Clone(pkt)
	g[HeaderLen+encLen+3] ^= 1
	g = append(g[:len(g)-macLen], pairMAC(f.pairC.mac, g[:len(g)-macLen])...)
	if _, err := Open(g, f.ring, t0, 0); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("err = %v, want ErrDecrypt", err)
	}
}

// TestGarbageNoPublicKeyOps proves that packets failing the MAC never reach
// X25519/Ed25519: the per-client counter of public-key operations stays 0.
func TestGarbageNoPublicKeyOps(t *testing.T) {
	f := newFixture(t)
	rng := seeded(11)
	good, _ := Seal(Request{Ports: []netport.Port{tcp22}}, f.pairCred, t0, seeded(1))
	for range 1000 {
		p := make([]byte, len(good))
		rng.Read(p)
		copy(p, good[:HeaderLen]) // right magic, kind and hint: worst case
		if _, err := Open(p, f.ring, t0, 0); !errors.Is(err, ErrBadMAC) {
			t.Fatalf("err = %v", err)
		}
	}
	if n := f.pairC.pkOps.Load(); n != 0 {
		t.Fatalf("%d public-key operations on garbage", n)
	}
	if _, err := Open(good, f.ring, t0, 0); err != nil {
		t.Fatal(err)
	}
	if n := f.pairC.pkOps.Load(); n != 2 {
		t.Fatalf("%d public-key operations for a good packet, want 2 (HPKE, Ed25519)", n)
	}
}

// TestHPKEInterop checks the hand-written RFC 9180 sender against crypto/hpke.
func TestHPKEInterop(t *testing.T) {
	f := newFixture(t)
	priv, err := hpke.NewDHKEMPrivateKey(f.server.dh)
	if err != nil {
		t.Fatal(err)
	}
	skE := make([]byte, 32)
	crand.Read(skE)
	enc, ct, err := hpkeSeal(skE, f.server.Public().DH, []byte("info"), []byte("aad"), []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := hpke.NewRecipient(enc, priv, hpke.HKDFSHA256(), hpke.ChaCha20Poly1305(), []byte("info"))
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := r.Open([]byte("aad"), ct); err != nil || string(pt) != "hello" {
		t.Fatalf("crypto/hpke cannot open our seal: %v", err)
	}
	// And the other way round: a packet sealed with crypto/hpke opens.
	spub := f.server.Public()
	pub, _ := hpke.DHKEM(ecdh.X25519()).NewPublicKey(spub.DH[:])
	enc2, s, err := hpke.NewSender(pub, hpke.HKDFSHA256(), hpke.ChaCha20Poly1305(), []byte(hpkeInfo))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := marshalBody(&Request{Client: "bob", Timestamp: t0, Ports: []netport.Port{tcp22}})
	hdr := header(KindPair, f.pairC.hint)
	sig := ed25519.Sign(f.pair.sign, sigMessage(f.server.Public(), hdr, enc2, body))
	ct2, err := s.Seal(hdr, append(body, sig...))
	if err != nil {
		t.Fatal(err)
	}
	pkt := append(append(hdr, enc2...), ct2...)
	pkt = append(pkt, pairMAC(f.pairC.mac, pkt)...)
	if _, err := Open(pkt, f.ring, t0, 0); err != nil {
		t.Fatalf("packet sealed by crypto/hpke: %v", err)
	}
}

func TestSealErrors(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name string
		req  Request
		cred ClientCredential
	}{
		{"no ports", Request{}, f.sharedCred},
		{"too many ports", Request{Ports: slices.Repeat([]netport.Port{tcp22}, MaxPorts+1)}, f.sharedCred},
		{"icmp", Request{Ports: []netport.Port{{Proto: netport.ICMP}}}, f.sharedCred},
		{"port 0", Request{Ports: []netport.Port{{Proto: netport.TCP}}}, f.sharedCred},
		{"fractional duration", Request{Ports: []netport.Port{tcp22}, Duration: 1500 * time.Millisecond}, f.sharedCred},
		{"empty id", Request{Ports: []netport.Port{tcp22}}, ClientCredential{Shared: &f.shared}},
		{"id with space", Request{Ports: []netport.Port{tcp22}}, ClientCredential{ID: "a b", Shared: &f.shared}},
		{"no credential", Request{Ports: []netport.Port{tcp22}}, ClientCredential{ID: "a"}},
		{"pair without server", Request{Ports: []netport.Port{tcp22}}, ClientCredential{ID: "a", Pair: f.pair}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Seal(tc.req, tc.cred, t0, seeded(1)); err == nil {
				t.Fatal("no error")
			}
		})
	}
}

func TestKeyText(t *testing.T) {
	f := newFixture(t)
	b, _ := f.shared.MarshalText()
	if k, err := ParseSharedKey(" " + string(b) + "\n"); err != nil || k != f.shared {
		t.Fatalf("shared: %v", err)
	}
	b, _ = f.server.MarshalText()
	if k, err := ParseKeyPair(string(b)); err != nil || k.Public() != f.server.Public() {
		t.Fatalf("pair: %v", err)
	}
	b, _ = f.server.Public().MarshalText()
	if p, err := ParsePublicKey(string(b)); err != nil || p != f.server.Public() {
		t.Fatalf("pub: %v", err)
	}
	for _, s := range []string{"", "sesame-shared-v1", "sesame-pub-v1 AAAA", "sesame-priv-v1 " + strings.Repeat("A", 44), "sesame-shared-v1 !!"} {
		if _, err := ParseSharedKey(s); !errors.Is(err, ErrKeyFormat) {
			t.Errorf("ParseSharedKey(%q) = %v", s, err)
		}
	}
	// Printing secrets never shows them.
	secret, _ := f.shared.MarshalText()
	seed, _ := f.server.MarshalText()
	for _, v := range []string{fmt.Sprint(f.shared), fmt.Sprintf("%x %#v %+v", f.shared, f.shared, f.shared), fmt.Sprint(f.server), fmt.Sprintf("%+v %#v", f.server, f.server)} {
		if strings.Contains(v, string(secret[17:])) || strings.Contains(v, string(seed[15:])) || !strings.Contains(v, "redacted") {
			t.Errorf("secret printed: %s", v)
		}
	}
}

func TestKeyring(t *testing.T) {
	f := newFixture(t)
	dup, _ := NewSharedClient("carol", f.shared)
	if _, err := NewKeyring(f.sharedC, dup); err == nil {
		t.Error("duplicate key accepted")
	}
	other, _ := NewSharedClient("alice", SharedKey{7})
	if _, err := NewKeyring(f.sharedC, other); err == nil {
		t.Error("duplicate id accepted")
	}
	if _, err := NewPairClient("x", PublicKey{}, f.server); err == nil {
		t.Error("all-zero X25519 public key accepted")
	}
}

func FuzzOpen(f *testing.F) {
	fx := newFixture(f)
	for _, cred := range fx.creds() {
		for _, r := range []Request{{Ports: []netport.Port{tcp22}}, {Ports: []netport.Port{tcp22, udp53}, Addr: netip.MustParseAddr("2001:db8::1"), Duration: time.Hour}} {
			pkt, err := Seal(r, cred, t0, seeded(1))
			if err != nil {
				f.Fatal(err)
			}
			f.Add(pkt)
		}
	}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		r, err := Open(pkt, fx.ring, t0, 0)
		if err == nil && (r == nil || len(r.Ports) == 0) {
			t.Fatal("accepted without a request")
		}
		// The body parser alone, without the cryptography in the way.
		if r, err := parseBody(pkt); err == nil {
			b, err := marshalBody(r)
			if err != nil || !bytes.Equal(b, pkt) {
				t.Fatalf("body does not round-trip: %v", err)
			}
		}
	})
}

func BenchmarkOpenGarbage(b *testing.B) {
	f := newFixture(b)
	good, _ := Seal(Request{Ports: []netport.Port{tcp22}}, f.pairCred, t0, seeded(1))
	p := slices.Clone(good)
	p[len(p)-1] ^= 1 // known client, bad MAC: the most expensive garbage
	b.Run("known-hint", func(b *testing.B) {
		for b.Loop() {
			if _, err := Open(p, f.ring, t0, 0); err == nil {
				b.Fatal("accepted")
			}
		}
	})
	r := make([]byte, len(good))
	seeded(3).Read(r)
	copy(r, Magic)
	r[4] = byte(KindPair)
	b.Run("random-hint", func(b *testing.B) {
		for b.Loop() {
			if _, err := Open(r, f.ring, t0, 0); err == nil {
				b.Fatal("accepted")
			}
		}
	})
}

func BenchmarkOpenShared(b *testing.B) {
	f := newFixture(b)
	pkt, _ := Seal(Request{Ports: []netport.Port{tcp22}}, f.sharedCred, t0, seeded(1))
	for b.Loop() {
		if _, err := Open(pkt, f.ring, t0, 0); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpenPair(b *testing.B) {
	f := newFixture(b)
	pkt, _ := Seal(Request{Ports: []netport.Port{tcp22}}, f.pairCred, t0, seeded(1))
	for b.Loop() {
		if _, err := Open(pkt, f.ring, t0, 0); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSealPair(b *testing.B) {
	f := newFixture(b)
	for b.Loop() {
		if _, err := Seal(Request{Ports: []netport.Port{tcp22}}, f.pairCred, t0, crand.Reader); err != nil {
			b.Fatal(err)
		}
	}
}

// TestBodyTimestampBound: PROTOCOL.md says the timestamp MUST be < 2^62 milliseconds; 2^62
// itself is refused.
func TestBodyTimestampBound(t *testing.T) {
	tests := []struct {
		ms uint64
		ok bool
	}{
		{0, true},
		{1<<62 - 1, true},
		{1 << 62, false},
		{1<<62 + 1, false},
		{1<<64 - 1, false},
	}
	for _, tc := range tests {
		b, err := marshalBody(&Request{Client: "alice", Ports: []netport.Port{tcp22}})
		if err != nil {
			t.Fatal(err)
		}
		binary.BigEndian.PutUint64(b, tc.ms)
		r, err := parseBody(b)
		if tc.ok != (err == nil) {
			t.Errorf("timestamp %d ms: err = %v, want ok %v", tc.ms, err, tc.ok)
			continue
		}
		if tc.ok && uint64(r.Timestamp.UnixMilli()) != tc.ms {
			t.Errorf("timestamp %d ms read as %d", tc.ms, r.Timestamp.UnixMilli())
		}
	}
}
