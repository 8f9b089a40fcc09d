package server

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/capture"
	"github.com/sesame-knock/sesame/internal/config"
	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/knock"
	"github.com/sesame-knock/sesame/internal/netport"
)

// ping delivers an ICMP packet of type typ with payload from src through the capture.
func (b *bed) ping(src netip.Addr, typ uint8, payload []byte) {
	b.t.Helper()
	pkt := &capture.Packet{Time: b.clock.Now(), Src: src, Dst: dstIP, Proto: netport.ICMP, ICMPType: typ, Payload: payload}
	if src.Is6() {
		pkt.Dst = srcC
	}
	if err := b.cap.Send(context.Background(), pkt); err != nil {
		b.t.Fatal(err)
	}
}

// icmpConfig is doorConfig with a door whose first knock is a ping, and alice's SPA section
// (socket mode) with icmp as given.
func icmpConfig(icmp bool) *config.Config {
	cfg := doorConfig()
	cfg.Doors = append(cfg.Doors, config.Door{
		Door: knock.Door{Name: "ping", Sequence: []knock.Element{{Proto: netport.ICMP}, tcp(7001)},
			Flags: knock.TCPFlags{Set: knock.SYN, Clear: knock.ACK}, Timeout: 5 * time.Second},
		Open: []netport.Port{tcp(80)}, OpenFor: 30 * time.Second,
	})
	s := spaSection(62201, false)
	s.ICMP = icmp
	return withSPA(cfg, s)
}

// TestSPAInPing: with [spa] icmp the capture passes echo packets whole, an SPA packet in an echo
// request (IPv4, IPv6) or an IPv4 echo reply opens what it asks for, once; a short ping stays an
// ICMP knock; without [spa] icmp an SPA packet in a ping opens nothing.
func TestSPAInPing(t *testing.T) {
	b := newBed(t, icmpConfig(true))
	if f := b.cap.Filter(); !f.SPAICMP {
		t.Fatalf("filter %+v: SPAICMP not set with [spa] icmp", f)
	}
	for _, tc := range []struct {
		name string
		src  netip.Addr
		typ  uint8
	}{
		{"ipv4 echo request", srcA, capture.ICMPEcho},
		{"ipv6 echo request", srcC, capture.ICMPv6Echo},
		{"ipv4 echo reply", srcB, capture.ICMPEchoReply},
	} {
		pkt := b.alicePacket()
		b.ping(tc.src, tc.typ, pkt)
		if !b.fw.Has(tc.src, tcp(443)) {
			t.Fatalf("%s: alice's packet in a ping was not granted:\n%s", tc.name, strings.Join(b.logs.all(), "\n"))
		}
		b.fw.Revoke(context.Background(), firewall.Grant{Src: tc.src, Port: tcp(443)})
		b.ping(tc.src, tc.typ, pkt)
		if b.fw.Has(tc.src, tcp(443)) {
			t.Fatalf("%s: the same ping again opened the port", tc.name)
		}
	}
	if d := b.srv.Stats().SPA.Decisions["native"]; d["accepted"] != 3 || d["replay"] != 3 {
		t.Errorf("decisions %v, want 3 accepted, 3 replays", d)
	}
	// An ordinary ping (56 bytes) is a knock, not an SPA refusal; an echo reply never knocks.
	b.ping(srcA, capture.ICMPEchoReply, make([]byte, 56))
	b.knock(srcA, tcp(7001))
	if b.fw.Has(srcA, tcp(80)) {
		t.Fatal("an echo reply counted as an ICMP knock")
	}
	b.ping(srcA, capture.ICMPEcho, make([]byte, 56))
	b.knock(srcA, tcp(7001))
	if !b.fw.Has(srcA, tcp(80)) {
		t.Fatalf("ping, tcp/7001 did not open the ping door:\n%s", strings.Join(b.logs.all(), "\n"))
	}
	if n := b.logs.count("spa refused"); n != 3 {
		t.Errorf("%d spa refused lines, want the 3 replays only:\n%s", n, strings.Join(b.logs.all(), "\n"))
	}

	// Without [spa] icmp: the filter passes pings as knocks only, and an SPA ping opens nothing.
	if err := b.srv.Reload(context.Background(), icmpConfig(false)); err != nil {
		t.Fatal(err)
	}
	if f := b.cap.Filter(); f.SPAICMP {
		t.Fatalf("filter %+v: SPAICMP set without [spa] icmp", f)
	}
	b.ping(srcB, capture.ICMPEcho, b.alicePacket())
	if b.fw.Has(srcB, tcp(443)) {
		t.Error("an SPA packet in a ping opened a port without [spa] icmp")
	}
}
