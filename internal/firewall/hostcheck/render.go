//go:build linux

package hostcheck

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Render writes a rule much as nft lists it ("tcp dport 22 drop"), counters left out, with its
// handle. Expressions it does not know are named by their kind.
func Render(ref ChainRef, r *nftables.Rule, rs *Ruleset) string {
	var fields [24]string // field name per 32-bit register slot
	field := func(reg uint32) string {
		o, ok := offset(reg)
		if !ok || fields[o/4] == "" {
			return "reg " + strconv.Itoa(int(reg))
		}
		return fields[o/4]
	}
	setField := func(reg uint32, name string) {
		if o, ok := offset(reg); ok {
			fields[o/4] = name
		}
	}
	var terms []string
	add := func(s string) {
		// "meta l4proto tcp" then "th dport 22" reads "tcp dport 22".
		if n := len(terms); n > 0 && strings.HasPrefix(s, "th ") {
			for _, p := range []string{"meta l4proto ", "ip protocol ", "ip6 nexthdr "} {
				if proto, ok := strings.CutPrefix(terms[n-1], p); ok && (proto == "tcp" || proto == "udp") {
					terms[n-1] = proto + strings.TrimPrefix(s, "th")
					return
				}
			}
		}
		terms = append(terms, s)
	}
	for _, x := range r.Exprs {
		switch e := x.(type) {
		case *expr.Meta:
			if e.SourceRegister {
				add("meta " + metaName(e.Key) + " set " + field(e.Register))
				continue
			}
			name := "meta " + metaName(e.Key)
			if e.Key == expr.MetaKeyIIFNAME || e.Key == expr.MetaKeyOIFNAME {
				name = metaName(e.Key)
			}
			setField(e.Register, name)
		case *expr.Payload:
			if e.OperationType != expr.PayloadLoad {
				add("payload write")
				continue
			}
			setField(e.DestRegister, payloadName(ref.Family, e))
		case *expr.Ct:
			if e.SourceRegister {
				add("ct " + ctName(e.Key) + " set " + field(e.Register))
				continue
			}
			setField(e.Register, "ct "+ctName(e.Key))
		case *expr.Immediate:
			setField(e.Register, fmt.Sprintf("0x%x", e.Data))
		case *expr.Bitwise:
			name := field(e.SourceRegister)
			if len(e.Mask) == 4 && len(e.Xor) == 4 {
				m, xr := binary.NativeEndian.Uint32(e.Mask), binary.NativeEndian.Uint32(e.Xor)
				switch {
				case xr == 0:
					name += fmt.Sprintf(" and %#x", m)
				case m == ^xr:
					name += fmt.Sprintf(" | %#x", xr)
				default:
					name += fmt.Sprintf(" and %#x xor %#x", m, xr)
				}
			} else {
				name += " (bitwise)"
			}
			setField(e.DestRegister, name)
		case *expr.Byteorder:
			setField(e.DestRegister, field(e.SourceRegister))
		case *expr.Cmp:
			name := field(e.Register)
			// "ct state and 0x6 != 0" is how nft writes "ct state established,related".
			if m, ok := strings.CutPrefix(name, "ct state and "); ok && e.Op == expr.CmpOpNeq && len(e.Data) == 4 && binary.NativeEndian.Uint32(e.Data) == 0 {
				if v, err := strconv.ParseUint(m, 0, 32); err == nil {
					add("ct state " + value("ct state", binary.NativeEndian.AppendUint32(nil, uint32(v))))
					continue
				}
			}
			add(name + cmpOp(e.Op) + value(name, e.Data))
		case *expr.Range:
			name := field(e.Register)
			op := " "
			if e.Op == expr.CmpOpNeq {
				op = " != "
			}
			add(name + op + value(name, e.FromData) + "-" + value(name, e.ToData))
		case *expr.Lookup:
			name := field(e.SourceRegister)
			op := " "
			if e.Invert {
				op = " != "
			}
			add(name + op + setText(ref, e.SetName, name, rs) + map[bool]string{true: " map", false: ""}[e.IsDestRegSet])
		case *expr.Verdict:
			add(verdictText(e))
		case *expr.Reject:
			add("reject")
		case *expr.Counter:
		case *expr.Log:
			add("log")
		case *expr.Limit:
			add("limit")
		case *expr.Match:
			add("xt match " + e.Name)
		case *expr.Target:
			add("xt target " + e.Name)
		default:
			add(strings.ToLower(strings.TrimPrefix(fmt.Sprintf("%T", x), "*expr.")))
		}
	}
	return strings.Join(terms, " ") + fmt.Sprintf(" (handle %d)", r.Handle)
}

func metaName(k expr.MetaKey) string {
	switch k {
	case expr.MetaKeyNFPROTO:
		return "nfproto"
	case expr.MetaKeyL4PROTO:
		return "l4proto"
	case expr.MetaKeyPROTOCOL:
		return "protocol"
	case expr.MetaKeyIIFNAME:
		return "iifname"
	case expr.MetaKeyOIFNAME:
		return "oifname"
	case expr.MetaKeyIIF:
		return "iif"
	case expr.MetaKeyMARK:
		return "mark"
	}
	return fmt.Sprintf("key-%d", k)
}

