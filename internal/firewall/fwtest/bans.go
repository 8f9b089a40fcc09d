//go:build linux

package fwtest

import (
	"context"
	"net/netip"
	"testing"

	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/netnsbed"
	"github.com/sesame-knock/sesame/internal/netnsbed/netnstest"
	"github.com/sesame-knock/sesame/internal/netport"
)

// BanBackend is a backend that also keeps bans.
type BanBackend interface {
	firewall.Backend
	firewall.Banner
}

// NewBanFunc returns a ban-capable backend working in bed's server namespace; the caller of
// RunBans closes it.
type NewBanFunc func(t *testing.T, bed *netnsbed.Bed) BanBackend

// RunBans checks bans against real packets, IPv4 and IPv6 in parallel: a ban beats a live grant,
// Unban restores the grant, a ban expires in the kernel, Apply and a second backend keep it, and
// an unbanned address beside a banned one is unaffected.
func RunBans(t *testing.T, newBackend NewBanFunc) {
	netnstest.SkipUnlessRoot(t)
	for _, f := range []family{
		{"IPv4", netnsbed.Server4, netnsbed.Client4, false},
		{"IPv6", netnsbed.Server6, netnsbed.Client6, true},
	} {
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			runBans(t, f, newBackend)
		})
	}
}

func runBans(t *testing.T, f family, newBackend NewBanFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	bed := netnstest.NewT(t)
	extras, err := bed.AddClientAddrs(ctx, 1, f.v6)
	if err != nil {
		t.Fatal(err)
	}
	other := extras[0]
	if f.v6 {
		other = extras[1]
	}
	dst := netip.AddrPortFrom(f.server, ssh.Num)
	if _, err := netnsbed.Listen(ctx, bed.Server, dst); err != nil {
		t.Fatal(err)
	}
	expect := func(what string, src netip.Addr, want bool) {
		t.Helper()
		timeout := blockedTimeout
		if want {
			timeout = openTimeout
		}
		got, err := netnsbed.CanConnect(bed.Client, src, dst, timeout)
		if err != nil {
			t.Fatalf("%s: connect %s -> %s: %v", what, src, dst, err)
		}
		if got != want {
			t.Fatalf("%s: connect %s -> %s: got open=%v, want %v", what, src, dst, got, want)
		}
	}
	b := newBackend(t, bed)
	t.Cleanup(func() { b.Close(context.Background(), true) })
	if err := b.Apply(ctx, firewall.Gate{Protected: []netport.Port{ssh}}); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	grants := []firewall.Grant{{Src: f.client, Port: ssh, Timeout: longGrant}, {Src: other, Port: ssh, Timeout: longGrant}}
	if err := b.Grant(ctx, grants...); err != nil {
		t.Fatalf("Grant: %v", err)
	}
	expect("granted", f.client, true)
	if err := b.Ban(ctx, f.client, longGrant); err != nil {
		t.Fatalf("Ban: %v", err)
	}
	expect("banned with a grant", f.client, false)
	expect("other address, not banned", other, true)
	bans, err := b.ListBans(ctx)
	if err != nil || len(bans) != 1 || bans[0].Src != f.client || bans[0].Remaining <= 0 || bans[0].Remaining > longGrant {
		t.Fatalf("ListBans = %v, %v; want one ban of %s", bans, err, f.client)
	}
	if err := b.Apply(ctx, firewall.Gate{Protected: []netport.Port{ssh}}); err != nil {
		t.Fatalf("re-Apply: %v", err)
	}
	expect("banned after re-Apply", f.client, false)
	if err := b.Close(ctx, false); err != nil {
		t.Fatalf("Close(false): %v", err)
	}
	b = newBackend(t, bed)
	t.Cleanup(func() { b.Close(context.Background(), true) })
	if err := b.Apply(ctx, firewall.Gate{Protected: []netport.Port{ssh}}); err != nil {
		t.Fatalf("Apply of a new backend: %v", err)
	}
	expect("banned after a restart", f.client, false)
	if err := b.Unban(ctx, f.client); err != nil {
		t.Fatalf("Unban: %v", err)
	}
	if err := b.Unban(ctx, f.client); err != nil {
		t.Fatalf("Unban of an absent ban: %v", err)
	}
	expect("unbanned, grant still live", f.client, true)
	if err := b.Ban(ctx, other, shortGrant); err != nil {
		t.Fatalf("short Ban: %v", err)
	}
	expect("short ban", other, false)
	if !netnsbed.WaitFor(expiryBound, func() bool {
		ok, _ := netnsbed.CanConnect(bed.Client, other, dst, blockedTimeout)
		return ok
	}) {
		t.Fatalf("ban of %s did not expire within %s", other, expiryBound)
	}
	if bans, err := b.ListBans(ctx); err != nil || len(bans) != 0 {
		t.Fatalf("ListBans after expiry = %v, %v; want none", bans, err)
	}
}
