//go:build linux

package hostcheck

import (
	"bytes"
	"encoding/binary"
	"slices"
	"sort"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Conntrack state bits as "ct state" loads them.
const (
	ctEstablished = expr.CtStateBitESTABLISHED
	ctNew         = expr.CtStateBitNEW
)

// Bounds of the walk: chain depth, ways through one rule, and results of one chain.
const (
	maxDepth    = 16
	maxForks    = 64
	maxTerminal = 256
)

// xtNonTerminal are iptables targets (kept as xt "target" expressions by iptables-nft) that
// change something and let the packet go on to the next rule.
var xtNonTerminal = []string{"CONNMARK", "MARK", "LOG", "NFLOG", "CT", "TRACE", "DSCP", "TOS", "TCPMSS",
	"CLASSIFY", "SECMARK", "CONNSECMARK", "NOTRACK", "AUDIT", "CHECKSUM", "IDLETIMER", "LED", "HMARK", "RATEEST", "SET"}

// packet is the packet under test: what the check knows of it.
type packet struct {
	nfproto uint8
	proto   uint8
	port    uint16
	state   uint32
}

// pstate is what a walk carries from rule to rule: the known bits of the conntrack mark.
type pstate struct {
	markKnown, markVal uint32
}

type checker struct {
	rs   *Ruleset
	gate Gate
}

type termKind int

const (
	tAccept termKind = iota
	tDrop
	tUnknown
)

// terminal is a way through a chain that ends the packet's trip through the base chain.
type terminal struct {
	kind termKind
	rule string // for tDrop: the rule, as nft lists it
}

// walk follows the packet through a chain from each of states. It returns the ways that ended
// (accept, drop, unknown) and the states of the ways that fell off the end or returned.
func (c *checker) walk(ref ChainRef, p packet, states []pstate, depth int) ([]terminal, []pstate) {
	rules, ok := c.rs.Rules[ref]
	if !ok || depth > maxDepth {
		return []terminal{{kind: tUnknown}}, nil
	}
	var term []terminal
	var ends []pstate
	live := dedupe(states)
	for _, r := range rules {
		var next []pstate
		for _, st := range live {
			for _, rr := range c.evalRule(ref, r, p, st) {
				switch rr.kind {
				case rNext:
					next = append(next, rr.st)
				case rAccept:
					term = append(term, terminal{kind: tAccept})
				case rDrop:
					term = append(term, terminal{kind: tDrop, rule: c.where(ref, depth) + Render(ref, r, c.rs)})
				case rUnknown:
					term = append(term, terminal{kind: tUnknown})
				case rReturn:
					ends = append(ends, rr.st)
				case rJump, rGoto:
					if c.gate.Chain != "" && rr.chain == c.gate.Chain && ref.Table == "filter" &&
						(ref.Family == nftables.TableFamilyIPv4 || ref.Family == nftables.TableFamilyIPv6) {
						term = append(term, terminal{kind: tAccept}) // sesame's chain admits it
						continue
					}
					t2, e2 := c.walk(ChainRef{ref.Family, ref.Table, rr.chain}, p, []pstate{rr.st}, depth+1)
					term = append(term, t2...)
					if rr.kind == rJump {
						next = append(next, e2...)
					} else {
						ends = append(ends, e2...)
					}
				}
			}
		}
		if len(term) > maxTerminal {
			return []terminal{{kind: tUnknown}}, nil
		}
		live = dedupe(next)
		if len(live) == 0 {
			break
		}
	}
	return term, append(ends, live...)
}

// where prefixes a drop found in a chain jumped to with that chain's name.
func (c *checker) where(ref ChainRef, depth int) string {
	if depth == 0 {
		return ""
	}
	return "(chain " + ref.Chain + ") "
}

func dedupe(s []pstate) []pstate {
	var out []pstate
	for _, x := range s {
		if !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}

type ruleKind int

const (
	rNext ruleKind = iota // no match, or no verdict: on to the next rule
	rAccept
	rDrop
	rReturn
	rJump
	rGoto
	rUnknown
)

type ruleResult struct {
	kind  ruleKind
	chain string
	st    pstate
}

// regs is nft's register file (the data registers, 4 × 16 bytes) with a mask of known bits.
type regs struct {
	val, known [64]byte
}

// offset is where register r starts: 1-4 are the 16-byte registers, 8-23 the 4-byte ones.
func offset(r uint32) (int, bool) {
	switch {
	case r >= 1 && r <= 4:
		return int(r-1) * 16, true
	case r >= 8 && r <= 23:
		return int(r-8) * 4, true
	}
	return 0, false
}

// store writes data (all bits known when known is nil) at register r, and zeroes the rest of
// the last 4-byte word as the kernel does.
func (rg *regs) store(r uint32, data, known []byte) {
	o, ok := offset(r)
	if !ok {
		return
	}
	n := (len(data) + 3) / 4 * 4
	for i := 0; i < n && o+i < len(rg.val); i++ {
		v, k := byte(0), byte(0xff)
		if i < len(data) {
			v = data[i]
			if known != nil {
				k = known[i]
			}
		}
		rg.val[o+i], rg.known[o+i] = v&k, k
	}
}

func (rg *regs) unknown(r uint32, n int) {
	rg.store(r, make([]byte, n), make([]byte, n))
}

func (rg *regs) load(r uint32, n int) (val, known []byte, ok bool) {
	o, ok := offset(r)
	if !ok || o+n > len(rg.val) {
		return nil, nil, false
	}
	return slices.Clone(rg.val[o : o+n]), slices.Clone(rg.known[o : o+n]), true
}

func allKnown(k []byte) bool {
	for _, b := range k {
		if b != 0xff {
			return false
		}
	}
	return true
}

// tri is a condition's value: yes, no, or cannot tell.
type tri int

const (
	no tri = iota
	yes
	maybe
)

func not(t tri) tri {
	switch t {
	case yes:
		return no
	case no:
		return yes
	}
	return maybe
}

// equal compares a register value with data on the known bits.
func equal(val, known, data []byte) tri {
	for i := range data {
		if (val[i]^data[i])&known[i] != 0 {
			return no
		}
	}
	if allKnown(known) {
		return yes
	}
	return maybe
}

func cmpTri(op expr.CmpOp, val, known, data []byte) tri {
	switch op {
	case expr.CmpOpEq:
		return equal(val, known, data)
	case expr.CmpOpNeq:
		return not(equal(val, known, data))
	}
	if !allKnown(known) {
		return maybe
	}
	d := bytes.Compare(val, data)
	ok := false
	switch op {
	case expr.CmpOpLt:
		ok = d < 0
	case expr.CmpOpLte:
		ok = d <= 0
	case expr.CmpOpGt:
		ok = d > 0
	case expr.CmpOpGte:
		ok = d >= 0
	default:
		return maybe
	}
	if ok {
		return yes
	}
	return no
}

// evalRule runs one rule for p, forking where a condition cannot be told.
func (c *checker) evalRule(ref ChainRef, r *nftables.Rule, p packet, st pstate) []ruleResult {
	var out []ruleResult
	forks := 0
	var run func(i int, rg regs, st pstate)
	run = func(i int, rg regs, st pstate) {
		branch := func(t tri) bool { // reports whether to go on with this way
			switch t {
			case no:
				out = append(out, ruleResult{kind: rNext, st: st})
				return false
			case maybe:
				forks++
				if forks > maxForks {
					out = append(out, ruleResult{kind: rUnknown})
					return false
				}
				out = append(out, ruleResult{kind: rNext, st: st})
			}
			return true
		}
		for ; i < len(r.Exprs); i++ {
			switch e := r.Exprs[i].(type) {
			case *expr.Meta:
				if e.SourceRegister {
					continue
				}
				switch e.Key {
				case expr.MetaKeyNFPROTO:
					rg.store(e.Register, []byte{p.nfproto}, nil)
				case expr.MetaKeyL4PROTO:
					rg.store(e.Register, []byte{p.proto}, nil)
				case expr.MetaKeyPROTOCOL:
					eth := uint16(unix.ETH_P_IP)
					if p.nfproto == unix.NFPROTO_IPV6 {
						eth = unix.ETH_P_IPV6
					}
					rg.store(e.Register, binary.BigEndian.AppendUint16(nil, eth), nil)
				case expr.MetaKeyIIFNAME, expr.MetaKeyOIFNAME, expr.MetaKeyBRIIIFNAME, expr.MetaKeyBRIOIFNAME:
					rg.unknown(e.Register, 16)
				default:
					rg.unknown(e.Register, 4)
				}
			case *expr.Payload:
				if e.OperationType != expr.PayloadLoad {
					continue
				}
				data, known := make([]byte, e.Len), make([]byte, e.Len)
				for j := range data {
					off := e.Offset + uint32(j)
					switch {
					case e.Base == expr.PayloadBaseTransportHeader && off == 2:
						data[j], known[j] = byte(p.port>>8), 0xff
					case e.Base == expr.PayloadBaseTransportHeader && off == 3:
						data[j], known[j] = byte(p.port), 0xff
					case e.Base == expr.PayloadBaseNetworkHeader && p.nfproto == unix.NFPROTO_IPV4 && off == 9,
						e.Base == expr.PayloadBaseNetworkHeader && p.nfproto == unix.NFPROTO_IPV6 && off == 6:
						data[j], known[j] = p.proto, 0xff
					}
				}
				rg.store(e.DestRegister, data, known)
			case *expr.Ct:
				if e.SourceRegister {
					if e.Key == expr.CtKeyMARK {
						v, k, ok := rg.load(e.Register, 4)
						if !ok {
							st.markKnown = 0
							continue
						}
						st.markVal, st.markKnown = binary.NativeEndian.Uint32(v), binary.NativeEndian.Uint32(k)
					}
					continue
				}
				if e.OptDirection {
					rg.unknown(e.Register, 16)
					continue
				}
				switch e.Key {
				case expr.CtKeySTATE:
					rg.store(e.Register, binary.NativeEndian.AppendUint32(nil, p.state), nil)
				case expr.CtKeyMARK:
					rg.store(e.Register, binary.NativeEndian.AppendUint32(nil, st.markVal), binary.NativeEndian.AppendUint32(nil, st.markKnown))
				case expr.CtKeySTATUS, expr.CtKeyDIRECTION, expr.CtKeyPROTOCOL, expr.CtKeyEXPIRATION, expr.CtKeySECMARK:
					rg.unknown(e.Register, 4)
				default:
					rg.unknown(e.Register, 16)
				}
			case *expr.Immediate:
				rg.store(e.Register, e.Data, nil)
			case *expr.Bitwise:
				v, k, ok := rg.load(e.SourceRegister, int(e.Len))
				if !ok || len(e.Mask) != int(e.Len) || len(e.Xor) != int(e.Len) {
					rg.unknown(e.DestRegister, int(e.Len))
					continue
				}
				for j := range v {
					v[j] = (v[j] & e.Mask[j]) ^ e.Xor[j]
					k[j] |= ^e.Mask[j]
				}
				rg.store(e.DestRegister, v, k)
			case *expr.Byteorder:
				rg.unknown(e.DestRegister, int(e.Len))
			case *expr.Cmp:
				v, k, ok := rg.load(e.Register, len(e.Data))
				t := maybe
				if ok {
					t = cmpTri(e.Op, v, k, e.Data)
				}
				if !branch(t) {
					return
				}
			case *expr.Range:
				v, k, ok := rg.load(e.Register, len(e.FromData))
				t := maybe
				if ok && len(e.ToData) == len(e.FromData) && allKnown(k) {
					in := bytes.Compare(v, e.FromData) >= 0 && bytes.Compare(v, e.ToData) <= 0
					t = no
					if in == (e.Op == expr.CmpOpEq) {
						t = yes
					}
				}
				if !branch(t) {
					return
				}
			case *expr.Lookup:
				set, ok := c.rs.Sets[SetRef{ref.Family, ref.Table, e.SetName}]
				isVmap := e.IsDestRegSet && e.DestRegister == 0
				t, elem := maybe, (*nftables.SetElement)(nil)
				if ok {
					t, elem = lookup(set, &rg, e.SourceRegister)
				}
				if isVmap {
					switch {
					case t == no:
						out = append(out, ruleResult{kind: rNext, st: st})
					case t == yes && elem != nil && elem.VerdictData != nil:
						out = append(out, verdict(elem.VerdictData, st))
					default:
						out = append(out, ruleResult{kind: rUnknown})
					}
					return
				}
				if e.Invert {
					t = not(t)
				}
				if !branch(t) {
					return
				}
				if e.IsDestRegSet {
					rg.unknown(e.DestRegister, 16)
				}
			case *expr.Verdict:
				out = append(out, verdict(e, st))
				return
			case *expr.Reject:
				out = append(out, ruleResult{kind: rDrop})
				return
			case *expr.Counter, *expr.Log, *expr.Notrack, *expr.NAT, *expr.Masq, *expr.Redir:
				// statements that neither drop nor stop the rule
			case *expr.Limit, *expr.Quota, *expr.Connlimit, *expr.Objref, *expr.Match:
				if !branch(maybe) {
					return
				}
			case *expr.Target:
				switch {
				case slices.Contains(xtNonTerminal, e.Name):
				case e.Name == "REJECT":
					out = append(out, ruleResult{kind: rDrop})
					return
				default:
					out = append(out, ruleResult{kind: rUnknown})
					return
				}
			case *expr.Queue:
				out = append(out, ruleResult{kind: rUnknown})
				return
			default:
				// Anything else may have written any register and may stop the rule.
				rg.known = [64]byte{}
				if !branch(maybe) {
					return
				}
			}
		}
		out = append(out, ruleResult{kind: rNext, st: st})
	}
	run(0, regs{}, st)
	return out
}

func verdict(v *expr.Verdict, st pstate) ruleResult {
	switch v.Kind {
	case expr.VerdictAccept:
		return ruleResult{kind: rAccept}
	case expr.VerdictDrop:
		return ruleResult{kind: rDrop}
	case expr.VerdictReturn:
		return ruleResult{kind: rReturn, st: st}
	case expr.VerdictJump:
		return ruleResult{kind: rJump, chain: v.Chain, st: st}
	case expr.VerdictGoto:
		return ruleResult{kind: rGoto, chain: v.Chain, st: st}
	case expr.VerdictContinue, expr.VerdictBreak:
		return ruleResult{kind: rNext, st: st}
	}
	return ruleResult{kind: rUnknown}
}

// lookup reports whether the key in register r is in set, and the element found.
func lookup(set Set, rg *regs, r uint32) (tri, *nftables.SetElement) {
	if len(set.Elements) == 0 {
		return no, nil
	}
	n := len(set.Elements[0].Key)
	v, k, ok := rg.load(r, n)
	if !ok || !allKnown(k) {
		return maybe, nil
	}
	els := set.Elements
	if !set.Interval {
		for i := range els {
			if bytes.Equal(els[i].Key, v) {
				return yes, &els[i]
			}
		}
		return no, nil
	}
	for i := range els {
		if len(els[i].KeyEnd) == n { // a concatenation's range element
			if bytes.Compare(els[i].Key, v) <= 0 && bytes.Compare(v, els[i].KeyEnd) <= 0 {
				return yes, &els[i]
			}
		}
	}
	// Interval sets: the greatest boundary at or below v decides.
	sorted := slices.Clone(els)
	sort.SliceStable(sorted, func(i, j int) bool { return bytes.Compare(sorted[i].Key, sorted[j].Key) < 0 })
	var best *nftables.SetElement
	for i := range sorted {
		if len(sorted[i].Key) != n || len(sorted[i].KeyEnd) > 0 {
			continue
		}
		if bytes.Compare(sorted[i].Key, v) <= 0 {
			best = &sorted[i]
		}
	}
	if best != nil && !best.IntervalEnd {
		return yes, best
	}
	return no, nil
}
