//go:build linux

// Package nft is sesame's nftables firewall backend. It keeps one table, inet sesame, and talks to
// the kernel over netlink (github.com/google/nftables); it never execs nft(8).
//
// Layout (see docs/FIREWALL.md for the full listing):
//
//	table inet sesame {
//		set grants4   { type ipv4_addr . inet_proto . inet_service; flags timeout; }
//		set grants6   { type ipv6_addr . inet_proto . inet_service; flags timeout; }
//		set protected { type inet_proto . inet_service; elements = { tcp . 2222 } }
//		set bans4     { type ipv4_addr; flags timeout; }
//		set bans6     { type ipv6_addr; flags timeout; }
//		chain gate {
//			type filter hook input priority -10; policy accept;
//			meta l4proto tcp ct direction reply meta l4proto . th dport @protected drop
//			ip saddr @bans4 meta l4proto . th dport @protected drop
//			ip6 saddr @bans6 meta l4proto . th dport @protected drop
//			ct state established,related accept
//			meta nfproto ipv4 ip saddr . meta l4proto . th dport @grants4 ct mark set ct mark | 0x20000000 accept
//			meta nfproto ipv6 ip6 saddr . meta l4proto . th dport @grants6 ct mark set ct mark | 0x20000000 accept
//			meta l4proto . th dport @protected drop
//		}
//	}
//
// Priority -10 puts the gate after conntrack (-200, so "ct state" is known), after mangle (-150)
// and destination NAT (-100, so the port compared is the one the local service listens on), and
// just before the usual host firewall at "filter" (0), including iptables-nft's INPUT chain. The
// order only decides who sees a packet first: an accept here does NOT let a packet past a drop in
// another table or chain on the same hook, so the host firewall must still allow protected ports,
// or accept the connections sesame admitted: a grant rule sets bit firewall.ConnMark (0x20000000)
// of the connection's conntrack mark, so "ct mark and 0x20000000 == 0x20000000 accept" (or
// iptables' "-m connmark --mark 0x20000000/0x20000000 -j ACCEPT") in a chain after priority -10
// accepts exactly those connections, every packet of them.
//
// Grants expire in the kernel (element timeouts, millisecond resolution), so they close on time
// even when the daemon is dead. Needs Linux >= 6.3 for the destroy-element command used by Grant
// and Revoke.
package nft

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/netport"
)

// DefaultTable is the name of sesame's table in the inet family.
const DefaultTable = "sesame"

// Names of the chain and sets in the table.
const (
	ChainName     = "gate"
	Grants4Set    = "grants4"
	Grants6Set    = "grants6"
	ProtectedSet  = "protected"
	Bans4Set      = "bans4"
	Bans6Set      = "bans6"
	ChainPriority = -10
)

// Key lengths: every concatenated field is padded to 4 bytes.
const (
	key4Len        = 4 + 4 + 4
	key6Len        = 16 + 4 + 4
	protectedKeyLn = 4 + 4
)

// maxApplyTries bounds how often Apply retries when the ruleset changed between reading the live
// grants and committing the new table (the kernel answers ERESTART then).
const maxApplyTries = 5

// Options configure a Backend.
type Options struct {
	// NetNS is an open file descriptor of the network namespace to work in; 0 is the current
	// namespace. The caller keeps ownership of the descriptor and must keep it open while the
	// Backend is used.
	NetNS int
	// Table is the name of the inet table; empty means DefaultTable.
	Table string

	// connOpts are extra connection options, set by in-package tests only (nftables.WithTestDial
	// talks to a fake instead of the kernel), so that this file needs no test package.
	connOpts []nftables.ConnOption
}

// Backend is the nftables implementation of firewall.Backend. It is safe for concurrent use.
type Backend struct {
	mu        sync.Mutex
	conn      *nftables.Conn
	table     *nftables.Table
	grants4   *nftables.Set
	grants6   *nftables.Set
	protected *nftables.Set
	bans4     *nftables.Set
	bans6     *nftables.Set
	closed    bool
}

var (
	_ firewall.Backend = (*Backend)(nil)
	_ firewall.Banner  = (*Backend)(nil)
)

