//go:build linux

package nft

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/netport"
)

// Forwarding lives in a table of its own, inet TABLE_nat (sesame_nat), so that the gate's Apply
// never touches it and a host without forwards has none of it:
//
//	table inet sesame_nat {
//		map fwd4   { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; flags timeout; }
//		map fwd6   { type ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service; flags timeout; }
//		map local4 { type ipv4_addr . inet_proto . inet_service : inet_service; flags timeout; }
//		map local6 { type ipv6_addr . inet_proto . inet_service : inet_service; flags timeout; }
//		set flows4 { type ipv4_addr . inet_proto . ipv4_addr . inet_service; flags timeout; }
//		set flows6 { type ipv6_addr . inet_proto . ipv6_addr . inet_service; flags timeout; }
//		set dests4 { type ipv4_addr . inet_proto . inet_service; }
//		set dests6 { type ipv6_addr . inet_proto . inet_service; }
//		chain prerouting {
//			type nat hook prerouting priority dstnat; policy accept;
//			meta nfproto ipv4 dnat ip to ip saddr . meta l4proto . th dport map @fwd4
//			meta nfproto ipv6 dnat ip6 to ip6 saddr . meta l4proto . th dport map @fwd6
//			meta nfproto ipv4 redirect to ip saddr . meta l4proto . th dport map @local4
//			meta nfproto ipv6 redirect to ip6 saddr . meta l4proto . th dport map @local6
//		}
//		chain forward {
//			type filter hook forward priority -10; policy accept;
//			ct state established,related accept
//			meta nfproto ipv4 ip saddr . meta l4proto . ip daddr . th dport @flows4 ct mark set ct mark | 0x20000000 accept
//			meta nfproto ipv6 ip6 saddr . meta l4proto . ip6 daddr . th dport @flows6 ct mark set ct mark | 0x20000000 accept
//			meta nfproto ipv4 ip daddr . meta l4proto . th dport @dests4 drop
//			meta nfproto ipv6 ip6 daddr . meta l4proto . th dport @dests6 drop
//		}
//	}
//
// A forward is three elements with one timeout, added in one batch: the map entry that
// translates the source's new connections to the gateway port, the flow the forward chain
// accepts (source . proto . destination . port, after translation) and, for local forwards
// (redirects), a gate grant for the local port, as fwknopd's local NAT adds an INPUT accept.

// Names of the forwarding table's objects.
const (
	NATSuffix  = "_nat"
	Fwd4Map    = "fwd4"
	Fwd6Map    = "fwd6"
	Local4Map  = "local4"
	Local6Map  = "local6"
	Flows4Set  = "flows4"
	Flows6Set  = "flows6"
	Dests4Set  = "dests4"
	Dests6Set  = "dests6"
	PreChain   = "prerouting"
	FwdChain   = "forward"
	FwdChainPr = -10
)

var _ firewall.Forwarder = (*Backend)(nil)

// natObjects are the forwarding table and its sets for the gate table name.
type natObjects struct {
	table                          *nftables.Table
	fwd4, fwd6, local4, local6     *nftables.Set
	flows4, flows6, dests4, dests6 *nftables.Set
}

func newNATObjects(gateTable string) natObjects {
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: gateTable + NATSuffix}
	key4 := nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService)
	key6 := nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeInetProto, nftables.TypeInetService)
	m := func(name string, key, data nftables.SetDatatype) *nftables.Set {
		return &nftables.Set{Table: t, Name: name, KeyType: key, DataType: data, IsMap: true, Concatenation: true, HasTimeout: true}
	}
	s := func(name string, key nftables.SetDatatype, timeout bool) *nftables.Set {
		return &nftables.Set{Table: t, Name: name, KeyType: key, Concatenation: true, HasTimeout: timeout}
	}
	return natObjects{
		table:  t,
		fwd4:   m(Fwd4Map, key4, nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)),
		fwd6:   m(Fwd6Map, key6, nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeInetService)),
		local4: m(Local4Map, key4, nftables.TypeInetService),
		local6: m(Local6Map, key6, nftables.TypeInetService),
		flows4: s(Flows4Set, nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeIPAddr, nftables.TypeInetService), true),
		flows6: s(Flows6Set, nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeInetProto, nftables.TypeIP6Addr, nftables.TypeInetService), true),
		dests4: s(Dests4Set, key4, false),
		dests6: s(Dests6Set, key6, false),
	}
}

func (o natObjects) sets() []*nftables.Set {
	return []*nftables.Set{o.fwd4, o.fwd6, o.local4, o.local6, o.flows4, o.flows6, o.dests4, o.dests6}
}

