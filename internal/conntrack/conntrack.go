// Package conntrack ends established connections by deleting their connection tracking
// entries, so that a revoked source's open sessions stop at the gate too.
package conntrack

import (
	"net"
	"net/netip"

	"github.com/sesame-knock/sesame/internal/netport"
)

// match selects the entries whose original direction comes from src to one of ports.
type match struct {
	src   netip.Addr
	ports map[netport.Port]bool
}

func newMatch(src netip.Addr, ports []netport.Port) match {
	m := match{src: src.Unmap(), ports: make(map[netport.Port]bool, len(ports))}
	for _, p := range ports {
		m.ports[p] = true
	}
	return m
}

// matches reports whether an entry with original source address srcIP, protocol proto and
// destination port dport is one to delete.
func (m match) matches(srcIP net.IP, proto uint8, dport uint16) bool {
	a, ok := netip.AddrFromSlice(srcIP)
	if !ok || a.Unmap() != m.src {
		return false
	}
	return m.ports[netport.Port{Proto: netport.Proto(proto), Num: dport}]
}
