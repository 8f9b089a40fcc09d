//go:build linux

package ipt

import (
	"slices"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/sesame-knock/sesame/internal/firewall"
)

// stealthRules turns the chain rules of rules into those of gate's stealth mode for one family
// (unix.AF_INET or unix.AF_INET6). In "closed" the final drop of each protected port becomes
//
//	-A SESAME -p tcp --dport 2222 -j REJECT --reject-with tcp-reset
//	-A SESAME -p udp --dport 62201 -j REJECT --reject-with icmp-port-unreachable   (icmp6-port-unreachable)
//
// In "dark" the dark block goes before the final RETURN; its RETURNs hand the packet back to
// INPUT, so the host's own rules still apply:
//
//	-A SESAME -i lo -j RETURN
//	-A SESAME -p ipv6-icmp -m icmp6 --icmpv6-type 133..137 -j RETURN   (ip6tables, one per type)
//	-A SESAME -p tcp ! --syn -m socket -j RETURN   (pick-up of running connections, see the nft backend)
//	-A SESAME -s 198.51.100.0/24 -p tcp --dport 22 -j RETURN           (one per allow entry of the family)
//	-A SESAME -j DROP
func stealthRules(r [][]string, inet uint8, gate firewall.Gate) [][]string {
	r = slices.Clone(r)
	if gate.Rejects() {
		for i, x := range r {
			if len(x) == 6 && x[0] == "-p" && x[4] == "-j" && x[5] == "DROP" {
				with := "icmp-port-unreachable"
				switch {
				case x[1] == "tcp":
					with = "tcp-reset"
				case inet == unix.AF_INET6:
					with = "icmp6-port-unreachable"
				}
				r[i] = append(slices.Clone(x[:4]), "-j", "REJECT", "--reject-with", with)
			}
		}
	}
	if !gate.Dark() {
		return r
	}
	last := r[len(r)-1]
	r = r[:len(r)-1]
	r = append(r, []string{"-i", "lo", "-j", "RETURN"})
	if inet == unix.AF_INET6 {
		for t := 133; t <= 137; t++ {
			r = append(r, []string{"-p", "ipv6-icmp", "-m", "icmp6", "--icmpv6-type", strconv.Itoa(t), "-j", "RETURN"})
		}
	}
	r = append(r, []string{"-p", "tcp", "!", "--syn", "-m", "socket", "-j", "RETURN"})
	for _, a := range gate.Allow {
		if a.Prefix.Addr().Is6() != (inet == unix.AF_INET6) {
			continue
		}
		x := []string{"-s", a.Prefix.Masked().String()}
		if a.Port.Num != 0 {
			x = append(x, "-p", a.Port.Proto.String(), "--dport", strconv.Itoa(int(a.Port.Num)))
		}
		r = append(r, append(x, "-j", "RETURN"))
	}
	r = append(r, []string{"-j", "DROP"})
	return append(r, last)
}