// port4 is a port as a register holds it: big endian, padded to 4 bytes.
func port4(p uint16) []byte { return []byte{byte(p >> 8), byte(p), 0, 0} }

// fwdVal is a fwd4/fwd6 map value: the destination address and port.
func fwdVal(to netip.AddrPort) []byte {
	return append(to.Addr().Unmap().AsSlice(), port4(to.Port())...)
}

// flowKey is a flows4/flows6 key: source . proto . destination . destination port.
func flowKey(f firewall.Grant) []byte {
	k := f.Src.Unmap().AsSlice()
	k = append(k, byte(f.Port.Proto), 0, 0, 0)
	k = append(k, f.To.Addr().Unmap().AsSlice()...)
	return append(k, port4(f.To.Port())...)
}

// local reports whether f redirects to this host.
func local(f firewall.Grant) bool { return f.To.Addr().IsUnspecified() }

// natRuleExprs are the rules of the prerouting chain (first) and the forward chain.
func natRuleExprs() (pre, fwd [][]expr.Any) {
	nfproto := func(p byte) []expr.Any {
		return []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
		}
	}
	// Source . proto . dport into registers 8.. (IPv4: 8, 9, 10; IPv6: 8-11, 12, 13).
	key := func(v6 bool, addrOff uint32) []expr.Any {
		if v6 {
			return []expr.Any{
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: addrOff, Len: 16},
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 12},
				&expr.Payload{DestRegister: 13, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			}
		}
		return []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: addrOff, Len: 4},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 9},
			&expr.Payload{DestRegister: 10, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		}
	}
	cat := func(parts ...[]expr.Any) []expr.Any {
		var out []expr.Any
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	v4, v6 := byte(unix.NFPROTO_IPV4), byte(unix.NFPROTO_IPV6)
	pre = [][]expr.Any{
		cat(nfproto(v4), key(false, 12), []expr.Any{
			&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: Fwd4Map},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 9, Specified: true},
		}),
		cat(nfproto(v6), key(true, 8), []expr.Any{
			&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: Fwd6Map},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV6, RegAddrMin: 1, RegProtoMin: 12, Specified: true},
		}),
		cat(nfproto(v4), key(false, 12), []expr.Any{
			&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: Local4Map},
			&expr.Redir{RegisterProtoMin: 1, Flags: 0x2}, // NF_NAT_RANGE_PROTO_SPECIFIED
		}),
		cat(nfproto(v6), key(true, 8), []expr.Any{
			&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: Local6Map},
			&expr.Redir{RegisterProtoMin: 1, Flags: 0x2},
		}),
	}
	zero := []byte{0, 0, 0, 0}
	mark := func() []expr.Any {
		return []expr.Any{
			&expr.Ct{Register: 1, Key: expr.CtKeyMARK},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(^firewall.ConnMark), Xor: binaryutil.NativeEndian.PutUint32(firewall.ConnMark)},
			&expr.Ct{Register: 1, Key: expr.CtKeyMARK, SourceRegister: true},
			&expr.Verdict{Kind: expr.VerdictAccept},
		}
	}
	fwd = [][]expr.Any{
		{
			&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED), Xor: zero},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: zero},
			&expr.Verdict{Kind: expr.VerdictAccept},
		},
		cat(nfproto(v4), []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 9},
			&expr.Payload{DestRegister: 10, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Payload{DestRegister: 11, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Lookup{SourceRegister: 1, SetName: Flows4Set},
		}, mark()),
		cat(nfproto(v6), []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 8, Len: 16},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 12},
			&expr.Payload{DestRegister: 13, Base: expr.PayloadBaseNetworkHeader, Offset: 24, Len: 16},
			&expr.Payload{DestRegister: 17, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Lookup{SourceRegister: 1, SetName: Flows6Set},
		}, mark()),
		cat(nfproto(v4), key(false, 16), []expr.Any{
			&expr.Lookup{SourceRegister: 1, SetName: Dests4Set},
			&expr.Verdict{Kind: expr.VerdictDrop},
		}),
		cat(nfproto(v6), key(true, 24), []expr.Any{
			&expr.Lookup{SourceRegister: 1, SetName: Dests6Set},
			&expr.Verdict{Kind: expr.VerdictDrop},
		}),
	}
	return pre, fwd
}

// carryMap is carryOver for map elements: each keeps its value and the time it has left.
func carryMap(elems []nftables.SetElement, keyLen int) []nftables.SetElement {
	var out []nftables.SetElement
	for _, e := range elems {
		if len(e.Key) != keyLen || e.Expires < time.Millisecond {
			continue
		}
		out = append(out, nftables.SetElement{Key: e.Key, Val: e.Val, Timeout: e.Expires})
	}
	return out
}

