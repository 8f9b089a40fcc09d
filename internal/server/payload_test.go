package server

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/capture"
	"github.com/sesame-knock/sesame/internal/config"
	"github.com/sesame-knock/sesame/internal/knock"
	"github.com/sesame-knock/sesame/internal/netport"
)

// TestKnockPayload: a knock element with a payload counts only with exactly that payload (a
// wrong, longer, shorter or missing one neither advances nor breaks the sequence), for UDP and
// ICMP, and the kernel filter gets the payload to compare.
func TestKnockPayload(t *testing.T) {
	cfg := doorConfig()
	cfg.Doors = []config.Door{{
		Door: knock.Door{Name: "p", Sequence: []knock.Element{tcp(7000), udp(8000), {Proto: netport.ICMP}, tcp(23)},
			Flags: knock.TCPFlags{Set: knock.SYN, Clear: knock.ACK}, Timeout: 5 * time.Second},
		Payloads: [][]byte{nil, {0xca, 0xfe, 0x01}, []byte("k"), nil},
		Open:     []netport.Port{tcp(22)}, OpenFor: 30 * time.Second,
	}}
	b := newBed(t, cfg)
	f := b.cap.Filter()
	want := map[netport.Port]string{udp(8000): "\xca\xfe\x01", {Proto: netport.ICMP}: "k", tcp(7000): "", tcp(23): ""}
	for _, k := range f.Knocks {
		if p, ok := want[k.Port]; !ok || p != k.Payload {
			t.Errorf("filter knock %v payload %q, want %q", k.Port, k.Payload, p)
		}
	}
	send := func(src netip.Addr, el netport.Port, payload []byte) {
		t.Helper()
		pkt := &capture.Packet{Time: b.clock.Now(), Src: src, Dst: dstIP, Proto: el.Proto, SrcPort: 40000, DstPort: el.Num, TCPFlags: 0x02, Payload: payload}
		if el.Proto == netport.ICMP {
			pkt.ICMPType = capture.ICMPEcho
		}
		if err := b.cap.Send(context.Background(), pkt); err != nil {
			t.Fatal(err)
		}
	}
	icmp := netport.Port{Proto: netport.ICMP}
	for _, tc := range []struct {
		name       string
		src        netip.Addr
		udp, ping  []byte
		wantOpened bool
	}{
		{"right payloads", srcA, []byte{0xca, 0xfe, 0x01}, []byte("k"), true},
		{"wrong udp payload", srcB, []byte{0xca, 0xfe, 0x02}, []byte("k"), false},
		{"longer udp payload", netip4("198.18.0.4"), []byte{0xca, 0xfe, 0x01, 0x00}, []byte("k"), false},
		{"no udp payload", netip4("198.18.0.5"), nil, []byte("k"), false},
		{"wrong ping payload", netip4("198.18.0.6"), []byte{0xca, 0xfe, 0x01}, []byte("K"), false},
		{"plain ping", netip4("198.18.0.7"), []byte{0xca, 0xfe, 0x01}, make([]byte, 56), false},
	} {
		send(tc.src, tcp(7000), nil)
		send(tc.src, udp(8000), tc.udp)
		send(tc.src, icmp, tc.ping)
		send(tc.src, tcp(23), nil)
		if got := b.fw.Has(tc.src, tcp(22)); got != tc.wantOpened {
			t.Errorf("%s: opened %v, want %v", tc.name, got, tc.wantOpened)
		}
	}
	// A wrong payload does not break a sequence in progress: the right one still follows.
	src := netip4("198.18.0.8")
	send(src, tcp(7000), nil)
	send(src, udp(8000), []byte{0})
	send(src, udp(8000), []byte{0xca, 0xfe, 0x01})
	send(src, icmp, []byte("x"))
	send(src, icmp, []byte("k"))
	send(src, tcp(23), nil)
	if !b.fw.Has(src, tcp(22)) {
		t.Error("a wrong payload between right knocks broke the sequence")
	}
}

// TestKnockSourcePorts: a door with source_ports counts knocks from those source ports only;
// others neither advance nor break its sequence.
func TestKnockSourcePorts(t *testing.T) {
	cfg := doorConfig()
	cfg.Doors[0].SourcePorts = []config.PortRange{{Lo: 40000, Hi: 40100}}
	b := newBed(t, cfg)
	send := func(src netip.Addr, el netport.Port, sport uint16) {
		t.Helper()
		pkt := &capture.Packet{Time: b.clock.Now(), Src: src, Dst: dstIP, Proto: el.Proto, SrcPort: sport, DstPort: el.Num, TCPFlags: 0x02}
		if err := b.cap.Send(context.Background(), pkt); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name  string
		src   netip.Addr
		ports [3]uint16
		want  bool
	}{
		{"inside", srcA, [3]uint16{40000, 40100, 40050}, true},
		{"one below", srcB, [3]uint16{40000, 39999, 40050}, false},
		{"one above", netip4("198.18.0.4"), [3]uint16{40101, 40000, 40050}, false},
		{"ipv6 inside", srcC, [3]uint16{40001, 40002, 40003}, true},
	} {
		for i, el := range sequence {
			send(tc.src, el, tc.ports[i])
		}
		if got := b.fw.Has(tc.src, tcp(22)); got != tc.want {
			t.Errorf("%s: opened %v, want %v", tc.name, got, tc.want)
		}
	}
	// A knock from another source port between right ones does not break the sequence.
	src := netip4("198.18.0.5")
	send(src, sequence[0], 40000)
	send(src, sequence[1], 12345)
	send(src, sequence[1], 40000)
	send(src, sequence[2], 40000)
	if !b.fw.Has(src, tcp(22)) {
		t.Error("a knock from another source port broke the sequence")
	}
}
