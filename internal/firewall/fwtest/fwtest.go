//go:build linux

// Package fwtest is the conformance suite that every real firewall backend runs against real
// packets. Each family (IPv4, IPv6) gets its own netnsbed bed; the backend gates the bed's server
// namespace and the client namespace connects to it. It needs root; without root it skips.
package fwtest

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/netnsbed"
	"github.com/sesame-knock/sesame/internal/netnsbed/netnstest"
	"github.com/sesame-knock/sesame/internal/netport"
)

// NewFunc returns a backend that works in bed's server namespace. Run closes every backend it gets
// (with removeRules true at the end of the test); the namespaces go away with the bed.
type NewFunc func(t *testing.T, bed *netnsbed.Bed) firewall.Backend

// Timing of the suite. Blocked connects are expected to time out (the gate drops SYNs), so they
// use a short timeout; connects expected to work get a generous one.
const (
	blockedTimeout = 300 * time.Millisecond
	openTimeout    = 3 * time.Second
	shortGrant     = 2 * time.Second
	longGrant      = 30 * time.Second
	expiryBound    = 15 * time.Second
)

var (
	ssh  = netport.Port{Proto: netport.TCP, Num: 2222}
	ssh2 = netport.Port{Proto: netport.TCP, Num: 2223}
)

type family struct {
	name           string
	server, client netip.Addr
	v6             bool
}

// Run runs the suite for IPv4 and IPv6, in parallel, each in its own bed.
func Run(t *testing.T, newBackend NewFunc) {
	netnstest.SkipUnlessRoot(t)
	for _, f := range []family{
		{"IPv4", netnsbed.Server4, netnsbed.Client4, false},
		{"IPv6", netnsbed.Server6, netnsbed.Client6, true},
	} {
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			runFamily(t, f, newBackend)
		})
	}
}

func runFamily(t *testing.T, f family, newBackend NewFunc) {
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
	dst2 := netip.AddrPortFrom(f.server, ssh2.Num)
	for _, a := range []netip.AddrPort{dst, dst2} {
		if _, err := netnsbed.Listen(ctx, bed.Server, a); err != nil {
			t.Fatal(err)
		}
	}

	expect := func(what string, src netip.Addr, to netip.AddrPort, want bool) {
		t.Helper()
		timeout := blockedTimeout
		if want {
			timeout = openTimeout
		}
		got, err := netnsbed.CanConnect(bed.Client, src, to, timeout)
		if err != nil {
			t.Fatalf("%s: connect %s -> %s: %v", what, src, to, err)
		}
		if got != want {
			t.Fatalf("%s: connect %s -> %s: got open=%v, want %v", what, src, to, got, want)
		}
	}

	expect("before Apply", f.client, dst, true)

	b := newBackend(t, bed)
	closed := false
	t.Cleanup(func() {
		if !closed {
			b.Close(context.Background(), true)
		}
	})
	list := func() []firewall.LiveGrant {
		t.Helper()
		l, err := b.List(ctx)
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		return l
	}

	gate := firewall.Gate{Protected: []netport.Port{ssh}}
	if err := b.Apply(ctx, gate); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if err := b.Apply(ctx, gate); err != nil { // idempotent
		t.Fatalf("Apply again: %v", err)
	}
	expect("gated, no grant", f.client, dst, false)
	expect("unprotected port", f.client, dst2, true)
	if l := list(); len(l) != 0 {
		t.Fatalf("List after Apply = %v, want none", l)
	}

	// A grant opens the port for that source only.
	if err := b.Grant(ctx, firewall.Grant{Src: f.client, Port: ssh, Timeout: shortGrant}); err != nil {
		t.Fatalf("Grant: %v", err)
	}
	expect("granted", f.client, dst, true)
	expect("other source", other, dst, false)
	if l := list(); len(l) != 1 || l[0].Src != f.client || l[0].Port != ssh || l[0].Remaining <= 0 || l[0].Remaining > shortGrant {
		t.Fatalf("List after Grant = %+v, want one grant for %s %s with 0 < remaining <= %s", l, f.client, ssh, shortGrant)
	}

	// A connection opened during the grant outlives it.
	held, err := netnsbed.Open(bed.Client, f.client, dst, openTimeout)
	if err != nil {
		t.Fatalf("open during grant: %v", err)
	}
	defer held.Close()
	Echo(t, held, "during")
	// The connection the grant admitted carries sesame's conntrack mark bit; a connection to an
	// unprotected port does not.
	if m, ok := ConnMark(t, bed.Server, held.Conn().LocalAddr(), ssh.Num); !ok || m&firewall.ConnMark == 0 {
		t.Fatalf("admitted connection: conntrack mark %#x (found %v), want bit %#x set", m, ok, firewall.ConnMark)
	}
	free, err := netnsbed.Dial(bed.Client, f.client, dst2, openTimeout)
	if err != nil {
		t.Fatalf("dial unprotected port: %v", err)
	}
	if m, ok := ConnMark(t, bed.Server, free.LocalAddr(), ssh2.Num); !ok || m&firewall.ConnMark != 0 {
		t.Fatalf("connection to an unprotected port: conntrack mark %#x (found %v), want bit %#x clear", m, ok, firewall.ConnMark)
	}
	free.Close()

	waitNoGrants(t, ctx, b)
	expect("after expiry", f.client, dst, false)
	Echo(t, held, "after expiry")
	held.Close()

	// Restart/reload: Apply keeps the live grant with its remaining time, and changes the ports.
	if err := b.Grant(ctx, firewall.Grant{Src: f.client, Port: ssh, Timeout: longGrant}); err != nil {
		t.Fatalf("Grant: %v", err)
	}
	time.Sleep(1500 * time.Millisecond)
	before := list()
	if len(before) != 1 {
		t.Fatalf("List before reload = %+v, want one", before)
	}
	gate2 := firewall.Gate{Protected: []netport.Port{ssh, ssh2}}
	if err := b.Apply(ctx, gate2); err != nil {
		t.Fatalf("Apply (reload): %v", err)
	}
	after := list()
	if len(after) != 1 || after[0].Src != f.client || after[0].Port != ssh {
		t.Fatalf("List after reload = %+v, want the one grant for %s %s", after, f.client, ssh)
	}
	if after[0].Remaining <= 0 || after[0].Remaining > before[0].Remaining || after[0].Remaining >= longGrant {
		t.Fatalf("remaining after reload = %s, before = %s: want kept (0 < after <= before < %s)", after[0].Remaining, before[0].Remaining, longGrant)
	}
	expect("granted after reload", f.client, dst, true)
	expect("newly protected port", f.client, dst2, false)
	expect("other source after reload", other, dst, false)

	// A second backend (a restarted daemon) applying the same gate keeps the grant too.
	b2 := newBackend(t, bed)
	closed2 := false
	t.Cleanup(func() {
		if !closed2 {
			b2.Close(context.Background(), true)
		}
	})
	if err := b2.Apply(ctx, gate2); err != nil {
		t.Fatalf("Apply from a second backend: %v", err)
	}
	if l, err := b2.List(ctx); err != nil || len(l) != 1 {
		t.Fatalf("List from second backend = %+v, %v; want one grant", l, err)
	}

	// Revoke removes; revoking again is fine.
	g := firewall.Grant{Src: f.client, Port: ssh, Timeout: longGrant}
	if err := b.Revoke(ctx, g); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	if l := list(); len(l) != 0 {
		t.Fatalf("List after Revoke = %+v, want none", l)
	}
	expect("revoked", f.client, dst, false)
	if err := b.Revoke(ctx, g); err != nil {
		t.Fatalf("Revoke of an absent grant: %v", err)
	}

	// Refresh: granting again replaces the timeout, and there is still exactly one grant.
	if err := b.Grant(ctx, firewall.Grant{Src: f.client, Port: ssh, Timeout: shortGrant}); err != nil {
		t.Fatalf("Grant: %v", err)
	}
	if err := b.Grant(ctx, firewall.Grant{Src: f.client, Port: ssh, Timeout: longGrant}); err != nil {
		t.Fatalf("Grant (refresh): %v", err)
	}
	l := list()
	if len(l) != 1 || l[0].Remaining <= shortGrant+time.Second {
		t.Fatalf("List after refresh = %+v, want one grant with more than %s left", l, shortGrant+time.Second)
	}
	time.Sleep(shortGrant + 500*time.Millisecond)
	expect("refreshed grant after the first timeout", f.client, dst, true)

	// Close without removing rules: the gate stays (fail closed), and so does the grant.
	if err := b.Close(ctx, false); err != nil {
		t.Fatalf("Close(false): %v", err)
	}
	closed = true
	expect("closed, gate kept", other, dst, false)
	expect("closed, grant kept", f.client, dst, true)

	// Close removing rules: nothing is gated any more.
	if err := b2.Close(ctx, true); err != nil {
		t.Fatalf("Close(true): %v", err)
	}
	closed2 = true
	expect("rules removed", other, dst, true)
	expect("rules removed, port 2223", other, dst2, true)
}