// ApplyForwarding creates or atomically replaces table inet TABLE_nat, carrying every live
// forward over with the time it has left, and sets the destinations forwards may reach (new
// connections to them through this host are dropped unless a forward admitted them).
func (b *Backend) ApplyForwarding(ctx context.Context, dests []firewall.Destination) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return errClosed
	}
	o := newNATObjects(b.table.Name)
	var d4, d6 []nftables.SetElement
	for _, d := range dests {
		if err := firewall.CheckPort(d.Port); err != nil || !d.Addr.IsValid() || d.Addr.IsUnspecified() {
			return fmt.Errorf("firewall nft: forward destination %s %s: not a tcp or udp service on an address", d.Addr, d.Port)
		}
		el := nftables.SetElement{Key: GrantKey(d.Addr, d.Port)}
		if d.Addr.Unmap().Is4() {
			d4 = append(d4, el)
		} else {
			d6 = append(d6, el)
		}
	}
	var err error
	for try := 0; try < maxApplyTries; try++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		gen, err := b.conn.GetGen()
		if err != nil {
			return fmt.Errorf("firewall nft: read ruleset generation: %w", err)
		}
		live := map[*nftables.Set][]nftables.SetElement{}
		for _, s := range []*nftables.Set{o.fwd4, o.fwd6, o.local4, o.local6, o.flows4, o.flows6} {
			el, err := b.readLive(s)
			if err != nil {
				return fmt.Errorf("firewall nft: read live forwards: %w", err)
			}
			live[s] = el
		}
		c := b.conn
		c.AddTable(o.table)
		c.DelTable(o.table)
		c.AddTable(o.table)
		add := func(s *nftables.Set, el []nftables.SetElement) {
			if err == nil {
				err = c.AddSet(s, el)
			}
		}
		add(o.fwd4, carryMap(live[o.fwd4], key4Len))
		add(o.fwd6, carryMap(live[o.fwd6], key6Len))
		add(o.local4, carryMap(live[o.local4], key4Len))
		add(o.local6, carryMap(live[o.local6], key6Len))
		add(o.flows4, carryOver(live[o.flows4], 16))
		add(o.flows6, carryOver(live[o.flows6], 40))
		add(o.dests4, d4)
		add(o.dests6, d6)
		if err != nil {
			c.Flush()
			return fmt.Errorf("firewall nft: build forwarding table: %w", err)
		}
		pre := c.AddChain(&nftables.Chain{Name: PreChain, Table: o.table, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest, Policy: ptr(nftables.ChainPolicyAccept)})
		fwd := c.AddChain(&nftables.Chain{Name: FwdChain, Table: o.table, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityRef(FwdChainPr), Policy: ptr(nftables.ChainPolicyAccept)})
		byName := map[string]*nftables.Set{}
		for _, s := range o.sets() {
			byName[s.Name] = s
		}
		preRules, fwdRules := natRuleExprs()
		for ch, rules := range map[*nftables.Chain][][]expr.Any{pre: preRules, fwd: fwdRules} {
			for _, exprs := range rules {
				for _, e := range exprs {
					if l, ok := e.(*expr.Lookup); ok {
						l.SetID = byName[l.SetName].ID
					}
				}
				c.AddRule(&nftables.Rule{Table: o.table, Chain: ch, Exprs: exprs})
			}
		}
		err = c.FlushWithGenID(gen.ID)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.ERESTART) {
			return fmt.Errorf("firewall nft: replace table inet %s: %w", o.table.Name, err)
		}
	}
	return fmt.Errorf("firewall nft: replace table inet %s: ruleset kept changing: %w", o.table.Name, err)
}

// forwardElems are the elements of each forward, per set: map entries and flows, and for
// local forwards the gate grant of the local port.
func (b *Backend) forwardElems(o natObjects, fwds []firewall.Grant, add bool) map[*nftables.Set][]nftables.SetElement {
	out := map[*nftables.Set][]nftables.SetElement{}
	for _, f := range fwds {
		v4 := f.Src.Unmap().Is4()
		key := GrantKey(f.Src, f.Port)
		tmo := time.Duration(0)
		if add {
			tmo = f.Timeout
		}
		if local(f) {
			m := o.local6
			if v4 {
				m = o.local4
			}
			var val []byte
			if add {
				val = []byte{byte(f.To.Port() >> 8), byte(f.To.Port())}
			}
			out[m] = append(out[m], nftables.SetElement{Key: key, Val: val, Timeout: tmo})
			g := b.setFor(f.Src)
			out[g] = append(out[g], nftables.SetElement{Key: GrantKey(f.Src, netport.Port{Proto: f.Port.Proto, Num: f.To.Port()}), Timeout: tmo})
			continue
		}
		m, fl := o.fwd6, o.flows6
		if v4 {
			m, fl = o.fwd4, o.flows4
		}
		var val []byte
		if add {
			val = fwdVal(f.To)
		}
		out[m] = append(out[m], nftables.SetElement{Key: key, Val: val, Timeout: tmo})
		out[fl] = append(out[fl], nftables.SetElement{Key: flowKey(f), Timeout: tmo})
	}
	return out
}