// New connects to nf_tables and checks that it is usable. It does not change the ruleset; call
// Apply for that.
func New(opts Options) (*Backend, error) {
	name := opts.Table
	if name == "" {
		name = DefaultTable
	}
	copts := []nftables.ConnOption{nftables.AsLasting()}
	if opts.NetNS != 0 {
		copts = append(copts, nftables.WithNetNSFd(opts.NetNS))
	}
	copts = append(copts, opts.connOpts...)
	conn, err := nftables.New(copts...)
	if err != nil {
		return nil, startupError(err)
	}
	// Probe: a harmless dump of the inet tables fails at once when nf_tables (or its inet family)
	// is missing or we lack CAP_NET_ADMIN.
	if _, err := conn.ListTablesOfFamily(nftables.TableFamilyINet); err != nil {
		conn.CloseLasting()
		return nil, startupError(err)
	}
	b := &Backend{conn: conn}
	b.table, b.grants4, b.grants6, b.protected = objects(name)
	b.bans4, b.bans6 = banObjects(b.table)
	return b, nil
}

// startupError turns the errors that a kernel without nf_tables gives into a clear message.
func startupError(err error) error {
	switch {
	case errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EACCES):
		return fmt.Errorf("firewall nft: talking to nf_tables: %w: needs CAP_NET_ADMIN", err)
	case errors.Is(err, syscall.EPROTONOSUPPORT), errors.Is(err, syscall.EAFNOSUPPORT):
		return fmt.Errorf("firewall nft: the kernel has no nfnetlink (CONFIG_NETFILTER_NETLINK); nf_tables is unavailable, use firewall %q: %w", firewall.Iptables, err)
	case errors.Is(err, syscall.EOPNOTSUPP), errors.Is(err, syscall.EINVAL), errors.Is(err, syscall.ENOENT):
		return fmt.Errorf("firewall nft: nf_tables is not available in this kernel (load module nf_tables and nf_tables_inet, or build with CONFIG_NF_TABLES and CONFIG_NF_TABLES_INET), or use firewall %q: %w", firewall.Iptables, err)
	}
	return fmt.Errorf("firewall nft: cannot talk to nf_tables: %w", err)
}

// objects returns the table and set descriptions for a table name. The sets carry no IDs, so they
// refer to the sets by name as they exist in the kernel.
func objects(name string) (t *nftables.Table, g4, g6, prot *nftables.Set) {
	t = &nftables.Table{Family: nftables.TableFamilyINet, Name: name}
	g4 = &nftables.Set{
		Table:         t,
		Name:          Grants4Set,
		KeyType:       nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService),
		Concatenation: true,
		HasTimeout:    true,
	}
	g6 = &nftables.Set{
		Table:         t,
		Name:          Grants6Set,
		KeyType:       nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeInetProto, nftables.TypeInetService),
		Concatenation: true,
		HasTimeout:    true,
	}
	prot = &nftables.Set{
		Table:         t,
		Name:          ProtectedSet,
		KeyType:       nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService),
		Concatenation: true,
	}
	return t, g4, g6, prot
}

// GrantKey is the set key of a grant: the address (4 or 16 bytes), the protocol padded to 4
// bytes and the port, big endian, padded to 4 bytes. 127.0.0.1 tcp 2222 is 7f000001 06000000
// 08ae0000.
func GrantKey(src netip.Addr, p netport.Port) []byte {
	src = src.Unmap()
	a := src.AsSlice()
	k := make([]byte, 0, len(a)+8)
	k = append(k, a...)
	return append(k, protoPortKey(p)...)
}

func protoPortKey(p netport.Port) []byte {
	return []byte{byte(p.Proto), 0, 0, 0, byte(p.Num >> 8), byte(p.Num), 0, 0}
}

// ParseGrantKey reverses GrantKey for 12- and 24-byte keys.
func ParseGrantKey(k []byte) (netip.Addr, netport.Port, error) {
	var a netip.Addr
	switch len(k) {
	case key4Len:
		a = netip.AddrFrom4([4]byte(k[:4]))
	case key6Len:
		a = netip.AddrFrom16([16]byte(k[:16]))
	default:
		return netip.Addr{}, netport.Port{}, fmt.Errorf("set key of %d bytes, want %d or %d", len(k), key4Len, key6Len)
	}
	r := k[len(k)-8:]
	return a, netport.Port{Proto: netport.Proto(r[0]), Num: binary.BigEndian.Uint16(r[4:6])}, nil
}

