package server

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/config"
)

// TestScanBans: distinct guard ports past the threshold ban a source in the firewall, for the
// escalating times; never_ban holds; a valid SPA packet from a banned source is accepted and
// lifts the ban; Revoke with Ban lifts one; Status lists the bans.
func TestScanBans(t *testing.T) {
	cfg := withSPA(doorConfig(), spaSection(62201, true))
	cfg.Scan = &config.Scan{Window: 10 * time.Second, Threshold: 4, BanFor: []time.Duration{time.Minute, time.Hour}, Forget: 24 * time.Hour}
	never := netip.MustParseAddr("198.18.9.9")
	cfg.Server.NeverBan = []netip.Prefix{netip.PrefixFrom(never, 32)}
	b := newBed(t, cfg)
	ctx := context.Background()
	scanner := netip.MustParseAddr("198.18.0.77")
	other := netip.MustParseAddr("198.18.0.78")

	b.knock(scanner, tcp(6998), tcp(6999), tcp(7001), tcp(7002))
	if !b.fw.Banned(scanner) {
		t.Fatalf("scanner not banned; log:\n%s", strings.Join(b.logs.all(), "\n"))
	}
	bans, _ := b.fw.ListBans(ctx)
	if len(bans) != 1 || bans[0].Remaining != time.Minute {
		t.Fatalf("bans %+v, want one of 1m", bans)
	}
	b.knock(never, tcp(6998), tcp(6999), tcp(7001), tcp(7002))
	if b.fw.Banned(never) {
		t.Fatal("never_ban source banned")
	}
	b.knock(other, sequence...)
	if !b.fw.Has(other, tcp(22)) || b.fw.Banned(other) {
		t.Fatal("a correct knock from another source did not open, or banned it")
	}
	st, err := b.srv.Status(ctx)
	if err != nil || len(st.Bans) != 1 || st.Bans[0].Src != scanner || !strings.HasPrefix(st.Bans[0].Reason, "scan: 4 ports") {
		t.Fatalf("status bans %+v, %v", st.Bans, err)
	}

	// A valid SPA packet from the banned source opens and lifts the ban.
	b.sendSPA(scanner, 62201, true, b.alicePacket())
	if !b.fw.Has(scanner, tcp(443)) || b.fw.Banned(scanner) {
		t.Fatalf("valid SPA from a banned source: granted %v, banned %v", b.fw.Has(scanner, tcp(443)), b.fw.Banned(scanner))
	}

	// The SPA forgave the offence: the next scan is a first one again; without a lift the
	// one after gets the next time.
	b.clock.Advance(time.Second)
	b.knock(scanner, tcp(24), tcp(25), tcp(21), tcp(6998))
	if bans, _ := b.fw.ListBans(ctx); len(bans) != 1 || bans[0].Remaining != time.Minute {
		t.Fatalf("bans after the second scan %+v, want 1m", bans)
	}
	b.clock.Advance(time.Minute + time.Second)
	b.knock(scanner, tcp(6998), tcp(6999), tcp(7001), tcp(7002))
	if bans, _ := b.fw.ListBans(ctx); len(bans) != 1 || bans[0].Remaining != time.Hour {
		t.Fatalf("bans after a repeat %+v, want 1h", bans)
	}
	res, err := b.srv.Revoke(ctx, RevokeRequest{Src: scanner, Ban: true})
	if err != nil || res.Bans != 1 || b.fw.Banned(scanner) {
		t.Fatalf("revoke ban: %+v, %v, banned %v", res, err, b.fw.Banned(scanner))
	}
	if res, err := b.srv.Revoke(ctx, RevokeRequest{Src: scanner, Ban: true}); err != nil || res.Bans != 0 {
		t.Fatalf("second revoke ban: %+v, %v", res, err)
	}
	if _, err := b.srv.Revoke(ctx, RevokeRequest{Src: scanner, Ban: true, All: true}); err == nil {
		t.Fatal("ban with all accepted")
	}
}