// waitNoGrants polls List until it is empty, failing after expiryBound.
func waitNoGrants(t *testing.T, ctx context.Context, b firewall.Backend) {
	t.Helper()
	deadline := time.Now().Add(expiryBound)
	for {
		l, err := b.List(ctx)
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		if len(l) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("grants did not expire within %s: %+v", expiryBound, l)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ConnMark returns the conntrack mark of the TCP connection from client (the client side's
// local address) to port dport, as the kernel of namespace ns holds it.
func ConnMark(t *testing.T, ns string, client net.Addr, dport uint16) (uint32, bool) {
	t.Helper()
	ta, ok := client.(*net.TCPAddr)
	if !ok {
		t.Fatalf("ConnMark: %v is not a TCP address", client)
	}
	src := ta.AddrPort()
	fd, err := netnsbed.NSFd(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	h, err := netlink.NewHandleAt(fd, unix.NETLINK_NETFILTER)
	if err != nil {
		t.Fatalf("ConnMark: netlink handle: %v", err)
	}
	defer h.Close()
	fam := netlink.InetFamily(unix.AF_INET)
	if src.Addr().Unmap().Is6() {
		fam = unix.AF_INET6
	}
	flows, err := h.ConntrackTableList(netlink.ConntrackTable, fam)
	if err != nil {
		t.Fatalf("ConnMark: list conntrack: %v", err)
	}
	for _, fl := range flows {
		a, _ := netip.AddrFromSlice(fl.Forward.SrcIP)
		if fl.Forward.Protocol == unix.IPPROTO_TCP && a.Unmap() == src.Addr().Unmap() &&
			fl.Forward.SrcPort == src.Port() && fl.Forward.DstPort == dport {
			return fl.Mark, true
		}
	}
	return 0, false
}

// Echo checks that the held session still carries data both ways (netnsbed.Session.Echo).
func Echo(t *testing.T, s *netnsbed.Session, what string) {
	t.Helper()
	if err := s.Echo(time.Now().Add(openTimeout)); err != nil {
		t.Fatalf("held connection (%s): %v", what, err)
	}
}
