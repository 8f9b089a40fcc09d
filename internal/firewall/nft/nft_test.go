//go:build linux

package nft

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/netport"
)

// Constants that x/sys/unix does not have (linux/netfilter/nf_tables.h, linux/netfilter.h).
const (
	nftMsgDestroySetElem = 30
	nfDrop               = 0
	nfAccept             = 1
	nlaTypeMask          = ^uint16(unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
)

var tcp2222 = netport.Port{Proto: netport.TCP, Num: 2222}

func TestGrantKeyLayout(t *testing.T) {
	for _, tc := range []struct {
		src  string
		port netport.Port
		want string
	}{
		{"127.0.0.1", tcp2222, "7f000001" + "06000000" + "08ae0000"},
		{"::ffff:127.0.0.1", tcp2222, "7f000001" + "06000000" + "08ae0000"}, // mapped: an IPv4 grant
		{"198.18.0.2", netport.Port{Proto: netport.UDP, Num: 53}, "c6120002" + "11000000" + "00350000"},
		{"fd5e:5a3e::2", tcp2222, "fd5e5a3e000000000000000000000002" + "06000000" + "08ae0000"},
	} {
		a := netip.MustParseAddr(tc.src)
		got := hex.EncodeToString(GrantKey(a, tc.port))
		if got != tc.want {
			t.Errorf("GrantKey(%s, %s) = %s, want %s", tc.src, tc.port, got, tc.want)
		}
		ra, rp, err := ParseGrantKey(GrantKey(a, tc.port))
		if err != nil || ra != a.Unmap() || rp != tc.port {
			t.Errorf("ParseGrantKey(GrantKey(%s, %s)) = %s, %s, %v", tc.src, tc.port, ra, rp, err)
		}
	}
	if _, _, err := ParseGrantKey(make([]byte, 8)); err == nil {
		t.Error("ParseGrantKey accepted an 8-byte key")
	}
}

// recorder is a fake nf_tables: it records every request and acknowledges what asks for it.
type recorder struct {
	reqs []netlink.Message
	fail error // returned for every request when set
}

// options are backend options that talk to r instead of the kernel.
func (r *recorder) options() Options {
	return Options{connOpts: []nftables.ConnOption{nftables.WithTestDial(r.dial)}}
}

func (r *recorder) dial(req []netlink.Message) ([]netlink.Message, error) {
	if r.fail != nil {
		return nil, r.fail
	}
	r.reqs = append(r.reqs, req...)
	var replies []netlink.Message
	for _, m := range req {
		if m.Header.Flags&netlink.Acknowledge != 0 {
			replies = append(replies, netlink.Message{
				Header: netlink.Header{Length: 4, Type: netlink.Error, Sequence: m.Header.Sequence, PID: m.Header.PID},
				Data:   []byte{0, 0, 0, 0},
			})
		}
	}
	return replies, nil
}

func msgType(m netlink.Message) int { return int(m.Header.Type & 0xff) }

// TestRuleLayout pins the netlink messages of the gate's rules, decoded into nft(8)'s debug
// notation. The want text is what `nft --debug=netlink` prints for the rules in the package
// documentation (kernel 6.18, nft 1.0.6), so a wrong register shows up here rather than as a
// rule that silently never matches.
func TestRuleLayout(t *testing.T) {
	rec := &recorder{}
	c, err := nftables.New(nftables.WithTestDial(rec.dial))
	if err != nil {
		t.Fatal(err)
	}
	gate := firewall.Gate{Protected: []netport.Port{tcp2222, tcp2222, {Proto: netport.UDP, Num: 53}}}
	live4 := []nftables.SetElement{{Key: GrantKey(netip.MustParseAddr("127.0.0.1"), tcp2222), Timeout: 1500 * time.Millisecond}}
	if err := queueApply(c, "sesame", gate, live4, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}

	var rules []string
	var kinds []string
	elems := map[string][]string{}
	for _, m := range rec.reqs {
		switch msgType(m) {
		case unix.NFT_MSG_NEWTABLE:
			kinds = append(kinds, "newtable")
		case unix.NFT_MSG_DELTABLE:
			kinds = append(kinds, "deltable")
		case unix.NFT_MSG_NEWSET:
			kinds = append(kinds, "newset")
		case unix.NFT_MSG_NEWSETELEM:
			name, keys := decodeElems(t, m.Data[4:])
			elems[name] = append(elems[name], keys...)
		case unix.NFT_MSG_NEWCHAIN:
			kinds = append(kinds, "newchain")
		case unix.NFT_MSG_NEWRULE:
			kinds = append(kinds, "newrule")
			rules = append(rules, decodeRule(t, m.Data[4:]))
		}
	}
	if got, want := strings.Join(kinds, " "), "newtable deltable newtable newset newset newset newset newset newchain newrule newrule newrule newrule newrule newrule newrule"; got != want {
		t.Errorf("batch = %s\nwant      %s", got, want)
	}
	want := []string{`
  [ meta load l4proto => reg 1 ]
  [ cmp eq reg 1 0x00000006 ]
  [ ct load direction => reg 1 ]
  [ cmp eq reg 1 0x00000001 ]
  [ meta load l4proto => reg 1 ]
  [ payload load 2b @ transport header + 2 => reg 9 ]
  [ lookup reg 1 set protected ]
  [ immediate reg 0 drop ]`, `
  [ meta load nfproto => reg 1 ]
  [ cmp eq reg 1 0x00000002 ]
  [ payload load 4b @ network header + 12 => reg 1 ]
  [ lookup reg 1 set bans4 ]
  [ meta load l4proto => reg 1 ]
  [ payload load 2b @ transport header + 2 => reg 9 ]
  [ lookup reg 1 set protected ]
  [ immediate reg 0 drop ]`, `
  [ meta load nfproto => reg 1 ]
  [ cmp eq reg 1 0x0000000a ]
  [ payload load 16b @ network header + 8 => reg 1 ]
  [ lookup reg 1 set bans6 ]
  [ meta load l4proto => reg 1 ]
  [ payload load 2b @ transport header + 2 => reg 9 ]
  [ lookup reg 1 set protected ]
  [ immediate reg 0 drop ]`, `
  [ ct load state => reg 1 ]
  [ bitwise reg 1 = ( reg 1 & 0x00000006 ) ^ 0x00000000 ]
  [ cmp neq reg 1 0x00000000 ]
  [ immediate reg 0 accept ]`, `
  [ meta load nfproto => reg 1 ]
  [ cmp eq reg 1 0x00000002 ]
  [ payload load 4b @ network header + 12 => reg 1 ]
  [ meta load l4proto => reg 9 ]
  [ payload load 2b @ transport header + 2 => reg 10 ]
  [ lookup reg 1 set grants4 ]
  [ ct load mark => reg 1 ]
  [ bitwise reg 1 = ( reg 1 & 0xdfffffff ) ^ 0x20000000 ]
  [ ct set mark with reg 1 ]
  [ immediate reg 0 accept ]`, `
  [ meta load nfproto => reg 1 ]
  [ cmp eq reg 1 0x0000000a ]
  [ payload load 16b @ network header + 8 => reg 1 ]
  [ meta load l4proto => reg 2 ]
  [ payload load 2b @ transport header + 2 => reg 13 ]
  [ lookup reg 1 set grants6 ]
  [ ct load mark => reg 1 ]
  [ bitwise reg 1 = ( reg 1 & 0xdfffffff ) ^ 0x20000000 ]
  [ ct set mark with reg 1 ]
  [ immediate reg 0 accept ]`, `
  [ meta load l4proto => reg 1 ]
  [ payload load 2b @ transport header + 2 => reg 9 ]
  [ lookup reg 1 set protected ]
  [ immediate reg 0 drop ]`}
	if len(rules) != len(want) {
		t.Fatalf("got %d rules, want %d:\n%s", len(rules), len(want), strings.Join(rules, "\n"))
	}
	for i := range want {
		if rules[i] != want[i] {
			t.Errorf("rule %d:\n got:%s\nwant:%s", i, rules[i], want[i])
		}
	}
	if got, want := strings.Join(elems["grants4"], ","), "7f0000010600000008ae0000 timeout 1500ms"; got != want {
		t.Errorf("grants4 elements = %s, want %s", got, want)
	}
	if got, want := strings.Join(elems["protected"], ","), "0600000008ae0000,1100000000350000"; got != want {
		t.Errorf("protected elements = %s, want %s (deduplicated)", got, want)
	}
}

// TestEmptyGateHasNoDrop checks that a gate without ports has no drop rule.
func TestEmptyGateHasNoDrop(t *testing.T) {
	rec := &recorder{}
	c, _ := nftables.New(nftables.WithTestDial(rec.dial))
	if err := queueApply(c, "sesame", firewall.Gate{}, nil, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, m := range rec.reqs {
		if msgType(m) == unix.NFT_MSG_NEWRULE {
			n++
			if r := decodeRule(t, m.Data[4:]); strings.Contains(r, "drop") {
				t.Errorf("empty gate has a drop rule:%s", r)
			}
		}
	}
	if n != 3 {
		t.Errorf("empty gate: %d rules, want 3", n)
	}
}

func TestCarryOver(t *testing.T) {
	k := GrantKey(netip.MustParseAddr("127.0.0.1"), tcp2222)
	in := []nftables.SetElement{
		{Key: k, Timeout: 30 * time.Second, Expires: 12345 * time.Millisecond}, // live: keeps its remaining time
		{Key: k, Timeout: 30 * time.Second, Expires: 0},                        // expired
		{Key: k}, // permanent, added by hand
		{Key: k[:8], Timeout: time.Second, Expires: time.Second}, // foreign layout
	}
	out := carryOver(in, key4Len)
	if len(out) != 2 || out[0].Timeout != 12345*time.Millisecond || out[1].Timeout != 0 {
		t.Fatalf("carryOver = %+v", out)
	}
}

func TestGrantBatch(t *testing.T) {
	rec := &recorder{}
	b, err := New(rec.options())
	if err != nil {
		t.Fatal(err)
	}
	rec.reqs = nil
	ctx := context.Background()
	c4 := netip.MustParseAddr("198.18.0.2")
	c6 := netip.MustParseAddr("fd5e:5a3e::2")
	err = b.Grant(ctx,
		firewall.Grant{Src: c4, Port: tcp2222, Timeout: time.Second},
		firewall.Grant{Src: c6, Port: tcp2222, Timeout: time.Second},
		firewall.Grant{Src: c4, Port: tcp2222, Timeout: 2 * time.Second}, // duplicate: last wins
	)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range rec.reqs {
		switch msgType(m) {
		case nftMsgDestroySetElem:
			name, keys := decodeElems(t, m.Data[4:])
			got = append(got, "destroy "+name+" "+strings.Join(keys, ","))
		case unix.NFT_MSG_NEWSETELEM:
			name, keys := decodeElems(t, m.Data[4:])
			got = append(got, "add "+name+" "+strings.Join(keys, ","))
		}
	}
	want := []string{
		"destroy grants4 c61200020600000008ae0000",
		"add grants4 c61200020600000008ae0000 timeout 2000ms",
		"destroy grants6 fd5e5a3e0000000000000000000000020600000008ae0000",
		"add grants6 fd5e5a3e0000000000000000000000020600000008ae0000 timeout 1000ms",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("grant batch:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, bad := range []firewall.Grant{
		{Src: c4, Port: tcp2222},
		{Port: tcp2222, Timeout: time.Second},
		{Src: c4, Port: netport.Port{Proto: netport.ICMP}, Timeout: time.Second},
	} {
		if err := b.Grant(ctx, bad); err == nil {
			t.Errorf("Grant(%+v) succeeded", bad)
		}
	}
	if err := b.Apply(ctx, firewall.Gate{Protected: []netport.Port{{Proto: netport.ICMP}}}); err == nil {
		t.Error("Apply accepted icmp")
	}
}

// TestStartupErrors checks that New says clearly why nf_tables cannot be used.
func TestStartupErrors(t *testing.T) {
	for _, tc := range []struct {
		errno syscall.Errno
		want  string
	}{
		{syscall.EOPNOTSUPP, "nf_tables is not available in this kernel"},
		{syscall.EINVAL, "nf_tables is not available in this kernel"},
		{syscall.EPROTONOSUPPORT, "no nfnetlink"},
		{syscall.EPERM, "CAP_NET_ADMIN"},
	} {
		rec := &recorder{fail: tc.errno}
		_, err := New(rec.options())
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New with kernel error %v = %v, want it to mention %q", tc.errno, err, tc.want)
		}
	}
}

// decodeElems returns the set name and the keys (hex, with " timeout Nms" when set) of a
// NEWSETELEM/DESTROYSETELEM message body.
func decodeElems(t *testing.T, b []byte) (string, []string) {
	t.Helper()
	ad := decoder(t, b)
	var name string
	var keys []string
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_SET_ELEM_LIST_SET:
			name = ad.String()
		case unix.NFTA_SET_ELEM_LIST_ELEMENTS:
			ad.Nested(func(list *netlink.AttributeDecoder) error {
				for list.Next() {
					list.Nested(func(el *netlink.AttributeDecoder) error {
						var s string
						for el.Next() {
							switch el.Type() {
							case unix.NFTA_SET_ELEM_KEY:
								el.Nested(func(k *netlink.AttributeDecoder) error {
									for k.Next() {
										s = hex.EncodeToString(k.Bytes()) + s
									}
									return nil
								})
							case unix.NFTA_SET_ELEM_TIMEOUT:
								s += fmt.Sprintf(" timeout %dms", el.Uint64())
							}
						}
						keys = append(keys, s)
						return nil
					})
				}
				return nil
			})
		}
	}
	if err := ad.Err(); err != nil {
		t.Fatal(err)
	}
	return name, keys
}