// RuleExprs returns the expressions of the gate chain's rules, in order, with sets referred to by
// name. Register numbers follow nft(8): 1 is the first 128-bit register (32-bit registers 8-11);
// each later field of a concatenation goes into the next 32-bit register after the padded
// length of the one before. For IPv6 the address fills 8-11 and nft names the next register
// "2" (the second 128-bit register, which is 32-bit register 12); we do the same.
//
// A grant rule sets bit firewall.ConnMark of the connection's conntrack mark, leaving the other
// bits, before it accepts: ct mark set ct mark | 0x20000000.
func RuleExprs(withDrop bool) [][]expr.Any {
	zero := []byte{0, 0, 0, 0}
	markExprs := func() [3]expr.Any {
		return [3]expr.Any{
			&expr.Ct{Register: 1, Key: expr.CtKeyMARK},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(^firewall.ConnMark), Xor: binaryutil.NativeEndian.PutUint32(firewall.ConnMark)},
			&expr.Ct{Register: 1, Key: expr.CtKeyMARK, SourceRegister: true},
		}
	}
	markExprs4, markExprs6 := markExprs(), markExprs()
	var rules [][]expr.Any
	if withDrop {
		// A TCP packet to a protected port in the reply direction of its connection belongs to
		// a connection that conntrack picked up from the server's side: after sesame revoke
		// --kill deleted the entry, the service's next segment makes a new one, and the
		// client's packets would then pass as established. No connection a grant admitted has
		// them (the client starts it, so its packets are in the original direction).
		rules = append(rules, []expr.Any{ // meta l4proto tcp ct direction reply meta l4proto . th dport @protected drop
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
			&expr.Ct{Register: 1, Key: expr.CtKeyDIRECTION},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{1}}, // IP_CT_DIR_REPLY
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Payload{DestRegister: 9, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Lookup{SourceRegister: 1, SetName: ProtectedSet},
			&expr.Verdict{Kind: expr.VerdictDrop},
		})
	}
	if withDrop {
		rules = append(rules, BanRuleExprs()...)
	}
	rules = append(rules, [][]expr.Any{
		{ // ct state established,related accept
			&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED), Xor: zero},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: zero},
			&expr.Verdict{Kind: expr.VerdictAccept},
		},
		{ // meta nfproto ipv4 ip saddr . meta l4proto . th dport @grants4 ct mark set ct mark | 0x20000000 accept
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 9},
			&expr.Payload{DestRegister: 10, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Lookup{SourceRegister: 1, SetName: Grants4Set},
			markExprs4[0], markExprs4[1], markExprs4[2],
			&expr.Verdict{Kind: expr.VerdictAccept},
		},
		{ // meta nfproto ipv6 ip6 saddr . meta l4proto . th dport @grants6 ct mark set ct mark | 0x20000000 accept
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV6}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 8, Len: 16},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 2},
			&expr.Payload{DestRegister: 13, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Lookup{SourceRegister: 1, SetName: Grants6Set},
			markExprs6[0], markExprs6[1], markExprs6[2],
			&expr.Verdict{Kind: expr.VerdictAccept},
		},
	}...)
	if withDrop {
		rules = append(rules, []expr.Any{ // meta l4proto . th dport @protected drop
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Payload{DestRegister: 9, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Lookup{SourceRegister: 1, SetName: ProtectedSet},
			&expr.Verdict{Kind: expr.VerdictDrop},
		})
	}
	return rules
}

// queueApply queues the atomic replacement of the whole table: gate rules, sets, and the live
// elements to carry over. It sends nothing.
func queueApply(c *nftables.Conn, name string, gate firewall.Gate, live4, live6, bans4, bans6 []nftables.SetElement) error {
	t, g4, g6, prot := objects(name)
	// AddTable makes the table exist so that DelTable cannot fail with ENOENT; the second
	// AddTable starts it afresh. All in one batch: the kernel commits all of it or nothing.
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	if err := c.AddSet(g4, live4); err != nil {
		return err
	}
	if err := c.AddSet(g6, live6); err != nil {
		return err
	}
	var pe []nftables.SetElement
	seen := map[netport.Port]bool{}
	for _, p := range gate.Protected {
		if seen[p] {
			continue
		}
		seen[p] = true
		pe = append(pe, nftables.SetElement{Key: protoPortKey(p)})
	}
	if err := c.AddSet(prot, pe); err != nil {
		return err
	}
	b4, b6 := banObjects(t)
	if err := c.AddSet(b4, bans4); err != nil {
		return err
	}
	if err := c.AddSet(b6, bans6); err != nil {
		return err
	}
	ch := c.AddChain(&nftables.Chain{
		Name:     ChainName,
		Table:    t,
		Type:     nftables.ChainTypeFilter,
		Hooknum:  nftables.ChainHookInput,
		Priority: nftables.ChainPriorityRef(ChainPriority),
		Policy:   ptr(nftables.ChainPolicyAccept),
	})
	sets := map[string]*nftables.Set{Grants4Set: g4, Grants6Set: g6, ProtectedSet: prot, Bans4Set: b4, Bans6Set: b6}
	for _, exprs := range GateExprs(gate, len(pe) > 0) {
		for _, e := range exprs {
			if l, ok := e.(*expr.Lookup); ok {
				l.SetID = sets[l.SetName].ID
			}
		}
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: exprs})
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

