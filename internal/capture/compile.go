package capture

import (
	"cmp"
	"errors"
	"fmt"
	"slices"

	"golang.org/x/net/bpf"

	"github.com/sesame-knock/sesame/internal/knock"
	"github.com/sesame-knock/sesame/internal/netport"
)

// MaxInstructions is the kernel's limit on the length of a classic BPF program (BPF_MAXINSNS).
const MaxInstructions = 4096

// ErrProgramTooLong reports a filter whose program would exceed MaxInstructions.
var ErrProgramTooLong = errors.New("filter program exceeds the kernel's 4096 instructions")

// Values of the ancillary loads and header fields the program tests.
const (
	etherTypeIPv4  = 0x0800
	etherTypeIPv6  = 0x86dd
	packetOutgoing = 4 // PACKET_OUTGOING, as in skb->pkt_type
	ipProtoICMP    = 1
	ipProtoTCP     = 6
	ipProtoUDP     = 17
	ipProtoICMPv6  = 58
)

// Compile builds a classic BPF program for an AF_PACKET SOCK_DGRAM socket of protocol ETH_P_ALL.
// Such a socket hands the program the packet from its network header on every link type
// (Ethernet, tun, WireGuard, cooked), so IPv4 and IPv6 are handled alike everywhere.
//
// The program drops copies of outgoing packets (packet type PACKET_OUTGOING), tells IPv4 from
// IPv6 by the packet's protocol (the SKF_AD_PROTOCOL ancillary load), honours a variable IPv4
// header length, drops IPv4 non-first fragments and IPv4 headers shorter than 20 bytes, and
// accepts only packets that match f (knocks, guards, SPA ports and SYNs to decoy ports): it
// returns SnapSPA for UDP datagrams to SPA ports and, with f.SPAICMP, for ICMP echo requests and
// IPv4 echo replies, and SnapKnock for other matches. On IPv6 the next header must be TCP, UDP or ICMPv6 directly:
// extension headers are not followed, so packets carrying them never match (knockd behaves the
// same way). Ports are merged into ranges to keep the program short.
func Compile(f Filter) ([]bpf.Instruction, error) {
	tcpGroups, udp, spa, icmp, err := sortFilter(f)
	if err != nil {
		return nil, fmt.Errorf("capture: compile: %w", err)
	}
	udpPayloads, icmpPayload, err := payloads(f, spa)
	if err != nil {
		return nil, fmt.Errorf("capture: compile: %w", err)
	}
	for _, k := range udpPayloads {
		udp = subtract(udp, []portRange{{k.Port.Num, k.Port.Num}})
	}
	icmp = icmp || f.SPAICMP
	var a asm
	hasTCP, hasUDP := len(tcpGroups) > 0, len(udp)+len(spa)+len(udpPayloads) > 0
	if !hasTCP && !hasUDP && !icmp {
		a.emit(bpf.RetConstant{Val: 0})
		return a.finish()
	}

	// Prologue: drop outgoing copies; dispatch on the network protocol.
	a.emit(bpf.LoadExtension{Num: bpf.ExtType})
	a.emit(bpf.JumpIf{Cond: bpf.JumpEqual, Val: packetOutgoing, SkipTrue: 4})
	a.emit(bpf.LoadExtension{Num: bpf.ExtProto})
	a.emit(bpf.JumpIf{Cond: bpf.JumpEqual, Val: etherTypeIPv4, SkipTrue: 3})
	a.emit(bpf.JumpIf{Cond: bpf.JumpEqual, Val: etherTypeIPv6, SkipFalse: 1})
	a.jump("ip6")
	a.emit(bpf.RetConstant{Val: 0})

	// IPv4: no non-first fragments, X = header length (at least 20), A = protocol.
	a.emit(bpf.LoadAbsolute{Off: 6, Size: 2})
	a.emit(bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: 0x1fff, SkipTrue: 3})
	a.emit(bpf.LoadMemShift{Off: 0})
	a.emit(bpf.TXA{})
	a.emit(bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: 20, SkipTrue: 1})
	a.emit(bpf.RetConstant{Val: 0})
	a.emit(bpf.LoadAbsolute{Off: 9, Size: 1})
	a.dispatch(hasTCP, hasUDP, icmp, ipProtoICMP, "icmp4")

	// IPv6: X = 40, A = next header.
	a.label("ip6")
	a.emit(bpf.LoadConstant{Dst: bpf.RegX, Val: 40})
	a.emit(bpf.LoadAbsolute{Off: 6, Size: 1})
	a.dispatch(hasTCP, hasUDP, icmp, ipProtoICMPv6, "icmp6")

	if hasTCP {
		a.label("tcp")
		for i, g := range tcpGroups {
			next := fmt.Sprintf("tcp%d", i+1)
			a.emit(bpf.LoadIndirect{Off: 2, Size: 2})
			match := fmt.Sprintf("tcp%dmatch", i)
			noFlags := g.flags.Set == 0 && g.flags.Clear == 0
			for _, r := range g.ports {
				if noFlags {
					a.rangeReturn(r, SnapKnock)
				} else {
					a.rangeJump(r, match)
				}
			}
			if !noFlags {
				a.jump(next)
				a.label(match)
				a.emit(bpf.LoadIndirect{Off: 13, Size: 1})
				a.emit(bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: uint32(g.flags.Set | g.flags.Clear)})
				a.emit(bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(g.flags.Set), SkipFalse: 1})
				a.emit(bpf.RetConstant{Val: SnapKnock})
			}
			a.label(next)
		}
		a.emit(bpf.RetConstant{Val: 0})
	}
	if hasUDP {
		a.label("udp")
		a.emit(bpf.LoadIndirect{Off: 2, Size: 2})
		for _, r := range spa {
			a.rangeReturn(r, SnapSPA)
		}
		for i, k := range udpPayloads {
			// A knock port whose payload must match: UDP length 8+n, then the bytes.
			next := fmt.Sprintf("udppayload%d", i)
			a.emit(bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(k.Port.Num), SkipFalse: 1})
			a.jump(next + "match")
			a.jump(next)
			a.label(next + "match")
			a.emit(bpf.LoadIndirect{Off: 4, Size: 2})
			a.payloadTest(8+len(k.Payload), k.Payload)
			a.emit(bpf.RetConstant{Val: SnapKnock})
			a.label(next)
			a.emit(bpf.LoadIndirect{Off: 2, Size: 2})
		}
		for _, r := range udp {
			a.rangeReturn(r, SnapKnock)
		}
		a.emit(bpf.RetConstant{Val: 0})
	}
	if icmp {
		// Echo requests; with SPAICMP whole, and IPv4 echo replies too (fwknop's default).
		snap := uint32(SnapKnock)
		if f.SPAICMP {
			snap = SnapSPA
		}
		// An ICMP knock's payload is checked here unless SPA in pings wants every echo whole
		// (user space checks it then): the echo data is the IP payload after 8 bytes.
		checkPayload := icmpPayload != "" && !f.SPAICMP
		a.label("icmp4")
		a.emit(bpf.LoadIndirect{Off: 0, Size: 1})
		if f.SPAICMP {
			a.emit(bpf.JumpIf{Cond: bpf.JumpEqual, Val: ICMPEchoReply, SkipFalse: 1})
			a.emit(bpf.RetConstant{Val: SnapSPA})
		}
		a.emit(bpf.JumpIf{Cond: bpf.JumpEqual, Val: ICMPEcho, SkipTrue: 1})
		a.emit(bpf.RetConstant{Val: 0})
		if checkPayload {
			a.emit(bpf.LoadAbsolute{Off: 2, Size: 2}) // IPv4 total length, less the header
			a.emit(bpf.ALUOpX{Op: bpf.ALUOpSub})
			a.payloadTest(8+len(icmpPayload), icmpPayload)
		}
		a.emit(bpf.RetConstant{Val: snap})
		a.label("icmp6")
		a.emit(bpf.LoadIndirect{Off: 0, Size: 1})
		a.emit(bpf.JumpIf{Cond: bpf.JumpEqual, Val: ICMPv6Echo, SkipTrue: 1})
		a.emit(bpf.RetConstant{Val: 0})
		if checkPayload {
			a.emit(bpf.LoadAbsolute{Off: 4, Size: 2}) // IPv6 payload length
			a.payloadTest(8+len(icmpPayload), icmpPayload)
		}
		a.emit(bpf.RetConstant{Val: snap})
	}
	return a.finish()
}

