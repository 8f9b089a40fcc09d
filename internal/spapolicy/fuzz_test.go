package spapolicy

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/capture"
	"github.com/sesame-knock/sesame/internal/fwknop"
	"github.com/sesame-knock/sesame/internal/netport"
	"github.com/sesame-knock/sesame/internal/spa"
)

// fuzzCreds are fixed keys, so that corpus files can hold valid packets.
func fuzzCreds(t testing.TB) *creds {
	t.Helper()
	rng := rand.NewChaCha8([32]byte{'f', 'u', 'z', 'z'})
	c := &creds{}
	var err error
	if c.alice, err = spa.GenerateSharedKey(rng); err != nil {
		t.Fatal(err)
	}
	if c.stranger, err = spa.GenerateSharedKey(rng); err != nil {
		t.Fatal(err)
	}
	if c.bob, err = spa.GeneratePair(rng); err != nil {
		t.Fatal(err)
	}
	if c.server, err = spa.GeneratePair(rng); err != nil {
		t.Fatal(err)
	}
	c.serverPub = c.server.Public()
	return c
}

// fuzzSeeds are valid packets of each format at t0.
func fuzzSeeds(t testing.TB, c *creds) [][]byte {
	tt, ok := t.(*testing.T)
	if !ok {
		tt = &testing.T{}
	}
	rng := rand.NewChaCha8([32]byte{'s', 'e', 'e', 'd'})
	return [][]byte{
		native(shared, spa.Request{Ports: []netport.Port{ssh}}, 0)(tt, c, t0, rng),
		native(pair, spa.Request{Ports: []netport.Port{dns}}, 0)(tt, c, t0, rng),
		native(pair, spa.Request{Ports: []netport.Port{dns}, Addr: netip.MustParseAddr("198.18.9.9")}, 0)(tt, c, t0, rng),
		fw(fwKeys, fwknop.Message{Type: fwknop.TypeAccess, Ports: []netport.Port{ssh}}, 0)(tt, c, t0, rng),
		fw(fwknop.Keys{Key: []byte("expired key")}, fwknop.Message{Type: fwknop.TypeAccess, Ports: []netport.Port{ssh}}, 0)(tt, c, t0, rng),
	}
}

// FuzzHandle feeds the SPA handler any source address (4 or 16 bytes; anything else is the zero
// Addr) and payload. Whatever it gets, it must not panic, must grant nothing to a source no real
// sender has (IPv4-mapped, multicast, broadcast, unspecified), and every grant must be for a
// unicast address, never IPv4-mapped, within the client's sources. The replay store accepts
// every key, so a valid packet is judged on its source every time.
func FuzzHandle(f *testing.F) {
	c := fuzzCreds(f)
	odd := []string{"198.18.0.2", "::ffff:198.18.0.2", "::ffff:127.0.0.1", "127.0.0.1", "::1", "224.0.0.1",
		"255.255.255.255", "0.0.0.0", "::", "ff02::1", "fd5e:5a3e::2", "fe80::1", "203.0.113.9"}
	for _, p := range fuzzSeeds(f, c) {
		for _, s := range odd {
			f.Add(netip.MustParseAddr(s).AsSlice(), p)
		}
	}
	f.Add([]byte{1, 2, 3}, []byte("SSM1\x01"))
	h, err := New(testConfig(c), nopStore{}, nil, func() time.Time { return t0 })
	if err != nil {
		f.Fatal(err)
	}
	cfg := testConfig(c)
	f.Fuzz(func(t *testing.T, srcBytes, payload []byte) {
		src, _ := netip.AddrFromSlice(srcBytes)
		grants, _ := h.Handle(context.Background(), src, payload, nil)
		if len(grants) > 0 && capture.SourceProblem(src) != "" {
			t.Fatalf("source %v (%s) granted %v", src, capture.SourceProblem(src), grants)
		}
		for _, g := range grants {
			if why := capture.SourceProblem(g.Src); why != "" || g.Src.IsLoopback() {
				t.Fatalf("grant for %v (%s) from %v", g.Src, why, src)
			}
			inSome := false
			for _, cl := range cfg.Clients {
				inSome = inSome || sourceAllowed(g.Src, cl.Sources)
			}
			if !inSome {
				t.Fatalf("grant for %v, outside every client's sources", g.Src)
			}
		}
	})
}
