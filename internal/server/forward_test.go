package server

import (
	"context"
	crand "crypto/rand"
	"net/netip"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/config"
	"github.com/sesame-knock/sesame/internal/netport"
	"github.com/sesame-knock/sesame/internal/spa"
)

// TestForwardStatusAndRevoke: a forward an SPA packet earned is in Status (with its
// destination and the client that made it) and in Grants, and Revoke removes it from the
// backend (by source, and with all), counting it.
func TestForwardStatusAndRevoke(t *testing.T) {
	to := netip.MustParseAddrPort("198.19.0.2:22")
	s := spaSection(62201, false)
	s.Clients[0].Forward = []config.Forward{{Port: tcp(8022), To: to}}
	b := newBed(t, withSPA(doorConfig(), s))
	ctx := context.Background()
	send := func() {
		t.Helper()
		pkt, err := spa.Seal(spa.Request{Ports: []netport.Port{tcp(8022)}}, spa.ClientCredential{ID: "alice", Shared: &aliceK}, b.clock.Now(), crand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		b.sendSPA(srcA, 62201, false, pkt)
		if !waitUntil(5*time.Second, func() bool { f, _ := b.fw.ListForwards(ctx); return len(f) == 1 }) {
			t.Fatalf("no forward after the SPA packet; logs: %q", b.logs.all())
		}
	}
	send()
	if d := b.fw.Destinations(); len(d) != 1 || d[0].Addr != to.Addr() {
		t.Errorf("destinations %+v", d)
	}
	st, err := b.srv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var fwd *GrantStatus
	for i, g := range st.Grants {
		if g.To != "" {
			fwd = &st.Grants[i]
		}
	}
	if fwd == nil || fwd.Src != srcA || fwd.Port != tcp(8022) || fwd.To != "198.19.0.2:22" || fwd.Kind != GrantSPA || fwd.By != "alice" || fwd.Remaining <= 0 {
		t.Fatalf("status grants %+v, want alice's forward tcp/8022 -> 198.19.0.2:22", st.Grants)
	}

	for _, tc := range []struct {
		name string
		req  RevokeRequest
	}{
		{"by source", RevokeRequest{Src: srcA}},
		{"by source and port", RevokeRequest{Src: srcA, Port: tcp(8022)}},
		{"all", RevokeRequest{All: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if f, _ := b.fw.ListForwards(ctx); len(f) == 0 {
				b.clock.Advance(time.Second) // a fresh packet time: not a replay
				send()
			}
			res, err := b.srv.Revoke(ctx, tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if f, _ := b.fw.ListForwards(ctx); len(f) != 0 || res.Grants != 1 {
				t.Fatalf("after revoke %+v: forwards %+v, result %+v; want none left, 1 counted", tc.req, f, res)
			}
			gs, err := b.srv.Grants(ctx)
			if err != nil || len(gs) != 0 {
				t.Fatalf("grants after revoke: %+v, %v", gs, err)
			}
		})
	}
	// Another source's revoke leaves the forward.
	b.clock.Advance(time.Second)
	send()
	if res, err := b.srv.Revoke(ctx, RevokeRequest{Src: srcB}); err != nil || res.Grants != 0 {
		t.Fatalf("revoke of another source: %+v, %v", res, err)
	}
	if f, _ := b.fw.ListForwards(ctx); len(f) != 1 {
		t.Fatalf("another source's revoke removed the forward: %+v", f)
	}
}