func decoder(t *testing.T, b []byte) *netlink.AttributeDecoder {
	t.Helper()
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		t.Fatal(err)
	}
	ad.ByteOrder = binary.BigEndian
	return ad
}

// decodeRule renders a NEWRULE message body's expressions as nft --debug=netlink does.
func decodeRule(t *testing.T, b []byte) string {
	t.Helper()
	var out bytes.Buffer
	ad := decoder(t, b)
	for ad.Next() {
		if ad.Type() != unix.NFTA_RULE_EXPRESSIONS {
			continue
		}
		ad.Nested(func(list *netlink.AttributeDecoder) error {
			for list.Next() {
				list.Nested(func(e *netlink.AttributeDecoder) error {
					var name string
					for e.Next() {
						switch e.Type() {
						case unix.NFTA_EXPR_NAME:
							name = e.String()
						case unix.NFTA_EXPR_DATA:
							a := map[uint16][]byte{}
							e.Nested(func(d *netlink.AttributeDecoder) error {
								for d.Next() {
									a[d.Type()] = d.Bytes()
								}
								return nil
							})
							out.WriteString("\n  [ " + renderExpr(name, a) + " ]")
						}
					}
					return nil
				})
			}
			return nil
		})
	}
	if err := ad.Err(); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

func be32(b []byte) uint32 { return binary.BigEndian.Uint32(b) }

// words prints data as nft does: 32-bit words in host order.
func words(b []byte) string {
	var s []string
	for i := 0; i < len(b); i += 4 {
		var w [4]byte
		copy(w[:], b[i:])
		s = append(s, fmt.Sprintf("0x%08x", binary.NativeEndian.Uint32(w[:])))
	}
	return strings.Join(s, " ")
}

// dataValue unwraps a nested NFTA_DATA_VALUE.
func dataValue(b []byte) []byte {
	attrs, _ := netlink.UnmarshalAttributes(b)
	for _, a := range attrs {
		if a.Type&nlaTypeMask == unix.NFTA_DATA_VALUE {
			return a.Data
		}
	}
	return nil
}

func renderExpr(name string, a map[uint16][]byte) string {
	switch name {
	case "ct":
		key := map[uint32]string{unix.NFT_CT_STATE: "state", unix.NFT_CT_MARK: "mark", unix.NFT_CT_DIRECTION: "direction"}[be32(a[unix.NFTA_CT_KEY])]
		if r, ok := a[unix.NFTA_CT_SREG]; ok {
			return fmt.Sprintf("ct set %s with reg %d", key, be32(r))
		}
		return fmt.Sprintf("ct load %s => reg %d", key, be32(a[unix.NFTA_CT_DREG]))
	case "bitwise":
		return fmt.Sprintf("bitwise reg %d = ( reg %d & %s ) ^ %s", be32(a[unix.NFTA_BITWISE_DREG]), be32(a[unix.NFTA_BITWISE_SREG]),
			words(dataValue(a[unix.NFTA_BITWISE_MASK])), words(dataValue(a[unix.NFTA_BITWISE_XOR])))
	case "cmp":
		op := map[uint32]string{unix.NFT_CMP_EQ: "eq", unix.NFT_CMP_NEQ: "neq"}[be32(a[unix.NFTA_CMP_OP])]
		return fmt.Sprintf("cmp %s reg %d %s", op, be32(a[unix.NFTA_CMP_SREG]), words(dataValue(a[unix.NFTA_CMP_DATA])))
	case "meta":
		key := map[uint32]string{unix.NFT_META_NFPROTO: "nfproto", unix.NFT_META_L4PROTO: "l4proto"}[be32(a[unix.NFTA_META_KEY])]
		return fmt.Sprintf("meta load %s => reg %d", key, be32(a[unix.NFTA_META_DREG]))
	case "payload":
		base := map[uint32]string{0: "link", 1: "network", 2: "transport"}[be32(a[unix.NFTA_PAYLOAD_BASE])]
		return fmt.Sprintf("payload load %db @ %s header + %d => reg %d", be32(a[unix.NFTA_PAYLOAD_LEN]), base,
			be32(a[unix.NFTA_PAYLOAD_OFFSET]), be32(a[unix.NFTA_PAYLOAD_DREG]))
	case "lookup":
		return fmt.Sprintf("lookup reg %d set %s", be32(a[unix.NFTA_LOOKUP_SREG]), strings.TrimRight(string(a[unix.NFTA_LOOKUP_SET]), "\x00"))
	case "immediate":
		var verdict string
		attrs, _ := netlink.UnmarshalAttributes(a[unix.NFTA_IMMEDIATE_DATA])
		for _, d := range attrs {
			if d.Type&nlaTypeMask == unix.NFTA_DATA_VERDICT {
				vs, _ := netlink.UnmarshalAttributes(d.Data)
				for _, v := range vs {
					if v.Type&nlaTypeMask == unix.NFTA_VERDICT_CODE {
						verdict = map[uint32]string{nfAccept: "accept", nfDrop: "drop"}[be32(v.Data)]
					}
				}
			}
		}
		return fmt.Sprintf("immediate reg %d %s", be32(a[unix.NFTA_IMMEDIATE_DREG]), verdict)
	}
	return "unknown " + name
}
