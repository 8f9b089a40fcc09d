//go:build linux

package ipt

import (
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/netport"
)

func TestStealthRules(t *testing.T) {
	b := &Backend{}
	prot := []netport.Port{{Proto: netport.TCP, Num: 2222}, {Proto: netport.UDP, Num: 62201}}
	allow := []firewall.Allow{
		{Prefix: netip.MustParsePrefix("192.0.2.0/24"), Port: netport.Port{Proto: netport.TCP, Num: 22}},
		{Prefix: netip.MustParsePrefix("2001:db8::/32")},
	}
	tail := func(r [][]string, n int) string {
		var l []string
		for _, x := range r[len(r)-n:] {
			l = append(l, strings.Join(x, " "))
		}
		return strings.Join(l, "\n")
	}
	for _, tc := range []struct {
		name string
		gate firewall.Gate
		inet uint8
		n    int
		want string
	}{
		{"off", firewall.Gate{Protected: prot, Stealth: firewall.StealthOff}, unix.AF_INET, 3,
			"-p tcp --dport 2222 -j DROP\n-p udp --dport 62201 -j DROP\n-j RETURN"},
		{"empty is off", firewall.Gate{Protected: prot}, unix.AF_INET, 3,
			"-p tcp --dport 2222 -j DROP\n-p udp --dport 62201 -j DROP\n-j RETURN"},
		{"closed v4", firewall.Gate{Protected: prot, Stealth: firewall.StealthClosed}, unix.AF_INET, 3,
			"-p tcp --dport 2222 -j REJECT --reject-with tcp-reset\n-p udp --dport 62201 -j REJECT --reject-with icmp-port-unreachable\n-j RETURN"},
		{"closed v6", firewall.Gate{Protected: prot, Stealth: firewall.StealthClosed}, unix.AF_INET6, 2,
			"-p udp --dport 62201 -j REJECT --reject-with icmp6-port-unreachable\n-j RETURN"},
		{"dark v4", firewall.Gate{Protected: prot, Stealth: firewall.StealthDark, Allow: allow}, unix.AF_INET, 6,
			"-p udp --dport 62201 -j DROP\n-i lo -j RETURN\n-p tcp ! --syn -m socket -j RETURN\n-s 192.0.2.0/24 -p tcp --dport 22 -j RETURN\n-j DROP\n-j RETURN"},
		{"dark v6", firewall.Gate{Protected: prot, Stealth: firewall.StealthDark, Allow: allow}, unix.AF_INET6, 4,
			"-p tcp ! --syn -m socket -j RETURN\n-s 2001:db8::/32 -j RETURN\n-j DROP\n-j RETURN"},
	} {
		r := stealthRules(b.rules("sesame4", tc.gate), tc.inet, tc.gate)
		if got := tail(r, tc.n); got != tc.want {
			t.Errorf("%s: rules end\n%s\nwant\n%s", tc.name, got, tc.want)
		}
	}
}