// payloads returns the UDP knocks that must carry a payload, sorted by port, and the payload an
// ICMP knock must carry ("" for none). A port may have one payload only, and not be an SPA port.
func payloads(f Filter, spa []portRange) (udp []Knock, icmp string, err error) {
	seen := map[netport.Port]string{}
	for _, k := range f.Knocks {
		if k.Payload == "" {
			continue
		}
		switch {
		case len(k.Payload) > MaxPayload:
			return nil, "", fmt.Errorf("knock %v: payload of %d bytes, more than %d", k.Port, len(k.Payload), MaxPayload)
		case k.Port.Proto != netport.UDP && k.Port.Proto != netport.ICMP:
			return nil, "", fmt.Errorf("knock %v: only udp and icmp knocks carry a payload", k.Port)
		}
		if p, ok := seen[k.Port]; ok {
			if p != k.Payload {
				return nil, "", fmt.Errorf("knock %v: two payloads", k.Port)
			}
			continue
		}
		seen[k.Port] = k.Payload
		if k.Port.Proto == netport.ICMP {
			icmp = k.Payload
			continue
		}
		for _, r := range spa {
			if k.Port.Num >= r.lo && k.Port.Num <= r.hi {
				return nil, "", fmt.Errorf("knock %v: an SPA port", k.Port)
			}
		}
		udp = append(udp, k)
	}
	for _, k := range f.Knocks {
		if k.Payload == "" && seen[k.Port] != "" {
			return nil, "", fmt.Errorf("knock %v: with and without a payload", k.Port)
		}
	}
	slices.SortFunc(udp, func(a, b Knock) int { return cmp.Compare(a.Port.Num, b.Port.Num) })
	return udp, icmp, nil
}