// Forward adds or refreshes forwards in one atomic batch (each element destroyed, if present,
// and added again with the new timeout). ApplyForwarding must have created the table, and
// Apply the gate (local forwards add a gate grant).
func (b *Backend) Forward(ctx context.Context, fwds ...firewall.Grant) error {
	return b.changeForwards(ctx, "forward", fwds, true)
}

// Unforward removes forwards; absent ones are ignored.
func (b *Backend) Unforward(ctx context.Context, fwds ...firewall.Grant) error {
	return b.changeForwards(ctx, "unforward", fwds, false)
}

func (b *Backend) changeForwards(ctx context.Context, op string, fwds []firewall.Grant, add bool) error {
	if err := firewall.CheckForwards(fwds, add); err != nil {
		return fmt.Errorf("firewall nft: %w", err)
	}
	if len(fwds) == 0 {
		return nil
	}
	if err := b.lock(ctx); err != nil {
		return err
	}
	defer b.mu.Unlock()
	o := newNATObjects(b.table.Name)
	for s, elems := range b.forwardElems(o, fwds, add) {
		del := make([]nftables.SetElement, len(elems))
		for i, e := range elems {
			del[i] = nftables.SetElement{Key: e.Key}
		}
		if err := b.conn.SetDestroyElements(s, del); err != nil {
			b.conn.Flush()
			return fmt.Errorf("firewall nft: %s: %w", op, err)
		}
		if !add {
			continue
		}
		if err := b.conn.SetAddElements(s, elems); err != nil {
			b.conn.Flush()
			return fmt.Errorf("firewall nft: %s: %w", op, err)
		}
	}
	if err := b.conn.Flush(); err != nil {
		if errors.Is(err, syscall.ENOENT) {
			return fmt.Errorf("firewall nft: %s: table inet %s or its maps are missing (ApplyForwarding not called): %w", op, o.table.Name, err)
		}
		return b.opError(op, err)
	}
	return nil
}

// ListForwards returns the live forwards with the time each has left in Timeout.
func (b *Backend) ListForwards(ctx context.Context) ([]firewall.Grant, error) {
	if err := b.lock(ctx); err != nil {
		return nil, err
	}
	defer b.mu.Unlock()
	o := newNATObjects(b.table.Name)
	var out []firewall.Grant
	for _, s := range []*nftables.Set{o.fwd4, o.fwd6, o.local4, o.local6} {
		elems, err := b.readLive(s)
		if err != nil {
			return nil, b.opError("list forwards", err)
		}
		for _, e := range elems {
			if e.Timeout != 0 && e.Expires == 0 {
				continue
			}
			src, p, err := ParseGrantKey(e.Key)
			if err != nil {
				return nil, fmt.Errorf("firewall nft: list %s: %w", s.Name, err)
			}
			var to netip.AddrPort
			switch {
			case (s == o.local4 || s == o.local6) && len(e.Val) >= 2:
				un := netip.IPv6Unspecified()
				if src.Is4() {
					un = netip.IPv4Unspecified()
				}
				to = netip.AddrPortFrom(un, uint16(e.Val[0])<<8|uint16(e.Val[1]))
			case len(e.Val) == 8:
				to = netip.AddrPortFrom(netip.AddrFrom4([4]byte(e.Val[:4])), uint16(e.Val[4])<<8|uint16(e.Val[5]))
			case len(e.Val) == 20:
				to = netip.AddrPortFrom(netip.AddrFrom16([16]byte(e.Val[:16])), uint16(e.Val[16])<<8|uint16(e.Val[17]))
			default:
				continue
			}
			out = append(out, firewall.Grant{Src: src, Port: p, To: to, Timeout: e.Expires})
		}
	}
	return out, nil
}

// removeForwarding queues the deletion of the forwarding table (absent: no error).
func removeForwarding(c *nftables.Conn, gateTable string) {
	o := newNATObjects(gateTable)
	c.AddTable(o.table)
	c.DelTable(o.table)
}
