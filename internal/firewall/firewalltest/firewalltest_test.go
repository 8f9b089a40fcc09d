package firewalltest

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/netport"
)

var _ firewall.Backend = (*Backend)(nil)

func TestBackend(t *testing.T) {
	ctx := context.Background()
	clock := NewClock(time.Unix(1e9, 0))
	b := New(clock.Now)
	src := netip.MustParseAddr("198.18.0.2")
	ssh := netport.Port{Proto: netport.TCP, Num: 22}
	dns := netport.Port{Proto: netport.UDP, Num: 53}
	if err := b.Apply(ctx, firewall.Gate{Protected: []netport.Port{ssh, dns}}); err != nil {
		t.Fatal(err)
	}
	if err := b.Grant(ctx, firewall.Grant{Src: src, Port: ssh, Timeout: 10 * time.Second}, firewall.Grant{Src: src, Port: dns, Timeout: 30 * time.Second}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(4 * time.Second)
	live, _ := b.List(ctx)
	if len(live) != 2 || live[0].Port != ssh || live[0].Remaining != 6*time.Second || live[1].Remaining != 26*time.Second {
		t.Fatalf("live %+v", live)
	}
	clock.Advance(6 * time.Second)
	if b.Has(src, ssh) || !b.Has(src, dns) {
		t.Fatalf("after 10s: ssh %v dns %v, want expired and live", b.Has(src, ssh), b.Has(src, dns))
	}
	boom := errors.New("boom")
	b.Fail(OpGrant, boom)
	if err := b.Grant(ctx, firewall.Grant{Src: src, Port: ssh, Timeout: time.Second}); !errors.Is(err, boom) || b.Has(src, ssh) {
		t.Fatalf("injected error: %v", err)
	}
	b.Fail(OpGrant, nil)
	if err := b.Grant(ctx, firewall.Grant{Src: src, Port: ssh}); err == nil {
		t.Fatal("a grant without a timeout was accepted")
	}
	if err := b.Revoke(ctx, firewall.Grant{Src: src, Port: dns}); err != nil || len(b.Live()) != 0 {
		t.Fatalf("revoke: %v, live %v", err, b.Live())
	}
	if err := b.Close(ctx, false); err != nil {
		t.Fatal(err)
	}
	if err := b.Grant(ctx, firewall.Grant{Src: src, Port: ssh, Timeout: time.Second}); !errors.Is(err, ErrClosed) {
		t.Fatalf("grant after close: %v", err)
	}
}

func TestBans(t *testing.T) {
	clk := NewClock(time.Unix(1000, 0))
	b := New(clk.Now)
	ctx := context.Background()
	a := netip.MustParseAddr("198.18.0.2")
	if err := b.Ban(ctx, a, 0); err == nil {
		t.Fatal("Ban with 0 duration: no error")
	}
	if err := b.Ban(ctx, a, time.Minute); err != nil {
		t.Fatal(err)
	}
	if !b.Banned(a) || !b.Banned(netip.MustParseAddr("::ffff:198.18.0.2")) {
		t.Fatal("not banned")
	}
	clk.Advance(30 * time.Second)
	l, _ := b.ListBans(ctx)
	if len(l) != 1 || l[0].Remaining != 30*time.Second {
		t.Fatalf("ListBans = %v", l)
	}
	if err := b.Unban(ctx, a); err != nil || b.Banned(a) {
		t.Fatalf("Unban: %v, banned %v", err, b.Banned(a))
	}
	b.Ban(ctx, a, time.Second)
	clk.Advance(time.Second)
	if l, _ := b.ListBans(ctx); len(l) != 0 || b.Banned(a) {
		t.Fatalf("expired ban still listed: %v", l)
	}
}
