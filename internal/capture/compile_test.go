package capture

import (
	"errors"
	"testing"

	"golang.org/x/net/bpf"

	"github.com/sesame-knock/sesame/internal/knock"
	"github.com/sesame-knock/sesame/internal/netport"
)

var testFilter = Filter{
	Knocks: []Knock{
		{Port: netport.Port{Proto: netport.TCP, Num: 7000}},
		{Port: netport.Port{Proto: netport.TCP, Num: 8000}, Flags: knock.TCPFlags{Set: knock.SYN, Clear: knock.ACK}},
		{Port: netport.Port{Proto: netport.TCP, Num: 8001}, Flags: knock.TCPFlags{Set: knock.FIN}},
		{Port: netport.Port{Proto: netport.UDP, Num: 9000}},
		{Port: netport.Port{Proto: netport.ICMP}},
	},
	Guards: []PortRange{
		{Proto: netport.TCP, Lo: 22, Hi: 25},
		{Proto: netport.UDP, Lo: 5000, Hi: 5010},
	},
	SPA: []uint16{62201},
}

func TestCompileMatches(t *testing.T) {
	prog, err := Compile(testFilter)
	if err != nil {
		t.Fatal(err)
	}
	syn, synack, ack, fin := knock.SYN, knock.SYN|knock.ACK, knock.ACK, knock.FIN
	tests := []struct {
		name    string
		p       pk
		pktType uint32
		want    int
	}{
		{"v4 tcp knock any flags", pk{proto: ipProtoTCP, dport: 7000, flags: ack}, 0, SnapKnock},
		{"v4 tcp wrong port", pk{proto: ipProtoTCP, dport: 7001, flags: syn}, 0, 0},
		{"v4 tcp syn knock", pk{proto: ipProtoTCP, dport: 8000, flags: syn}, 0, SnapKnock},
		{"v4 tcp syn knock with ack", pk{proto: ipProtoTCP, dport: 8000, flags: synack}, 0, 0},
		{"v4 tcp syn knock with fin", pk{proto: ipProtoTCP, dport: 8000, flags: fin}, 0, 0},
		{"v4 tcp fin knock", pk{proto: ipProtoTCP, dport: 8001, flags: fin | ack}, 0, SnapKnock},
		{"v4 tcp fin knock without fin", pk{proto: ipProtoTCP, dport: 8001, flags: syn}, 0, 0},
		{"v4 tcp guard low", pk{proto: ipProtoTCP, dport: 22, flags: syn}, 0, SnapKnock},
		{"v4 tcp guard high", pk{proto: ipProtoTCP, dport: 25, flags: syn}, 0, SnapKnock},
		{"v4 tcp guard below", pk{proto: ipProtoTCP, dport: 21, flags: syn}, 0, 0},
		{"v4 tcp guard above", pk{proto: ipProtoTCP, dport: 26, flags: syn}, 0, 0},
		{"v4 tcp guard synack", pk{proto: ipProtoTCP, dport: 23, flags: synack}, 0, 0},
		{"v4 tcp guard ack", pk{proto: ipProtoTCP, dport: 23, flags: ack}, 0, 0},
		{"v4 tcp knock port over udp", pk{proto: ipProtoUDP, dport: 7000}, 0, 0},
		{"v4 udp knock", pk{proto: ipProtoUDP, dport: 9000, payload: []byte{0}}, 0, SnapKnock},
		{"v4 udp knock port over tcp", pk{proto: ipProtoTCP, dport: 9000, flags: syn}, 0, 0},
		{"v4 udp guard", pk{proto: ipProtoUDP, dport: 5005}, 0, SnapKnock},
		{"v4 udp guard edge", pk{proto: ipProtoUDP, dport: 5010}, 0, SnapKnock},
		{"v4 udp guard outside", pk{proto: ipProtoUDP, dport: 5011}, 0, 0},
		{"v4 udp spa", pk{proto: ipProtoUDP, dport: 62201, payload: make([]byte, 600)}, 0, SnapSPA},
		{"v4 icmp echo", pk{proto: ipProtoICMP, icmpType: 8}, 0, SnapKnock},
		{"v4 icmp echo reply", pk{proto: ipProtoICMP, icmpType: 0}, 0, 0},
		{"v4 icmpv6 echo in ipv4", pk{proto: ipProtoICMPv6, icmpType: 128}, 0, 0},
		{"v4 options", pk{proto: ipProtoTCP, dport: 8000, flags: syn, options: 12}, 0, SnapKnock},
		{"v4 max options", pk{proto: ipProtoUDP, dport: 9000, options: 40}, 0, SnapKnock},
		{"v4 options wrong port", pk{proto: ipProtoTCP, dport: 8002, flags: syn, options: 8}, 0, 0},
		{"v4 tcp options", pk{proto: ipProtoTCP, dport: 8000, flags: syn, tcpOpts: 20}, 0, SnapKnock},
		{"v4 first fragment", pk{proto: ipProtoTCP, dport: 7000, flags: syn, frag: 0x2000}, 0, SnapKnock},
		{"v4 dont fragment", pk{proto: ipProtoTCP, dport: 7000, flags: syn, frag: 0x4000}, 0, SnapKnock},
		{"v4 non-first fragment", pk{proto: ipProtoTCP, dport: 7000, flags: syn, frag: 0x2001}, 0, 0},
		{"v4 last fragment", pk{proto: ipProtoUDP, dport: 9000, frag: 0x0010}, 0, 0},
		{"v4 outgoing", pk{proto: ipProtoTCP, dport: 7000, flags: syn}, packetOutgoing, 0},
		{"v4 to other host", pk{proto: ipProtoTCP, dport: 7000, flags: syn}, 3, SnapKnock},
		{"v4 other protocol", pk{proto: 47, dport: 7000}, 0, 0},
		{"v6 tcp syn knock", pk{v6: true, proto: ipProtoTCP, dport: 8000, flags: syn}, 0, SnapKnock},
		{"v6 tcp syn knock with ack", pk{v6: true, proto: ipProtoTCP, dport: 8000, flags: synack}, 0, 0},
		{"v6 tcp wrong port", pk{v6: true, proto: ipProtoTCP, dport: 8002, flags: syn}, 0, 0},
		{"v6 tcp guard", pk{v6: true, proto: ipProtoTCP, dport: 24, flags: syn}, 0, SnapKnock},
		{"v6 udp knock", pk{v6: true, proto: ipProtoUDP, dport: 9000}, 0, SnapKnock},
		{"v6 udp spa", pk{v6: true, proto: ipProtoUDP, dport: 62201}, 0, SnapSPA},
		{"v6 icmpv6 echo", pk{v6: true, proto: ipProtoICMPv6, icmpType: 128}, 0, SnapKnock},
		{"v6 icmpv6 echo reply", pk{v6: true, proto: ipProtoICMPv6, icmpType: 129}, 0, 0},
		{"v6 icmpv4 echo in ipv6", pk{v6: true, proto: ipProtoICMP, icmpType: 8}, 0, 0},
		{"v6 hop-by-hop header", pk{v6: true, proto: 0, dport: 8000}, 0, 0},
		{"v6 outgoing", pk{v6: true, proto: ipProtoUDP, dport: 9000}, packetOutgoing, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := runFilter(t, prog, tt.p.build(), tt.pktType); got != tt.want {
				t.Errorf("filter = %d, want %d", got, tt.want)
			}
		})
	}
}

