//go:build linux

package hostcheck

import (
	"encoding/binary"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/netport"
)

var (
	ssh     = netport.Port{Proto: netport.TCP, Num: 2222}
	nftGate = Gate{Table: "sesame", Priority: -10, Mark: firewall.ConnMark}
	iptGate = Gate{Chain: "SESAME", Priority: 0, Mark: firewall.ConnMark}
)

// Expressions as nft and iptables-nft write them (nft --debug=netlink).
func tcpDport(port uint16) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, port)},
	}
}

func ctState(bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binary.NativeEndian.AppendUint32(nil, bits), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

func markAccept() []expr.Any {
	m := binary.NativeEndian.AppendUint32(nil, firewall.ConnMark)
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeyMARK},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: m, Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: m},
		vd(expr.VerdictAccept),
	}
}

func vd(k expr.VerdictKind) expr.Any { return &expr.Verdict{Kind: k} }

func with(es []expr.Any, more ...expr.Any) []expr.Any {
	return append(append([]expr.Any{}, es...), more...)
}

type chainSpec struct {
	fam          nftables.TableFamily
	table, chain string
	hook         *nftables.ChainHook // nil: a regular chain
	prio         int32
	policyDrop   bool
	nat          bool
	rules        [][]expr.Any
}

func ruleset(specs ...chainSpec) *Ruleset {
	rs := &Ruleset{Rules: map[ChainRef][]*nftables.Rule{}, Sets: map[SetRef]Set{}}
	for _, s := range specs {
		t := &nftables.Table{Family: s.fam, Name: s.table}
		ch := &nftables.Chain{Name: s.chain, Table: t, Type: nftables.ChainTypeFilter}
		if s.nat {
			ch.Type = nftables.ChainTypeNAT
		}
		if s.hook != nil {
			ch.Hooknum = s.hook
			ch.Priority = nftables.ChainPriorityRef(nftables.ChainPriority(s.prio))
			pol := nftables.ChainPolicyAccept
			if s.policyDrop {
				pol = nftables.ChainPolicyDrop
			}
			ch.Policy = &pol
		}
		rs.Chains = append(rs.Chains, ch)
		var rules []*nftables.Rule
		for i, es := range s.rules {
			rules = append(rules, &nftables.Rule{Table: t, Chain: ch, Handle: uint64(i + 2), Exprs: es})
		}
		rs.Rules[ChainRef{s.fam, s.table, s.chain}] = rules
	}
	return rs
}

func iptInput(rules ...[]expr.Any) chainSpec {
	return chainSpec{fam: nftables.TableFamilyIPv4, table: "filter", chain: "INPUT", hook: nftables.ChainHookInput, rules: rules}
}

func inetInput(prio int32, policyDrop bool, rules ...[]expr.Any) chainSpec {
	return chainSpec{fam: nftables.TableFamilyINet, table: "filter", chain: "input", hook: nftables.ChainHookInput, prio: prio, policyDrop: policyDrop, rules: rules}
}

