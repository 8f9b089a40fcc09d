package server

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/config"
	"github.com/sesame-knock/sesame/internal/decoy"
	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/netport"
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
	// Three scan bans: one lifted by SPA, one expired, one revoked.
	bs := b.srv.Stats().Bans
	if bs.Added[BanReasonScan] != 3 || bs.Added[BanReasonDecoy] != 0 || bs.Lifted[LiftSPA] != 1 ||
		bs.Lifted[LiftExpired] != 1 || bs.Lifted[LiftRevoke] != 1 || bs.Active != 0 {
		t.Errorf("ban stats %+v", bs)
	}
}

// freeTCP returns a TCP port free on every address now.
func freeTCP(t *testing.T) uint16 {
	t.Helper()
	l, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

// visit completes a handshake with the decoy on port p of loopback, reports whether one answered.
func visit(t *testing.T, p uint16) bool {
	t.Helper()
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(p))), time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// TestReloadBans: a reload changes [[decoy]] (a new port listens and bans after a handshake, a
// removed one closes, the capture filter follows), [scan] (the new threshold applies) and keeps
// the live bans; a reload whose new decoy port cannot be bound changes nothing. SYN-only touches
// of a TCP decoy alert without banning, and the counters say so.
func TestReloadBans(t *testing.T) {
	pa, pb := freeTCP(t), freeTCP(t)
	cfg := doorConfig()
	cfg.Scan = &config.Scan{Window: 10 * time.Second, Threshold: 4, BanFor: []time.Duration{time.Minute}, Forget: time.Hour}
	cfg.Decoys = []config.Decoy{{Ports: []netport.Port{tcp(pa)}, BanFor: time.Minute, Alert: true}}
	b := newBed(t, cfg)
	ctx := context.Background()
	lo := netip.MustParseAddr("127.0.0.1")
	scanner := netip.MustParseAddr("198.18.0.77")
	b.knock(scanner, tcp(6998), tcp(6999), tcp(7001), tcp(7002))
	if !b.fw.Banned(scanner) {
		t.Fatal("scanner not banned")
	}
	if f := b.cap.Filter(); !slices.Equal(f.Decoys, []uint16{pa}) {
		t.Fatalf("filter decoys %v, want [%d]", f.Decoys, pa)
	}

	next := doorConfig()
	next.Scan = &config.Scan{Window: 10 * time.Second, Threshold: 6, BanFor: []time.Duration{time.Hour}, Forget: time.Hour}
	next.Decoys = []config.Decoy{{Ports: []netport.Port{tcp(pb)}, BanFor: time.Minute, Alert: true}}
	if err := b.srv.Reload(ctx, next); err != nil {
		t.Fatal(err)
	}
	if !b.fw.Banned(scanner) {
		t.Fatal("the reload lifted a live ban")
	}
	if visit(t, pa) {
		t.Error("the removed decoy port still answers")
	}
	if f := b.cap.Filter(); !slices.Equal(f.Decoys, []uint16{pb}) {
		t.Errorf("filter decoys %v after the reload, want [%d]", f.Decoys, pb)
	}
	// The new threshold: 4 ports no longer ban, 6 do, for the new time.
	other := netip.MustParseAddr("198.18.0.78")
	b.knock(other, tcp(6998), tcp(6999), tcp(7001), tcp(7002))
	if b.fw.Banned(other) {
		t.Fatal("4 ports banned after the threshold became 6")
	}
	b.knock(other, tcp(7003), tcp(7004))
	if bans, _ := b.fw.ListBans(ctx); !b.fw.Banned(other) || !slices.ContainsFunc(bans, func(l firewall.LiveBan) bool { return l.Src == other && l.Remaining == time.Hour }) {
		t.Fatalf("6 ports: bans %+v, want %s for 1h", bans, other)
	}
	// A SYN-only touch of the new decoy alerts after the grace and bans nobody.
	spoofed := netip.MustParseAddr("198.18.0.79")
	b.knock(spoofed, tcp(pb))
	b.clock.Advance(decoy.DefaultSYNGrace)
	if !waitFor(5*time.Second, func() bool { return logHas(b, "alert", "decoy_touch", spoofed.String()) }) {
		t.Fatalf("no SYN-only touch alert; log:\n%s", strings.Join(b.logs.all(), "\n"))
	}
	if b.fw.Banned(spoofed) {
		t.Fatal("a SYN-only touch banned")
	}
	// A SYN to the decoy is not scan evidence: with 5 guard ports it makes 6, and no ban.
	prober := netip.MustParseAddr("198.18.0.81")
	b.knock(prober, tcp(pb), tcp(6998), tcp(6999), tcp(7001), tcp(7002), tcp(7003))
	if b.fw.Banned(prober) {
		t.Fatal("a SYN to a decoy port counted as scan evidence")
	}
	// The new port bans after a handshake.
	if !visit(t, pb) {
		t.Fatal("the new decoy port does not answer")
	}
	if !waitFor(5*time.Second, func() bool { return b.fw.Banned(lo) }) {
		t.Fatal("a handshake with the new decoy port did not ban")
	}

	// A new decoy port that cannot be bound: the reload fails and changes nothing.
	busy, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	bad := doorConfig()
	bad.Decoys = []config.Decoy{{Ports: []netport.Port{tcp(uint16(busy.Addr().(*net.TCPAddr).Port))}, BanFor: time.Minute}}
	if err := b.srv.Reload(ctx, bad); err == nil {
		t.Fatal("a reload with a busy decoy port succeeded")
	}
	if !visit(t, pb) {
		t.Error("a failed reload closed the running decoy")
	}
	if f := b.cap.Filter(); !slices.Equal(f.Decoys, []uint16{pb}) {
		t.Errorf("filter decoys %v after a failed reload, want [%d]", f.Decoys, pb)
	}
	third := netip.MustParseAddr("198.18.0.80")
	b.knock(third, tcp(6998), tcp(6999), tcp(7001), tcp(7002), tcp(7003))
	if b.fw.Banned(third) {
		t.Error("a failed reload changed the scan threshold")
	}

	st := b.srv.Stats().Bans
	if st.Added[BanReasonScan] != 2 || st.Added[BanReasonDecoy] < 1 || st.Touches.SYN != 1 || st.Touches.Handshake < 1 {
		t.Errorf("ban stats %+v", st)
	}
}

func logHas(b *bed, subs ...string) bool {
	for _, l := range b.logs.all() {
		ok := true
		for _, s := range subs {
			ok = ok && strings.Contains(l, s)
		}
		if ok {
			return true
		}
	}
	return false
}

func waitFor(d time.Duration, f func() bool) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if f() {
			return true
		}
	}
	return f()
}
