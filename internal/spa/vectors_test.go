package spa

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/netport"
)

var update = flag.Bool("update", false, "rewrite testdata/spa/*.json")

const vectorDir = "../../testdata/spa"

// vectorFile is the JSON layout of testdata/spa/*.json (PROTOCOL.md §8).
type vectorFile struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	Kind        string `json:"kind"`

	SharedKey    string `json:"shared_key,omitempty"`
	ClientSeed   string `json:"client_seed,omitempty"`
	ServerSeed   string `json:"server_seed,omitempty"`
	ClientPublic string `json:"client_public,omitempty"`
	ServerPublic string `json:"server_public,omitempty"`
	ClientID     string `json:"client_id"`

	NowUnixMS int64         `json:"now_unix_ms"`
	Rand      string        `json:"rand"`
	Request   vectorRequest `json:"request"`

	KeyHint   string `json:"key_hint"`
	AEADKey   string `json:"aead_key,omitempty"`
	MACKey    string `json:"mac_key,omitempty"`
	Body      string `json:"body"`
	Packet    string `json:"packet"`
	ReplayKey string `json:"replay_key"`

	Negative []negativeVector `json:"negative"`
}

type vectorRequest struct {
	Addr      string   `json:"addr"` // "" = packet source
	Ports     []string `json:"ports"`
	DurationS int64    `json:"duration_s"`
}

type negativeVector struct {
	Name       string `json:"name"`
	Packet     string `json:"packet"`
	OpenUnixMS int64  `json:"open_at_unix_ms"`
	MaxAgeS    int64  `json:"max_age_s"`
	Error      string `json:"error"`
}

var errNames = map[string]error{
	"too_short": ErrTooShort, "too_long": ErrTooLong, "malformed": ErrMalformed, "unknown_client": ErrUnknownClient,
	"bad_mac": ErrBadMAC, "decrypt": ErrDecrypt, "bad_signature": ErrBadSignature, "stale": ErrStale, "future": ErrFuture,
}

func fill(seed string, n int) []byte {
	var out []byte
	for i := byte(0); len(out) < n; i++ {
		s := sha256.Sum256(append([]byte(seed), i))
		out = append(out, s[:]...)
	}
	return out[:n]
}

func hx(b []byte) string { return hex.EncodeToString(b) }

// vectorSpecs are the inputs of the published vectors. Keys and randomness
// are SHA-256 expansions of fixed strings so they can be regenerated.
var vectorSpecs = []struct {
	name, desc, kind, id string
	req                  vectorRequest
}{
	{"shared-basic", "kind 1, tcp/22 for the packet source, server-default duration", "shared", "alice", vectorRequest{Ports: []string{"tcp/22"}}},
	{"shared-multi", "kind 1, explicit IPv4, tcp/22 udp/53 tcp/443, 60 s", "shared", "alice@laptop", vectorRequest{Addr: "192.0.2.7", Ports: []string{"tcp/22", "udp/53", "tcp/443"}, DurationS: 60}},
	{"pair-basic", "kind 2, tcp/22 for the packet source", "pair", "bob", vectorRequest{Ports: []string{"tcp/22"}}},
	{"pair-ipv6", "kind 2, explicit IPv6, udp/51820 tcp/22, 3600 s", "pair", "bob", vectorRequest{Addr: "2001:db8::7", Ports: []string{"udp/51820", "tcp/22"}, DurationS: 3600}},
}

func buildVector(t *testing.T, name, desc, kind, id string, vr vectorRequest) (*vectorFile, Keyring) {
	t.Helper()
	v := &vectorFile{Name: name, Description: desc, Kind: kind, ClientID: id, NowUnixMS: 1795302428123, Request: vr}
	req := Request{Duration: time.Duration(vr.DurationS) * time.Second}
	if vr.Addr != "" {
		req.Addr = netip.MustParseAddr(vr.Addr)
	}
	for _, p := range vr.Ports {
		req.Ports = append(req.Ports, must(netport.Parse(p)))
	}
	var cred ClientCredential
	var c *Client
	var err error
	switch kind {
	case "shared":
		k := SharedKey(fill("sesame vector shared key", 32))
		v.SharedKey = hx(k[:])
		v.AEADKey = hx(derive(k[:], infoSharedAEAD, 32))
		v.Rand = hx(fill("sesame vector rand "+name, NonceLen+sharedNonce))
		cred = ClientCredential{ID: id, Shared: &k}
		c, err = NewSharedClient(id, k)
	case "pair":
		cs, ss := [32]byte(fill("sesame vector client seed", 32)), [32]byte(fill("sesame vector server seed", 32))
		client, server := must(NewKeyPair(cs)), must(NewKeyPair(ss))
		spub := server.Public()
		v.ClientSeed, v.ServerSeed = hx(cs[:]), hx(ss[:])
		v.ClientPublic, v.ServerPublic = hx(client.Public().bytes()), hx(spub.bytes())
		v.Rand = hx(fill("sesame vector rand "+name, NonceLen+32))
		cred = ClientCredential{ID: id, Pair: client, Server: &spub}
		c, err = NewPairClient(id, client.Public(), server)
		if err == nil {
			v.MACKey = hx(c.mac)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	now := time.UnixMilli(v.NowUnixMS)
	pkt, err := Seal(req, cred, now, bytes.NewReader(must(hex.DecodeString(v.Rand))))
	if err != nil {
		t.Fatal(err)
	}
	ring := must(NewKeyring(c))
	got, err := Open(pkt, ring, now, DefaultMaxAge)
	if err != nil {
		t.Fatal(err)
	}
	req.Client, req.Timestamp, req.Nonce = id, now, got.Nonce
	v.KeyHint = hx(c.hint[:])
	v.Body = hx(must(marshalBody(&req)))
	v.Packet = hx(pkt)
	v.ReplayKey = hx(got.ReplayKey())
	flip := func(i int) string { p := slices.Clone(pkt); p[i] ^= 0x80; return hx(p) }
	truncErr := "malformed"
	if len(pkt)-1 < MinPacketLen {
		truncErr = "too_short"
	}
	v.Negative = []negativeVector{
		{"stale", v.Packet, v.NowUnixMS + 120001, 120, "stale"},
		{"future", v.Packet, v.NowUnixMS - 120001, 120, "future"},
		{"truncated", v.Packet[:len(v.Packet)-2], v.NowUnixMS, 120, truncErr},
		{"hint flipped", flip(5), v.NowUnixMS, 120, "unknown_client"},
		{"last byte flipped", flip(len(pkt) - 1), v.NowUnixMS, 120, "bad_mac"},
	}
	return v, ring
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestVectors regenerates every vector from its inputs and compares it with
// testdata/spa/*.json byte for byte, then runs the negative cases. With
// -update it rewrites the files instead.
func TestVectors(t *testing.T) {
	for _, s := range vectorSpecs {
		t.Run(s.name, func(t *testing.T) {
			v, ring := buildVector(t, s.name, s.desc, s.kind, s.id, s.req)
			want, err := json.MarshalIndent(v, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, '\n')
			path := filepath.Join(vectorDir, s.name+".json")
			if *update {
				if err := os.WriteFile(path, want, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -run TestVectors -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%s differs from the regenerated vector", path)
			}
			for _, n := range v.Negative {
				_, err := Open(must(hex.DecodeString(n.Packet)), ring, time.UnixMilli(n.OpenUnixMS), time.Duration(n.MaxAgeS)*time.Second)
				if !errors.Is(err, errNames[n.Error]) {
					t.Errorf("%s: err = %v, want %s", n.Name, err, n.Error)
				}
			}
		})
	}
}