func TestCheck(t *testing.T) {
	drop := with(tcpDport(2222), &expr.Counter{}, vd(expr.VerdictDrop))
	jumpSesame := []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictJump, Chain: "SESAME"}}
	for _, tc := range []struct {
		name string
		rs   *Ruleset
		gate Gate
		want []string // Finding.String() + " new/later"
		fix  string   // a part of the first finding's Fix
	}{
		{"iptables-nft INPUT drop, nft backend", ruleset(iptInput(drop)), nftGate,
			[]string{"ip filter INPUT: tcp dport 2222 drop (handle 2) new+later"},
			"`iptables -I INPUT -m connmark --mark 0x20000000/0x20000000 -j ACCEPT`"},
		{"drop of another port", ruleset(iptInput(with(tcpDport(22), vd(expr.VerdictDrop)))), nftGate, nil, ""},
		{"udp is not tcp", ruleset(iptInput(drop)), Gate{Table: "sesame", Priority: -10, Mark: firewall.ConnMark}, nil, ""},
		{"ipt backend: sesame's jump first", ruleset(iptInput(jumpSesame, drop)), iptGate, nil, ""},
		{"ipt backend: drop above sesame's jump", ruleset(iptInput(drop, jumpSesame)), iptGate,
			[]string{"ip filter INPUT: tcp dport 2222 drop (handle 2) new+later"}, "comes before INPUT's jump to SESAME"},
		{"nft backend: a jump to SESAME means nothing", ruleset(iptInput(jumpSesame, drop),
			chainSpec{fam: nftables.TableFamilyIPv4, table: "filter", chain: "SESAME"}), nftGate,
			[]string{"ip filter INPUT: tcp dport 2222 drop (handle 3) new+later"}, ""},
		{"policy drop, established accepted", ruleset(inetInput(0, true, with(ctState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), vd(expr.VerdictAccept)))), nftGate,
			[]string{"inet filter input: policy drop new"}, "`nft insert rule inet filter input ct mark and 0x20000000 == 0x20000000 accept`"},
		{"policy drop, no rules", ruleset(inetInput(0, true)), nftGate, []string{"inet filter input: policy drop new+later"}, ""},
		{"policy drop, port accepted", ruleset(inetInput(0, true, with(tcpDport(2222), vd(expr.VerdictAccept)))), nftGate, nil, ""},
		{"policy drop, mark accepted after the gate", ruleset(inetInput(0, true, markAccept())), nftGate, nil, ""},
		{"policy drop, mark accepted before the gate", ruleset(inetInput(-100, true, markAccept())), nftGate,
			[]string{"inet filter input: policy drop new"}, "runs before sesame's gate"},
		{"policy drop, mark accepted at the gate's priority", ruleset(inetInput(-10, true, markAccept())), nftGate, nil, ""},
		{"xt match before the drop", ruleset(iptInput([]expr.Any{&expr.Match{Name: "recent"}, vd(expr.VerdictDrop)})), nftGate, nil, ""},
		{"xt match before the only accept", ruleset(inetInput(0, true, []expr.Any{&expr.Match{Name: "foo"}, vd(expr.VerdictAccept)})), nftGate, nil, ""},
		{"unknown expression before the only accept", ruleset(inetInput(0, true, []expr.Any{&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{2, 0, 0, 0}}, vd(expr.VerdictAccept)})), nftGate, nil, ""},
		{"source accept before the drop", ruleset(iptInput([]expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{10, 0, 0, 1}}, vd(expr.VerdictAccept)}, drop)), nftGate, nil, ""},
		{"unknown xt target before the drop", ruleset(iptInput([]expr.Any{&expr.Target{Name: "WEIRD"}}, drop)), nftGate, nil, ""},
		{"xt LOG target before the drop", ruleset(iptInput(with(tcpDport(2222), &expr.Target{Name: "LOG"}), drop)), nftGate,
			[]string{"ip filter INPUT: tcp dport 2222 drop (handle 3) new+later"}, ""},
		{"reject", ruleset(iptInput(with(tcpDport(2222), &expr.Reject{}))), nftGate,
			[]string{"ip filter INPUT: tcp dport 2222 reject (handle 2) new+later"}, ""},
		{"drop in a chain jumped to", ruleset(inetInput(0, false, []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: "svc"}}),
			chainSpec{fam: nftables.TableFamilyINet, table: "filter", chain: "svc", rules: [][]expr.Any{drop}}), nftGate,
			[]string{"inet filter input: (chain svc) tcp dport 2222 drop (handle 2) new+later"}, ""},
		{"jump to a missing chain", ruleset(inetInput(0, true, []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: "gone"}})), nftGate, nil, ""},
		{"goto a chain that returns: policy", ruleset(inetInput(0, true, []expr.Any{&expr.Verdict{Kind: expr.VerdictGoto, Chain: "svc"}}, with(tcpDport(2222), vd(expr.VerdictAccept))),
			chainSpec{fam: nftables.TableFamilyINet, table: "filter", chain: "svc"}), nftGate,
			[]string{"inet filter input: policy drop new+later"}, ""},
		{"sesame's own table is skipped", ruleset(chainSpec{fam: nftables.TableFamilyINet, table: "sesame", chain: "gate", hook: nftables.ChainHookInput, prio: -10,
			rules: [][]expr.Any{drop}}), nftGate, nil, ""},
		{"raw prerouting drop", ruleset(chainSpec{fam: nftables.TableFamilyIPv4, table: "raw", chain: "PREROUTING", hook: nftables.ChainHookPrerouting, prio: -300,
			rules: [][]expr.Any{drop}}), iptGate, []string{"ip raw PREROUTING: tcp dport 2222 drop (handle 2) new+later"}, "runs before sesame's gate"},
		{"output hook ignored", ruleset(chainSpec{fam: nftables.TableFamilyIPv4, table: "filter", chain: "OUTPUT", hook: nftables.ChainHookOutput,
			rules: [][]expr.Any{drop}}), nftGate, nil, ""},
		{"nat chain sees only new connections", ruleset(chainSpec{fam: nftables.TableFamilyIPv4, table: "nat", chain: "PREROUTING", hook: nftables.ChainHookPrerouting, prio: -100, nat: true,
			rules: [][]expr.Any{drop}}), nftGate, []string{"ip nat PREROUTING: tcp dport 2222 drop (handle 2) new"}, ""},
		{"port range", ruleset(iptInput([]expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Range{Op: expr.CmpOpEq, Register: 1, FromData: []byte{0x07, 0xd0}, ToData: []byte{0x0b, 0xb8}}, vd(expr.VerdictDrop)})), nftGate,
			[]string{"ip filter INPUT: tcp dport 2000-3000 drop (handle 2) new+later"}, ""},
		{"ct state new drop", ruleset(inetInput(0, false, with(ctState(expr.CtStateBitNEW), vd(expr.VerdictDrop)))), nftGate,
			[]string{"inet filter input: ct state new drop (handle 2) new"}, ""},
		{"limit before the accept", ruleset(inetInput(0, true, with(tcpDport(2222), &expr.Limit{Rate: 1}, vd(expr.VerdictAccept)))), nftGate, nil, ""},
		{"meta nfproto ipv6 drop hits IPv6 only: reported", ruleset(inetInput(0, false, []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV6}}, vd(expr.VerdictDrop)})), nftGate,
			[]string{"inet filter input: meta nfproto ipv6 drop (handle 2) new+later"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ports := []netport.Port{ssh}
			if tc.name == "udp is not tcp" {
				ports = []netport.Port{{Proto: netport.UDP, Num: 2222}}
			}
			fs := Check(tc.rs, tc.gate, ports)
			var got []string
			for _, f := range fs {
				kind := map[[2]bool]string{{true, true}: "new+later", {true, false}: "new", {false, true}: "later"}[[2]bool{f.New, f.Later}]
				got = append(got, f.String()+" "+kind)
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Fatalf("findings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			if tc.fix != "" && !strings.Contains(fs[0].Fix(), tc.fix) {
				t.Errorf("fix %q lacks %q", fs[0].Fix(), tc.fix)
			}
		})
	}
}

