//go:build linux

package nft

import (
	"net/netip"
	"testing"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/netport"
)

// verdicts is the final statement of each rule: "accept", "drop", "reject tcp", "reject icmpx".
func verdicts(rules [][]expr.Any) []string {
	var out []string
	for _, r := range rules {
		switch v := r[len(r)-1].(type) {
		case *expr.Verdict:
			out = append(out, map[expr.VerdictKind]string{expr.VerdictAccept: "accept", expr.VerdictDrop: "drop"}[v.Kind])
		case *expr.Reject:
			out = append(out, map[uint32]string{unix.NFT_REJECT_TCP_RST: "reject tcp", unix.NFT_REJECT_ICMPX_UNREACH: "reject icmpx"}[v.Type])
		default:
			out = append(out, "?")
		}
	}
	return out
}

func TestGateExprs(t *testing.T) {
	allow := []firewall.Allow{
		{Prefix: netip.MustParsePrefix("192.0.2.0/24"), Port: netport.Port{Proto: netport.TCP, Num: 22}},
		{Prefix: netip.MustParsePrefix("2001:db8::1/128")},
	}
	base := []string{"drop", "drop", "drop", "accept", "accept", "accept"} // reply direction, bans4, bans6, established, grants4, grants6
	for _, tc := range []struct {
		name string
		gate firewall.Gate
		prot bool
		want []string
	}{
		{"off", firewall.Gate{Stealth: firewall.StealthOff}, true, append(base, "drop")},
		{"empty", firewall.Gate{}, true, append(base, "drop")},
		{"closed", firewall.Gate{Stealth: firewall.StealthClosed}, true, append(base, "reject tcp", "reject icmpx")},
		{"closed, nothing protected", firewall.Gate{Stealth: firewall.StealthClosed}, false, []string{"accept", "accept", "accept"}},
		{"dark", firewall.Gate{Stealth: firewall.StealthDark, Allow: allow}, true, append(base, "drop", "accept", "accept", "accept", "accept", "accept", "drop")},
		{"dark, nothing protected", firewall.Gate{Stealth: firewall.StealthDark}, false, []string{"accept", "accept", "accept", "accept", "accept", "accept", "drop"}},
	} {
		got := verdicts(GateExprs(tc.gate, tc.prot))
		if len(got) != len(tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
				break
			}
		}
	}
	// The /24 allow entry masks the address; the /128 one compares it whole.
	r := allowExprs(allow[0])
	if b, ok := r[3].(*expr.Bitwise); !ok || b.Mask[2] != 0xff || b.Mask[3] != 0 {
		t.Errorf("allow /24: %#v", r[3])
	}
	for _, e := range allowExprs(allow[1]) {
		if _, ok := e.(*expr.Bitwise); ok {
			t.Error("allow /128: a mask")
		}
	}
}