// payloadTest returns 0 unless A (the transport length) is n and the bytes at X+8 on are p;
// it goes on otherwise.
func (a *asm) payloadTest(n int, p string) {
	a.emit(bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(n), SkipTrue: 1})
	a.emit(bpf.RetConstant{Val: 0})
	for off := 0; off < len(p); {
		size := 4
		for off+size > len(p) {
			size /= 2
		}
		var v uint32
		for _, c := range []byte(p[off : off+size]) {
			v = v<<8 | uint32(c)
		}
		a.emit(bpf.LoadIndirect{Off: uint32(8 + off), Size: size})
		a.emit(bpf.JumpIf{Cond: bpf.JumpEqual, Val: v, SkipTrue: 1})
		a.emit(bpf.RetConstant{Val: 0})
		off += size
	}
}

// DropAll is a program that accepts nothing.
func DropAll() []bpf.Instruction {
	return []bpf.Instruction{bpf.RetConstant{Val: 0}}
}

type portRange struct{ lo, hi uint16 }

type tcpGroup struct {
	flags knock.TCPFlags
	ports []portRange
}

// sortFilter validates f and sorts its ports into merged ranges: TCP ranges grouped by flag
// condition, UDP knock and guard ranges, SPA ranges, and whether ICMP echo is wanted.
func sortFilter(f Filter) (tcp []tcpGroup, udp, spa []portRange, icmp bool, err error) {
	byFlags := map[knock.TCPFlags][]portRange{}
	for _, k := range f.Knocks {
		switch k.Port.Proto {
		case netport.ICMP:
			icmp = true
		case netport.TCP, netport.UDP:
			if k.Port.Num == 0 {
				return nil, nil, nil, false, fmt.Errorf("knock %v: port 0", k.Port)
			}
			r := portRange{k.Port.Num, k.Port.Num}
			if k.Port.Proto == netport.UDP {
				udp = append(udp, r)
				continue
			}
			if k.Flags.Set&k.Flags.Clear != 0 {
				continue // a flag that must be both set and clear: nothing matches
			}
			byFlags[k.Flags] = append(byFlags[k.Flags], r)
		default:
			return nil, nil, nil, false, fmt.Errorf("knock %v: unsupported protocol", k.Port)
		}
	}
	guardFlags := f.GuardFlags
	if len(guardFlags) == 0 {
		guardFlags = []knock.TCPFlags{{Set: knock.SYN, Clear: knock.ACK}}
	}
	for _, g := range f.Guards {
		if g.Lo == 0 || g.Lo > g.Hi {
			return nil, nil, nil, false, fmt.Errorf("guard %v %d-%d: bad port range", g.Proto, g.Lo, g.Hi)
		}
		r := portRange{g.Lo, g.Hi}
		switch g.Proto {
		case netport.TCP:
			for _, fl := range guardFlags {
				if fl.Set&fl.Clear == 0 {
					byFlags[fl] = append(byFlags[fl], r)
				}
			}
		case netport.UDP:
			udp = append(udp, r)
		default:
			return nil, nil, nil, false, fmt.Errorf("guard %v %d-%d: only tcp and udp can be guarded", g.Proto, g.Lo, g.Hi)
		}
	}
	for _, p := range f.Decoys {
		if p == 0 {
			return nil, nil, nil, false, fmt.Errorf("decoy port 0")
		}
		syn := knock.TCPFlags{Set: knock.SYN, Clear: knock.ACK}
		byFlags[syn] = append(byFlags[syn], portRange{p, p})
	}
	for _, p := range f.SPA {
		if p == 0 {
			return nil, nil, nil, false, fmt.Errorf("spa port 0")
		}
		spa = append(spa, portRange{p, p})
	}
	all := mergeRanges(byFlags[knock.TCPFlags{}])
	for fl, rs := range byFlags {
		rs = mergeRanges(rs)
		if fl != (knock.TCPFlags{}) {
			rs = subtract(rs, all) // ports that match on any flags need no further test
		}
		if len(rs) > 0 {
			tcp = append(tcp, tcpGroup{fl, rs})
		}
	}
	slices.SortFunc(tcp, func(a, b tcpGroup) int {
		return cmp.Or(cmp.Compare(a.flags.Set, b.flags.Set), cmp.Compare(a.flags.Clear, b.flags.Clear))
	})
	spa = mergeRanges(spa)
	udp = subtract(mergeRanges(udp), spa)
	return tcp, udp, spa, icmp, nil
}

