//go:build linux

package fwtest

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/netnsbed"
	"github.com/sesame-knock/sesame/internal/netnsbed/netnstest"
	"github.com/sesame-knock/sesame/internal/netport"
)

// StateTarget is a backend whose gate is not a kernel on this host (a cloud security group),
// checked by RunState: the same calls and List assertions as Run, with Admits, a look at the
// enforcing side's state, in place of packets.
type StateTarget struct {
	// New returns a backend on the shared state, like a daemon (re)started on the host; RunState
	// closes each.
	New func(t *testing.T) firewall.Backend
	// Admits reports whether the enforcing side lets new connections from src to port in now.
	Admits func(src netip.Addr, port netport.Port) bool
	// Settle bounds how long a change takes to reach the enforcing side (the backend may apply
	// it asynchronously); expectations are polled that long.
	Settle time.Duration
	// RemovedAdmits is what Admits says once Close(true) removed sesame's rules: true for a
	// kernel gate (nothing is gated any more), false for a security group (what it does not
	// allow stays closed).
	RemovedAdmits bool
}

// RunState runs the state conformance sequence for an IPv4 and an IPv6 client (netnsbed's
// Client4/6, with ExtraClient4/6(1) as the other source), in turn. What it cannot check without
// packets is left out: that other traffic passes, conntrack marks, and that a connection
// outlives its grant. The kernel backends run it too (with connections as Admits), so it is
// one sequence for every backend.
func RunState(t *testing.T, tg StateTarget) {
	for _, f := range []struct {
		name          string
		client, other netip.Addr
	}{
		{"IPv4", netnsbed.Client4, netnsbed.ExtraClient4(1)},
		{"IPv6", netnsbed.Client6, netnsbed.ExtraClient6(1)},
	} {
		t.Run(f.name, func(t *testing.T) { runState(t, tg, f.client, f.other) })
	}
}

