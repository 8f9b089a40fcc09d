//go:build linux

package nft

import (
	"encoding/binary"

	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/sesame-knock/sesame/internal/firewall"
)

// GateExprs returns the gate chain's rules for gate: RuleExprs, with the final drop of
// protected ports turned into a TCP reset and an ICMP port unreachable in stealth "closed",
// and followed by the dark block (darkExprs) in stealth "dark".
//
//	meta l4proto tcp meta l4proto . th dport @protected reject with tcp reset
//	meta l4proto . th dport @protected reject with icmpx type port-unreachable
func GateExprs(gate firewall.Gate, withDrop bool) [][]expr.Any {
	rules := RuleExprs(withDrop)
	if withDrop && gate.Rejects() {
		rules = rules[:len(rules)-1]
		rules = append(rules,
			[]expr.Any{
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
				&expr.Payload{DestRegister: 9, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
				&expr.Lookup{SourceRegister: 1, SetName: ProtectedSet},
				&expr.Reject{Type: unix.NFT_REJECT_TCP_RST},
			},
			[]expr.Any{
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
				&expr.Payload{DestRegister: 9, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
				&expr.Lookup{SourceRegister: 1, SetName: ProtectedSet},
				&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_PORT_UNREACH},
			})
	}
	if gate.Dark() {
		rules = append(rules, darkExprs(gate.Allow)...)
	}
	return rules
}

// darkExprs is the dark block, after the grant rules and the protected ports' drop, so that an
// allow entry never opens a protected port:
//
//	meta iiftype loopback accept
//	meta l4proto ipv6-icmp icmpv6 type 133-137 accept   (router and neighbour discovery)
//	meta l4proto tcp tcp flags & syn == 0 socket wildcard 0 accept   (pick-up, see below)
//	ip saddr 198.51.100.0/24 meta l4proto tcp th dport 22 accept   (one per allow entry)
//	drop
//
// The pick-up rule keeps connections that were running before the gate loaded: on a host with
// no firewall of its own conntrack only starts tracking when sesame's table appears, and the
// next segment of such a connection (the admin's ssh session) is then "new". A TCP segment
// without SYN that belongs to a socket bound to a specific address (an established connection,
// or a listener on one address; socket wildcard 0) passes and conntrack picks the connection up.
func darkExprs(allow []firewall.Allow) [][]expr.Any {
	rules := [][]expr.Any{
		{
			&expr.Meta{Key: expr.MetaKeyIIFTYPE, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint16(unix.ARPHRD_LOOPBACK)},
			&expr.Verdict{Kind: expr.VerdictAccept},
		},
		{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_ICMPV6}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
			&expr.Cmp{Op: expr.CmpOpGte, Register: 1, Data: []byte{133}},
			&expr.Cmp{Op: expr.CmpOpLte, Register: 1, Data: []byte{137}},
			&expr.Verdict{Kind: expr.VerdictAccept},
		},
		{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x02}, Xor: []byte{0}},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0}},
			&expr.Socket{Key: expr.SocketKeyWildcard, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0}},
			&expr.Verdict{Kind: expr.VerdictAccept},
		},
	}
	for _, a := range allow {
		rules = append(rules, allowExprs(a))
	}
	return append(rules, []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}})
}

// allowExprs matches one allow entry: family, source network and, if set, protocol and port.
func allowExprs(a firewall.Allow) []expr.Any {
	p := a.Prefix.Masked()
	addr := p.Addr().AsSlice()
	fam, off := byte(unix.NFPROTO_IPV4), uint32(12)
	if p.Addr().Is6() {
		fam, off = unix.NFPROTO_IPV6, 8
	}
	mask := make([]byte, len(addr))
	for i := range p.Bits() {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	e := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{fam}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: uint32(len(addr))},
	}
	if p.Bits() < len(addr)*8 {
		e = append(e, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: uint32(len(addr)), Mask: mask, Xor: make([]byte, len(addr))})
	}
	e = append(e, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: addr})
	if a.Port.Num != 0 {
		e = append(e,
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{byte(a.Port.Proto)}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, a.Port.Num)},
		)
	}
	return append(e, &expr.Verdict{Kind: expr.VerdictAccept})
}