// mergeRanges sorts rs and merges overlapping and adjacent ranges.
func mergeRanges(rs []portRange) []portRange {
	if len(rs) == 0 {
		return nil
	}
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b portRange) int { return cmp.Compare(a.lo, b.lo) })
	out := []portRange{rs[0]}
	for _, r := range rs[1:] {
		last := &out[len(out)-1]
		if int(r.lo) <= int(last.hi)+1 {
			last.hi = max(last.hi, r.hi)
			continue
		}
		out = append(out, r)
	}
	return out
}

// subtract returns the parts of the merged ranges rs not covered by the merged ranges cut.
func subtract(rs, cut []portRange) []portRange {
	var out []portRange
	for _, r := range rs {
		lo := int(r.lo)
		for _, c := range cut {
			if int(c.hi) < lo || c.lo > r.hi {
				continue
			}
			if int(c.lo) > lo {
				out = append(out, portRange{uint16(lo), c.lo - 1})
			}
			lo = int(c.hi) + 1
		}
		if lo <= int(r.hi) {
			out = append(out, portRange{uint16(lo), r.hi})
		}
	}
	return out
}

// asm collects instructions with named jump targets for unconditional jumps. Conditional
// jumps only ever skip a few instructions, so their 8-bit offsets cannot overflow.
type asm struct {
	ins    []bpf.Instruction
	labels map[string]int
	fixups []fixup
}

type fixup struct {
	at    int
	label string
}

func (a *asm) emit(i bpf.Instruction) { a.ins = append(a.ins, i) }

func (a *asm) label(name string) {
	if a.labels == nil {
		a.labels = map[string]int{}
	}
	a.labels[name] = len(a.ins)
}

// jump emits an unconditional jump to a label.
func (a *asm) jump(label string) {
	a.fixups = append(a.fixups, fixup{len(a.ins), label})
	a.emit(bpf.Jump{})
}

// jumpIfEqual jumps to label when A == val and goes on otherwise.
func (a *asm) jumpIfEqual(val uint32, label string) {
	a.emit(bpf.JumpIf{Cond: bpf.JumpEqual, Val: val, SkipFalse: 1})
	a.jump(label)
}

// dispatch jumps on the transport protocol in A to the tcp, udp or ICMP block, or drops.
func (a *asm) dispatch(tcp, udp, icmp bool, icmpProto uint32, icmpLabel string) {
	if tcp {
		a.jumpIfEqual(ipProtoTCP, "tcp")
	}
	if udp {
		a.jumpIfEqual(ipProtoUDP, "udp")
	}
	if icmp {
		a.jumpIfEqual(icmpProto, icmpLabel)
	}
	a.emit(bpf.RetConstant{Val: 0})
}

// rangeReturn returns snap when the port in A is within r.
func (a *asm) rangeReturn(r portRange, snap uint32) {
	a.rangeTest(r)
	a.emit(bpf.RetConstant{Val: snap})
}

// rangeJump jumps to label when the port in A is within r.
func (a *asm) rangeJump(r portRange, label string) {
	a.rangeTest(r)
	a.jump(label)
}

// rangeTest skips the next instruction unless A is within r.
func (a *asm) rangeTest(r portRange) {
	if r.lo == r.hi {
		a.emit(bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: uint32(r.lo), SkipTrue: 1})
		return
	}
	a.emit(bpf.JumpIf{Cond: bpf.JumpLessThan, Val: uint32(r.lo), SkipTrue: 2})
	a.emit(bpf.JumpIf{Cond: bpf.JumpGreaterThan, Val: uint32(r.hi), SkipTrue: 1})
}

func (a *asm) finish() ([]bpf.Instruction, error) {
	if len(a.ins) > MaxInstructions {
		return nil, fmt.Errorf("capture: compile: %w (%d)", ErrProgramTooLong, len(a.ins))
	}
	for _, f := range a.fixups {
		to, ok := a.labels[f.label]
		if !ok {
			return nil, fmt.Errorf("capture: compile: internal error: no label %q", f.label)
		}
		a.ins[f.at] = bpf.Jump{Skip: uint32(to - f.at - 1)}
	}
	if _, err := bpf.Assemble(a.ins); err != nil {
		return nil, fmt.Errorf("capture: compile: %w", err)
	}
	return a.ins, nil
}