func TestLookup(t *testing.T) {
	port := func(p uint16) []byte { return binary.BigEndian.AppendUint16(nil, p) }
	dropIn := func(set string, invert bool) []expr.Any {
		return []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Lookup{SourceRegister: 1, SetName: set, Invert: invert}, vd(expr.VerdictDrop),
		}
	}
	vmap := []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: 1, SetName: "__map0", IsDestRegSet: true},
	}
	interval := Set{Interval: true, Elements: []nftables.SetElement{
		{Key: port(3001), IntervalEnd: true}, {Key: port(2000)}, {Key: port(1)}, {Key: port(23), IntervalEnd: true}}}
	for _, tc := range []struct {
		name string
		rule []expr.Any
		sets map[string]Set
		want string
	}{
		{"anonymous set hit", dropIn("__set0", false), map[string]Set{"__set0": {Elements: []nftables.SetElement{{Key: port(22)}, {Key: port(2222)}}}},
			"ip filter INPUT: tcp dport { 22, 2222 } drop (handle 2)"},
		{"anonymous set miss", dropIn("__set0", false), map[string]Set{"__set0": {Elements: []nftables.SetElement{{Key: port(22)}}}}, ""},
		{"inverted miss drops", dropIn("allowed", true), map[string]Set{"allowed": {Elements: []nftables.SetElement{{Key: port(22)}}}},
			"ip filter INPUT: tcp dport != @allowed drop (handle 2)"},
		{"set not read", dropIn("unread", false), nil, ""},
		{"interval hit", dropIn("__set1", false), map[string]Set{"__set1": interval}, "ip filter INPUT: tcp dport { 2000, 1 } drop (handle 2)"},
		{"interval miss", dropIn("__set1", false), map[string]Set{"__set1": {Interval: true, Elements: []nftables.SetElement{
			{Key: port(23), IntervalEnd: true}, {Key: port(1)}, {Key: port(2223)}}}}, ""},
		{"verdict map drop", vmap, map[string]Set{"__map0": {Elements: []nftables.SetElement{{Key: port(2222), VerdictData: &expr.Verdict{Kind: expr.VerdictDrop}}}}},
			"ip filter INPUT: th dport { 2222 : drop } map (handle 2)"},
		{"verdict map accept", vmap, map[string]Set{"__map0": {Elements: []nftables.SetElement{{Key: port(2222), VerdictData: &expr.Verdict{Kind: expr.VerdictAccept}}}}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := ruleset(iptInput(tc.rule))
			for name, s := range tc.sets {
				rs.Sets[SetRef{nftables.TableFamilyIPv4, "filter", name}] = s
			}
			var got []string
			for _, f := range Check(rs, nftGate, []netport.Port{ssh}) {
				got = append(got, f.String())
			}
			if strings.Join(got, "\n") != tc.want {
				t.Errorf("findings: %q, want %q", got, tc.want)
			}
		})
	}
}