// TestCompileSPAICMP: with SPAICMP, echo requests (IPv4 and IPv6) and IPv4 echo replies pass
// whole, alone or next to an ICMP knock; other ICMP types and IPv6 echo replies do not.
func TestCompileSPAICMP(t *testing.T) {
	for _, f := range []Filter{
		{SPAICMP: true},
		{SPAICMP: true, Knocks: []Knock{{Port: netport.Port{Proto: netport.ICMP}}}, SPA: []uint16{62201}},
	} {
		prog, err := Compile(f)
		if err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name string
			p    pk
			want int
		}{
			{"v4 echo request", pk{proto: ipProtoICMP, icmpType: ICMPEcho, payload: make([]byte, 300)}, SnapSPA},
			{"v4 echo reply", pk{proto: ipProtoICMP, icmpType: ICMPEchoReply, payload: make([]byte, 300)}, SnapSPA},
			{"v4 destination unreachable", pk{proto: ipProtoICMP, icmpType: 3}, 0},
			{"v4 timestamp", pk{proto: ipProtoICMP, icmpType: 13}, 0},
			{"v6 echo request", pk{v6: true, proto: ipProtoICMPv6, icmpType: ICMPv6Echo}, SnapSPA},
			{"v6 echo reply", pk{v6: true, proto: ipProtoICMPv6, icmpType: 129}, 0},
			{"v6 neighbour solicitation", pk{v6: true, proto: ipProtoICMPv6, icmpType: 135}, 0},
			{"v4 icmpv6 in ipv4", pk{proto: ipProtoICMPv6, icmpType: ICMPv6Echo}, 0},
			{"v4 tcp", pk{proto: ipProtoTCP, dport: 7000, flags: knock.SYN}, 0},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if got := runFilter(t, prog, tt.p.build(), 0); got != tt.want {
					t.Errorf("filter %+v = %d, want %d", f, got, tt.want)
				}
			})
		}
	}
}