// carryOver turns live elements as read from the kernel into elements to re-add: each keeps the
// time it has left. Elements about to expire (less than 1ms left) are dropped, elements with a
// key of the wrong size (another layout) are dropped, and permanent elements (no timeout, only
// ever added by hand) stay permanent.
func carryOver(elems []nftables.SetElement, keyLen int) []nftables.SetElement {
	var out []nftables.SetElement
	for _, e := range elems {
		if len(e.Key) != keyLen {
			continue
		}
		ne := nftables.SetElement{Key: e.Key}
		if e.Timeout != 0 || e.Expires != 0 {
			if e.Expires < time.Millisecond {
				continue
			}
			ne.Timeout = e.Expires
		}
		out = append(out, ne)
	}
	return out
}

// readLive returns the elements of a set; a missing table or set has none.
func (b *Backend) readLive(s *nftables.Set) ([]nftables.SetElement, error) {
	elems, err := b.conn.GetSetElements(s)
	if errors.Is(err, syscall.ENOENT) {
		return nil, nil
	}
	return elems, err
}

// Apply atomically replaces table inet sesame with one that enforces gate. It first reads the
// live grants and re-adds each with the time it has left, in the same batch as the replacement,
// so a reload or restart neither loses, duplicates nor extends a grant. The batch carries the
// ruleset generation read before the grants: if anything changed the ruleset in between (say, a
// Grant from another process), the kernel refuses the batch and Apply starts over.
func (b *Backend) Apply(ctx context.Context, gate firewall.Gate) error {
	if err := firewall.CheckGate(gate); err != nil {
		return fmt.Errorf("firewall nft: %w", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return errClosed
	}
	var err error
	for try := 0; try < maxApplyTries; try++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		var gen *nftables.Gen
		gen, err = b.conn.GetGen()
		if err != nil {
			return fmt.Errorf("firewall nft: read ruleset generation: %w", err)
		}
		var live4, live6 []nftables.SetElement
		if live4, err = b.readLive(b.grants4); err != nil {
			return fmt.Errorf("firewall nft: read live grants: %w", err)
		}
		if live6, err = b.readLive(b.grants6); err != nil {
			return fmt.Errorf("firewall nft: read live grants: %w", err)
		}
		var ban4, ban6 []nftables.SetElement
		if ban4, err = b.readLive(b.bans4); err != nil {
			return fmt.Errorf("firewall nft: read live bans: %w", err)
		}
		if ban6, err = b.readLive(b.bans6); err != nil {
			return fmt.Errorf("firewall nft: read live bans: %w", err)
		}
		if err = queueApply(b.conn, b.table.Name, gate, carryOver(live4, key4Len), carryOver(live6, key6Len),
			carryOver(ban4, 4), carryOver(ban6, 16)); err != nil {
			b.conn.Flush() // drops the queued messages; returns the queued error
			return fmt.Errorf("firewall nft: build table: %w", err)
		}
		err = b.conn.FlushWithGenID(gen.ID)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.ERESTART) {
			return fmt.Errorf("firewall nft: replace table inet %s: %w", b.table.Name, err)
		}
	}
	return fmt.Errorf("firewall nft: replace table inet %s: ruleset kept changing: %w", b.table.Name, err)
}

var errClosed = errors.New("firewall nft: backend is closed")

func (b *Backend) setFor(a netip.Addr) *nftables.Set {
	if a.Unmap().Is4() {
		return b.grants4
	}
	return b.grants6
}

type elemKey struct {
	set *nftables.Set
	key string
}