func ctName(k expr.CtKey) string {
	switch k {
	case expr.CtKeySTATE:
		return "state"
	case expr.CtKeyMARK:
		return "mark"
	case expr.CtKeySTATUS:
		return "status"
	case expr.CtKeyDIRECTION:
		return "direction"
	}
	return fmt.Sprintf("key-%d", k)
}

func payloadName(fam nftables.TableFamily, e *expr.Payload) string {
	switch e.Base {
	case expr.PayloadBaseTransportHeader:
		switch {
		case e.Offset == 2 && e.Len == 2:
			return "th dport"
		case e.Offset == 0 && e.Len == 2:
			return "th sport"
		}
		return fmt.Sprintf("@th,%d,%d", e.Offset*8, e.Len*8)
	case expr.PayloadBaseNetworkHeader:
		if fam != nftables.TableFamilyIPv6 {
			switch {
			case e.Offset == 9 && e.Len == 1:
				return "ip protocol"
			case e.Offset == 12 && e.Len == 4:
				return "ip saddr"
			case e.Offset == 16 && e.Len == 4:
				return "ip daddr"
			}
		}
		if fam != nftables.TableFamilyIPv4 {
			switch {
			case e.Offset == 6 && e.Len == 1:
				return "ip6 nexthdr"
			case e.Offset == 8 && e.Len == 16:
				return "ip6 saddr"
			case e.Offset == 24 && e.Len == 16:
				return "ip6 daddr"
			}
		}
		return fmt.Sprintf("@nh,%d,%d", e.Offset*8, e.Len*8)
	}
	return fmt.Sprintf("@ll,%d,%d", e.Offset*8, e.Len*8)
}

func cmpOp(op expr.CmpOp) string {
	switch op {
	case expr.CmpOpEq:
		return " "
	case expr.CmpOpNeq:
		return " != "
	case expr.CmpOpLt:
		return " < "
	case expr.CmpOpLte:
		return " <= "
	case expr.CmpOpGt:
		return " > "
	case expr.CmpOpGte:
		return " >= "
	}
	return " ? "
}

var ctStates = []struct {
	bit  uint32
	name string
}{
	{expr.CtStateBitINVALID, "invalid"}, {expr.CtStateBitESTABLISHED, "established"},
	{expr.CtStateBitRELATED, "related"}, {expr.CtStateBitNEW, "new"}, {expr.CtStateBitUNTRACKED, "untracked"},
}

// value formats data the way nft shows the field it is compared with.
func value(field string, d []byte) string {
	switch {
	case field == "meta l4proto" || field == "ip protocol" || field == "ip6 nexthdr":
		if len(d) >= 1 {
			switch d[0] {
			case unix.IPPROTO_TCP:
				return "tcp"
			case unix.IPPROTO_UDP:
				return "udp"
			case unix.IPPROTO_ICMP:
				return "icmp"
			case unix.IPPROTO_ICMPV6:
				return "ipv6-icmp"
			}
			return strconv.Itoa(int(d[0]))
		}
	case field == "meta nfproto" && len(d) >= 1:
		switch d[0] {
		case unix.NFPROTO_IPV4:
			return "ipv4"
		case unix.NFPROTO_IPV6:
			return "ipv6"
		}
	case (field == "th dport" || field == "th sport") && len(d) == 2:
		return strconv.Itoa(int(binary.BigEndian.Uint16(d)))
	case strings.HasPrefix(field, "ct state") && len(d) == 4:
		v := binary.NativeEndian.Uint32(d)
		var names []string
		for _, s := range ctStates {
			if v&s.bit != 0 {
				names = append(names, s.name)
			}
		}
		if len(names) > 0 && !strings.Contains(field, " and ") {
			return strings.Join(names, ",")
		}
	case (field == "iifname" || field == "oifname") && len(d) > 0:
		return strconv.Quote(strings.TrimRight(string(d), "\x00"))
	case strings.HasPrefix(field, "ct mark") && len(d) == 4:
		return fmt.Sprintf("%#x", binary.NativeEndian.Uint32(d))
	}
	if a, ok := netip.AddrFromSlice(d); ok && (strings.HasSuffix(field, "saddr") || strings.HasSuffix(field, "daddr")) {
		return a.String()
	}
	return fmt.Sprintf("0x%x", d)
}

// setText is "@name" for a named set and "{ a, b }" for an anonymous one the check has read.
func setText(ref ChainRef, name, field string, rs *Ruleset) string {
	set, ok := rs.Sets[SetRef{ref.Family, ref.Table, name}]
	if !ok || !strings.HasPrefix(name, "__") {
		return "@" + name
	}
	var items []string
	for i, e := range set.Elements {
		if i == 8 {
			items = append(items, "...")
			break
		}
		if e.IntervalEnd {
			continue
		}
		s := value(field, e.Key)
		if e.VerdictData != nil {
			s += " : " + verdictText(e.VerdictData)
		}
		items = append(items, s)
	}
	return "{ " + strings.Join(items, ", ") + " }"
}

func verdictText(v *expr.Verdict) string {
	switch v.Kind {
	case expr.VerdictAccept:
		return "accept"
	case expr.VerdictDrop:
		return "drop"
	case expr.VerdictReturn:
		return "return"
	case expr.VerdictJump:
		return "jump " + v.Chain
	case expr.VerdictGoto:
		return "goto " + v.Chain
	case expr.VerdictContinue:
		return "continue"
	case expr.VerdictQueue:
		return "queue"
	}
	return fmt.Sprintf("verdict %d", v.Kind)
}