func TestCompileMalformed(t *testing.T) {
	prog, err := Compile(testFilter)
	if err != nil {
		t.Fatal(err)
	}
	good := pk{proto: ipProtoTCP, dport: 7000, flags: knock.SYN}.build()
	shortIHL := append([]byte(nil), good...)
	shortIHL[0] = 0x44 // IHL 16 bytes: ports would be read from the IP addresses
	tests := []struct {
		name     string
		pkt      []byte
		ethProto uint32
	}{
		{"empty", nil, etherTypeIPv4},
		{"ip header only", good[:20], etherTypeIPv4},
		{"port cut", good[:22], etherTypeIPv4},
		{"short ihl", shortIHL, etherTypeIPv4},
		{"arp", good, 0x0806},
		{"v6 header only", pk{v6: true, proto: ipProtoTCP, dport: 7000}.build()[:40], etherTypeIPv6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := vmFor(t, prog, tt.ethProto, 0).Run(tt.pkt)
			if err != nil || got != 0 {
				t.Errorf("filter = %d, %v; want 0", got, err)
			}
		})
	}
}

func TestCompileFilters(t *testing.T) {
	tcp := func(n uint16, f knock.TCPFlags) Knock {
		return Knock{Port: netport.Port{Proto: netport.TCP, Num: n}, Flags: f}
	}
	syn := knock.TCPFlags{Set: knock.SYN}
	tests := []struct {
		name    string
		f       Filter
		p       pk
		want    int
		maxLen  int
		wantErr error
	}{
		{name: "empty filter drops all", p: pk{proto: ipProtoTCP, dport: 7000}, want: 0, maxLen: 1},
		{name: "any flags wins over syn on same port",
			f: Filter{Knocks: []Knock{tcp(7000, syn), tcp(7000, knock.TCPFlags{})}},
			p: pk{proto: ipProtoTCP, dport: 7000, flags: knock.ACK}, want: SnapKnock},
		{name: "impossible flags never match",
			f: Filter{Knocks: []Knock{tcp(7000, knock.TCPFlags{Set: knock.SYN, Clear: knock.SYN})}},
			p: pk{proto: ipProtoTCP, dport: 7000, flags: knock.SYN}, want: 0},
		{name: "spa wins over udp knock",
			f: Filter{Knocks: []Knock{{Port: netport.Port{Proto: netport.UDP, Num: 62201}}}, SPA: []uint16{62201}},
			p: pk{proto: ipProtoUDP, dport: 62201}, want: SnapSPA},
		{name: "contiguous guard merges",
			f: Filter{Guards: []PortRange{{netport.TCP, 1, 30000}, {netport.TCP, 30001, 65535}}},
			p: pk{proto: ipProtoTCP, dport: 65535, flags: knock.SYN}, want: SnapKnock, maxLen: 40},
		{name: "many adjacent knocks merge",
			f: func() Filter {
				var f Filter
				for p := uint16(10000); p < 14000; p++ {
					f.Knocks = append(f.Knocks, tcp(p, syn))
				}
				return f
			}(),
			p: pk{proto: ipProtoTCP, dport: 13999, flags: knock.SYN}, want: SnapKnock, maxLen: 40},
		{name: "too many scattered ports",
			f: func() Filter {
				var f Filter
				for p := uint16(2); p < 8000; p += 2 {
					f.Knocks = append(f.Knocks, tcp(p, syn))
				}
				return f
			}(),
			wantErr: ErrProgramTooLong},
		{name: "far jumps stay valid",
			f: func() Filter {
				var f Filter
				for p := uint16(2); p < 1000; p += 2 {
					f.Knocks = append(f.Knocks, tcp(p, syn))
					f.Knocks = append(f.Knocks, Knock{Port: netport.Port{Proto: netport.UDP, Num: p}})
				}
				f.Knocks = append(f.Knocks, Knock{Port: netport.Port{Proto: netport.ICMP}})
				return f
			}(),
			p: pk{v6: true, proto: ipProtoICMPv6, icmpType: 128}, want: SnapKnock},
		{name: "port 0", f: Filter{Knocks: []Knock{tcp(0, syn)}}, wantErr: errAny},
		{name: "guard lo > hi", f: Filter{Guards: []PortRange{{netport.TCP, 9, 8}}}, wantErr: errAny},
		{name: "icmp guard", f: Filter{Guards: []PortRange{{netport.ICMP, 1, 1}}}, wantErr: errAny},
		{name: "spa port 0", f: Filter{SPA: []uint16{0}}, wantErr: errAny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prog, err := Compile(tt.f)
			if tt.wantErr != nil {
				if err == nil || tt.wantErr != errAny && !errors.Is(err, tt.wantErr) {
					t.Fatalf("Compile error = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.maxLen > 0 && len(prog) > tt.maxLen {
				t.Errorf("program has %d instructions, want at most %d", len(prog), tt.maxLen)
			}
			if got := runFilter(t, prog, tt.p.build(), 0); got != tt.want {
				t.Errorf("filter = %d, want %d", got, tt.want)
			}
		})
	}
}

var errAny = errors.New("any error")

func TestMergeRanges(t *testing.T) {
	got := mergeRanges([]portRange{{5, 6}, {1, 3}, {4, 4}, {10, 65535}, {8, 8}, {65535, 65535}})
	want := []portRange{{1, 6}, {8, 8}, {10, 65535}}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	sub := subtract([]portRange{{1, 100}}, []portRange{{1, 10}, {50, 60}, {100, 200}})
	wantSub := []portRange{{11, 49}, {61, 99}}
	if len(sub) != len(wantSub) || sub[0] != wantSub[0] || sub[1] != wantSub[1] {
		t.Fatalf("subtract = %v, want %v", sub, wantSub)
	}
}

func BenchmarkFilterVM(b *testing.B) {
	prog, err := Compile(testFilter)
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		p    pk
	}{
		{"v4 tcp match", pk{proto: ipProtoTCP, dport: 8000, flags: knock.SYN}},
		{"v4 tcp miss", pk{proto: ipProtoTCP, dport: 443, flags: knock.ACK}},
		{"v6 udp spa", pk{v6: true, proto: ipProtoUDP, dport: 62201, payload: make([]byte, 200)}},
	} {
		pkt := bc.p.build()
		vm := vmFor(b, prog, map[bool]uint32{false: etherTypeIPv4, true: etherTypeIPv6}[bc.p.v6], 0)
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := vm.Run(pkt); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestProgramAssembles checks that every compiled program is accepted by the assembler with
// conditional jumps in range, also for the largest allowed programs.
func TestProgramAssembles(t *testing.T) {
	var f Filter
	for p := uint16(2); p < 2700; p += 2 {
		f.Guards = append(f.Guards, PortRange{netport.TCP, p, p})
	}
	prog, err := Compile(f)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bpf.Assemble(prog); err != nil {
		t.Fatal(err)
	}
	if got := runFilter(t, prog, pk{proto: ipProtoTCP, dport: 2698, flags: knock.SYN}.build(), 0); got != SnapKnock {
		t.Errorf("last port: filter = %d", got)
	}
}

// TestCompileGuardFlags: TCP guard ports pass every segment a door would count, so that the
// sweep guard sees FIN, NULL and ACK sweeps over a door without a flag condition.
func TestCompileGuardFlags(t *testing.T) {
	guards := []PortRange{{Proto: netport.TCP, Lo: 6968, Hi: 6999}, {Proto: netport.TCP, Lo: 7001, Hi: 7032}}
	knocks := []Knock{{Port: netport.Port{Proto: netport.TCP, Num: 7000}}}
	synNoAck := knock.TCPFlags{Set: knock.SYN, Clear: knock.ACK}
	tests := []struct {
		name  string
		flags []knock.TCPFlags
		pkt   uint8
		port  uint16
		want  int
	}{
		{"any-flags door: FIN", []knock.TCPFlags{{}}, knock.FIN, 6999, SnapKnock},
		{"any-flags door: NULL", []knock.TCPFlags{{}}, 0, 7001, SnapKnock},
		{"any-flags door: ACK", []knock.TCPFlags{{}}, knock.ACK, 7032, SnapKnock},
		{"any-flags door: Xmas", []knock.TCPFlags{{}}, knock.FIN | knock.PSH | knock.URG, 6968, SnapKnock},
		{"any-flags door: outside the band", []knock.TCPFlags{{}}, knock.FIN, 6967, 0},
		{"fin door: FIN+ACK", []knock.TCPFlags{{Set: knock.FIN}}, knock.FIN | knock.ACK, 7010, SnapKnock},
		{"fin door: SYN", []knock.TCPFlags{{Set: knock.FIN}}, knock.SYN, 7010, 0},
		{"syn and fin doors: SYN", []knock.TCPFlags{synNoAck, {Set: knock.FIN}}, knock.SYN, 7010, SnapKnock},
		{"syn and fin doors: FIN", []knock.TCPFlags{synNoAck, {Set: knock.FIN}}, knock.FIN, 7010, SnapKnock},
		{"syn and fin doors: ACK", []knock.TCPFlags{synNoAck, {Set: knock.FIN}}, knock.ACK, 7010, 0},
		{"syn door: FIN", []knock.TCPFlags{synNoAck}, knock.FIN, 7010, 0},
		{"no flags given: SYN", nil, knock.SYN, 7010, SnapKnock},
		{"no flags given: FIN", nil, knock.FIN, 7010, 0},
		{"no flags given: SYN+ACK", nil, knock.SYN | knock.ACK, 7010, 0},
		{"impossible condition passes nothing", []knock.TCPFlags{{Set: knock.SYN, Clear: knock.SYN}}, knock.SYN, 7010, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prog, err := Compile(Filter{Knocks: knocks, Guards: guards, GuardFlags: tt.flags})
			if err != nil {
				t.Fatal(err)
			}
			for _, v6 := range []bool{false, true} {
				p := pk{v6: v6, proto: ipProtoTCP, dport: tt.port, flags: tt.pkt}
				if got := runFilter(t, prog, p.build(), 0); got != tt.want {
					t.Errorf("v6=%v: filter = %d, want %d", v6, got, tt.want)
				}
			}
		})
	}
}

// TestCompilePayloads: a UDP or ICMP knock with a payload passes only with exactly that payload
// (length and bytes, every chunk size, IPv4 with options and IPv6); other knocks are unchanged.
func TestCompilePayloads(t *testing.T) {
	for _, payload := range []string{"\x01", "\xca\xfe", "\xca\xfe\x01", "knock", "\x00\x01\x02\x03\x04\x05\x06", string(make([]byte, MaxPayload))} {
		f := Filter{Knocks: []Knock{
			{Port: netport.Port{Proto: netport.UDP, Num: 8000}, Payload: payload},
			{Port: netport.Port{Proto: netport.UDP, Num: 8001}},
			{Port: netport.Port{Proto: netport.ICMP}, Payload: payload},
			{Port: netport.Port{Proto: netport.TCP, Num: 7000}},
		}, Guards: []PortRange{{Proto: netport.UDP, Lo: 7990, Hi: 8010}}}
		prog, err := Compile(f)
		if err != nil {
			t.Fatal(err)
		}
		wrong := []byte(payload)
		wrong[len(wrong)-1] ^= 0x80
		tests := []struct {
			name string
			p    pk
			want int
		}{
			{"udp right", pk{proto: ipProtoUDP, dport: 8000, payload: []byte(payload)}, SnapKnock},
			{"udp right, options", pk{proto: ipProtoUDP, dport: 8000, options: 8, payload: []byte(payload)}, SnapKnock},
			{"udp right v6", pk{v6: true, proto: ipProtoUDP, dport: 8000, payload: []byte(payload)}, SnapKnock},
			{"udp wrong last byte", pk{proto: ipProtoUDP, dport: 8000, payload: wrong}, 0},
			{"udp longer", pk{proto: ipProtoUDP, dport: 8000, payload: append([]byte(payload), 0)}, 0},
			{"udp shorter", pk{proto: ipProtoUDP, dport: 8000, payload: []byte(payload)[:len(payload)-1]}, 0},
			{"udp empty", pk{proto: ipProtoUDP, dport: 8000}, 0},
			{"udp other knock", pk{proto: ipProtoUDP, dport: 8001, payload: []byte{0}}, SnapKnock},
			{"udp guard", pk{proto: ipProtoUDP, dport: 8002}, SnapKnock},
			{"tcp knock", pk{proto: ipProtoTCP, dport: 7000, flags: knock.SYN}, SnapKnock},
			{"icmp right", pk{proto: ipProtoICMP, icmpType: ICMPEcho, payload: []byte(payload)}, SnapKnock},
			{"icmp right, options", pk{proto: ipProtoICMP, icmpType: ICMPEcho, options: 12, payload: []byte(payload)}, SnapKnock},
			{"icmp right v6", pk{v6: true, proto: ipProtoICMPv6, icmpType: ICMPv6Echo, payload: []byte(payload)}, SnapKnock},
			{"icmp wrong", pk{proto: ipProtoICMP, icmpType: ICMPEcho, payload: wrong}, 0},
			{"icmp wrong v6", pk{v6: true, proto: ipProtoICMPv6, icmpType: ICMPv6Echo, payload: wrong}, 0},
			{"icmp longer", pk{proto: ipProtoICMP, icmpType: ICMPEcho, payload: append([]byte(payload), 0)}, 0},
			{"icmp plain ping", pk{proto: ipProtoICMP, icmpType: ICMPEcho, payload: make([]byte, 56)}, 0},
			{"icmp reply", pk{proto: ipProtoICMP, icmpType: ICMPEchoReply, payload: []byte(payload)}, 0},
		}
		for _, tt := range tests {
			if got := runFilter(t, prog, tt.p.build(), 0); got != tt.want {
				t.Errorf("payload %x: %s: filter = %d, want %d", payload, tt.name, got, tt.want)
			}
		}
	}
	// With SPA in pings every echo passes whole: user space checks the knock's payload.
	prog, err := Compile(Filter{Knocks: []Knock{{Port: netport.Port{Proto: netport.ICMP}, Payload: "k"}}, SPAICMP: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := runFilter(t, prog, pk{proto: ipProtoICMP, icmpType: ICMPEcho, payload: []byte("x")}.build(), 0); got != SnapSPA {
		t.Errorf("SPAICMP: filter = %d, want %d", got, SnapSPA)
	}
	for _, tc := range []struct {
		name string
		f    Filter
	}{
		{"tcp payload", Filter{Knocks: []Knock{{Port: netport.Port{Proto: netport.TCP, Num: 1}, Payload: "x"}}}},
		{"too long", Filter{Knocks: []Knock{{Port: netport.Port{Proto: netport.UDP, Num: 1}, Payload: string(make([]byte, MaxPayload+1))}}}},
		{"two payloads", Filter{Knocks: []Knock{{Port: netport.Port{Proto: netport.UDP, Num: 1}, Payload: "x"}, {Port: netport.Port{Proto: netport.UDP, Num: 1}, Payload: "y"}}}},
		{"with and without", Filter{Knocks: []Knock{{Port: netport.Port{Proto: netport.UDP, Num: 1}, Payload: "x"}, {Port: netport.Port{Proto: netport.UDP, Num: 1}}}}},
		{"spa port", Filter{Knocks: []Knock{{Port: netport.Port{Proto: netport.UDP, Num: 62201}, Payload: "x"}}, SPA: []uint16{62201}}},
	} {
		if _, err := Compile(tc.f); err == nil {
			t.Errorf("%s: Compile succeeded", tc.name)
		}
	}
}

// TestCompileDecoys: a decoy port passes connection attempts (SYN without ACK) only, on IPv4 and
// IPv6, beside knocks on other ports; the rest of its handshake and other ports do not pass.
func TestCompileDecoys(t *testing.T) {
	f := Filter{Knocks: []Knock{{Port: netport.Port{Proto: netport.TCP, Num: 7000}}}, Decoys: []uint16{2323, 3389}}
	prog, err := Compile(f)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		port  uint16
		flags uint8
		want  int
	}{
		{"SYN to a decoy", 2323, knock.SYN, SnapKnock},
		{"SYN to the other decoy", 3389, knock.SYN, SnapKnock},
		{"ACK of the handshake", 2323, knock.ACK, 0},
		{"SYN+ACK", 2323, knock.SYN | knock.ACK, 0},
		{"data", 2323, knock.PSH | knock.ACK, 0},
		{"SYN to a port next to it", 2324, knock.SYN, 0},
		{"knock port any flags", 7000, knock.ACK, SnapKnock},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, v6 := range []bool{false, true} {
				p := pk{v6: v6, proto: ipProtoTCP, dport: tt.port, flags: tt.flags}
				if got := runFilter(t, prog, p.build(), 0); got != tt.want {
					t.Errorf("v6=%v: filter = %d, want %d", v6, got, tt.want)
				}
			}
		})
	}
	if _, err := Compile(Filter{Decoys: []uint16{0}}); err == nil {
		t.Error("decoy port 0 compiled")
	}
}