func runState(t *testing.T, tg StateTarget, client, other netip.Addr) {
	ctx := context.Background()
	expect := func(what string, src netip.Addr, port netport.Port, want bool) {
		t.Helper()
		deadline := time.Now().Add(tg.Settle)
		for tg.Admits(src, port) != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %s -> %s admitted = %v after %s, want %v", what, src, port, !want, tg.Settle, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	b := tg.New(t)
	closed := false
	t.Cleanup(func() {
		if !closed {
			b.Close(context.Background(), true)
		}
	})
	list := func(b firewall.Backend) []firewall.LiveGrant {
		t.Helper()
		l, err := b.List(ctx)
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		return l
	}
	gate := firewall.Gate{Protected: []netport.Port{ssh}, Stealth: firewall.StealthOff}
	if err := b.Apply(ctx, gate); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if err := b.Apply(ctx, gate); err != nil {
		t.Fatalf("Apply again: %v", err)
	}
	expect("gated, no grant", client, ssh, false)
	if l := list(b); len(l) != 0 {
		t.Fatalf("List after Apply = %v, want none", l)
	}

	if err := b.Grant(ctx, firewall.Grant{Src: client, Port: ssh, Timeout: shortGrant}); err != nil {
		t.Fatalf("Grant: %v", err)
	}
	expect("granted", client, ssh, true)
	expect("other source", other, ssh, false)
	if l := list(b); len(l) != 1 || l[0].Src != client || l[0].Port != ssh || l[0].Remaining <= 0 || l[0].Remaining > shortGrant {
		t.Fatalf("List after Grant = %+v, want one grant for %s %s with 0 < remaining <= %s", l, client, ssh, shortGrant)
	}
	waitNoGrants(t, ctx, b)
	expect("after expiry", client, ssh, false)

	// Reload keeps the live grant with its remaining time.
	if err := b.Grant(ctx, firewall.Grant{Src: client, Port: ssh, Timeout: longGrant}); err != nil {
		t.Fatalf("Grant: %v", err)
	}
	expect("granted again", client, ssh, true)
	time.Sleep(1500 * time.Millisecond)
	before := list(b)
	gate2 := firewall.Gate{Protected: []netport.Port{ssh, ssh2}, Stealth: firewall.StealthOff}
	if err := b.Apply(ctx, gate2); err != nil {
		t.Fatalf("Apply (reload): %v", err)
	}
	after := list(b)
	if len(before) != 1 || len(after) != 1 || after[0].Src != client || after[0].Port != ssh ||
		after[0].Remaining <= 0 || after[0].Remaining > before[0].Remaining || after[0].Remaining >= longGrant {
		t.Fatalf("List before reload = %+v, after = %+v: want the one grant kept (0 < after <= before < %s)", before, after, longGrant)
	}
	expect("granted after reload", client, ssh, true)
	expect("newly protected port", client, ssh2, false)

	// A second backend (a restarted daemon) applying the same gate keeps the grant.
	b2 := tg.New(t)
	closed2 := false
	t.Cleanup(func() {
		if !closed2 {
			b2.Close(context.Background(), true)
		}
	})
	if err := b2.Apply(ctx, gate2); err != nil {
		t.Fatalf("Apply from a second backend: %v", err)
	}
	if l := list(b2); len(l) != 1 || l[0].Src != client || l[0].Port != ssh || l[0].Remaining <= 0 || l[0].Remaining >= longGrant {
		t.Fatalf("List from second backend = %+v; want the one grant, with less than %s left", l, longGrant)
	}

	// Revoke removes; revoking again is fine.
	g := firewall.Grant{Src: client, Port: ssh, Timeout: longGrant}
	if err := b.Revoke(ctx, g); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	if l := list(b); len(l) != 0 {
		t.Fatalf("List after Revoke = %+v, want none", l)
	}
	expect("revoked", client, ssh, false)
	if err := b.Revoke(ctx, g); err != nil {
		t.Fatalf("Revoke of an absent grant: %v", err)
	}

	// Refresh: granting again replaces the timeout; still one grant.
	if err := b.Grant(ctx, firewall.Grant{Src: client, Port: ssh, Timeout: shortGrant}); err != nil {
		t.Fatalf("Grant: %v", err)
	}
	if err := b.Grant(ctx, firewall.Grant{Src: client, Port: ssh, Timeout: longGrant}); err != nil {
		t.Fatalf("Grant (refresh): %v", err)
	}
	if l := list(b); len(l) != 1 || l[0].Remaining <= shortGrant+time.Second {
		t.Fatalf("List after refresh = %+v, want one grant with more than %s left", l, shortGrant+time.Second)
	}
	time.Sleep(shortGrant + 500*time.Millisecond)
	expect("refreshed grant after the first timeout", client, ssh, true)

	// Close without removing rules: the grant stays.
	if err := b.Close(ctx, false); err != nil {
		t.Fatalf("Close(false): %v", err)
	}
	closed = true
	expect("closed, grant kept", client, ssh, true)
	expect("closed, gate kept", other, ssh, false)

	// Close removing rules: sesame's rules are gone.
	if err := b2.Close(ctx, true); err != nil {
		t.Fatalf("Close(true): %v", err)
	}
	closed2 = true
	expect("rules removed", other, ssh, tg.RemovedAdmits)
}

// RunStateKernel runs RunState on a kernel gate in a bed of its own: services on ports 2222
// and 2223 of the server, and Admits a real connection with data both ways (netnsbed.CanConnect)
// from a client address. newBackend opens the backend in the bed (skips when not root).
func RunStateKernel(t *testing.T, newBackend func(t *testing.T, bed *netnsbed.Bed) firewall.Backend) {
	netnstest.SkipUnlessRoot(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	bed := netnstest.NewT(t)
	if _, err := bed.AddClientAddrs(ctx, 1, true); err != nil {
		t.Fatal(err)
	}
	for _, a := range []netip.Addr{netnsbed.Server4, netnsbed.Server6} {
		for _, p := range []uint16{2222, 2223} {
			if _, err := netnsbed.Listen(ctx, bed.Server, netip.AddrPortFrom(a, p)); err != nil {
				t.Fatal(err)
			}
		}
	}
	RunState(t, StateTarget{
		New: func(t *testing.T) firewall.Backend { return newBackend(t, bed) },
		Admits: func(src netip.Addr, port netport.Port) bool {
			dst := netnsbed.Server4
			if src.Is6() {
				dst = netnsbed.Server6
			}
			ok, err := netnsbed.CanConnect(bed.Client, src, netip.AddrPortFrom(dst, port.Num), 300*time.Millisecond)
			if err != nil {
				t.Fatalf("connect %s -> %s %s: %v", src, dst, port, err)
			}
			return ok
		},
		Settle:        3 * time.Second,
		RemovedAdmits: true,
	})
}