// Grant adds or refreshes grants in one atomic batch. A refreshed grant gets the new timeout:
// each element is destroyed (if present) and added again, which works on every kernel, unlike
// re-adding with a new timeout.
func (b *Backend) Grant(ctx context.Context, grants ...firewall.Grant) error {
	if err := firewall.CheckGrants(grants, true); err != nil {
		return fmt.Errorf("firewall nft: %w", err)
	}
	if len(grants) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// Last grant wins for duplicates.
	idx := map[elemKey]int{}
	var order []elemKey
	var timeouts []time.Duration
	for _, g := range grants {
		k := elemKey{b.setFor(g.Src), string(GrantKey(g.Src, g.Port))}
		if i, ok := idx[k]; ok {
			timeouts[i] = g.Timeout
			continue
		}
		idx[k] = len(order)
		order = append(order, k)
		timeouts = append(timeouts, g.Timeout)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return errClosed
	}
	for _, s := range []*nftables.Set{b.grants4, b.grants6} {
		var del, add []nftables.SetElement
		for i, k := range order {
			if k.set != s {
				continue
			}
			del = append(del, nftables.SetElement{Key: []byte(k.key)})
			add = append(add, nftables.SetElement{Key: []byte(k.key), Timeout: timeouts[i]})
		}
		if len(add) == 0 {
			continue
		}
		if err := b.conn.SetDestroyElements(s, del); err != nil {
			b.conn.Flush()
			return fmt.Errorf("firewall nft: grant: %w", err)
		}
		if err := b.conn.SetAddElements(s, add); err != nil {
			b.conn.Flush()
			return fmt.Errorf("firewall nft: grant: %w", err)
		}
	}
	if err := b.conn.Flush(); err != nil {
		return b.opError("grant", err)
	}
	return nil
}

func (b *Backend) opError(op string, err error) error {
	if errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("firewall nft: %s: table inet %s or its sets are missing (Apply not called, or removed by someone else): %w", op, b.table.Name, err)
	}
	if errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("firewall nft: %s: kernel refused (destroying set elements needs Linux >= 6.3): %w", op, err)
	}
	return fmt.Errorf("firewall nft: %s: %w", op, err)
}

// lock takes b.mu for an operation under ctx on an open backend: ctx done or the backend
// closed is an error, and b.mu is not held then; otherwise the caller unlocks.
func (b *Backend) lock(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return errClosed
	}
	return nil
}

// Revoke removes grants; absent grants are ignored.
func (b *Backend) Revoke(ctx context.Context, grants ...firewall.Grant) error {
	if err := firewall.CheckGrants(grants, false); err != nil {
		return fmt.Errorf("firewall nft: %w", err)
	}
	if len(grants) == 0 {
		return nil
	}
	if err := b.lock(ctx); err != nil {
		return err
	}
	defer b.mu.Unlock()
	for _, s := range []*nftables.Set{b.grants4, b.grants6} {
		var del []nftables.SetElement
		for _, g := range grants {
			if b.setFor(g.Src) == s {
				del = append(del, nftables.SetElement{Key: GrantKey(g.Src, g.Port)})
			}
		}
		if err := b.conn.SetDestroyElements(s, del); err != nil {
			b.conn.Flush()
			return fmt.Errorf("firewall nft: revoke: %w", err)
		}
	}
	if err := b.conn.Flush(); err != nil {
		return b.opError("revoke", err)
	}
	return nil
}

// List returns the live grants with the time they have left. A permanent element (added by hand
// without a timeout) is listed with Remaining 0.
func (b *Backend) List(ctx context.Context) ([]firewall.LiveGrant, error) {
	if err := b.lock(ctx); err != nil {
		return nil, err
	}
	defer b.mu.Unlock()
	var out []firewall.LiveGrant
	for _, s := range []*nftables.Set{b.grants4, b.grants6} {
		elems, err := b.conn.GetSetElements(s)
		if err != nil {
			return nil, b.opError("list", err)
		}
		for _, e := range elems {
			if e.Timeout != 0 && e.Expires == 0 {
				continue // expired, not yet collected
			}
			a, p, err := ParseGrantKey(e.Key)
			if err != nil {
				return nil, fmt.Errorf("firewall nft: list %s: %w", s.Name, err)
			}
			out = append(out, firewall.LiveGrant{Src: a, Port: p, Remaining: e.Expires})
		}
	}
	return out, nil
}

// Close releases the netlink connection. With removeRules the table (gate and grants) is deleted;
// without, it stays in the kernel and keeps gating (fail closed).
func (b *Backend) Close(ctx context.Context, removeRules bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	var errs []error
	if removeRules {
		// AddTable first so that deleting an absent table is not an error.
		b.conn.AddTable(b.table)
		b.conn.DelTable(b.table)
		removeForwarding(b.conn, b.table.Name) // nat.go
		if err := b.conn.Flush(); err != nil {
			errs = append(errs, fmt.Errorf("firewall nft: remove table inet %s: %w", b.table.Name, err))
		}
	}
	if err := b.conn.CloseLasting(); err != nil {
		errs = append(errs, fmt.Errorf("firewall nft: close: %w", err))
	}
	b.closed = true
	return errors.Join(errs...)
}

// Available reports whether nf_tables answers in the current namespace, for a backend choice
// ("auto") made by the caller. The error explains why not.
func Available() error {
	b, err := New(Options{})
	if err != nil {
		return err
	}
	return b.Close(context.Background(), false)
}
