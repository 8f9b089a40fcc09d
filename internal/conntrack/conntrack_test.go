package conntrack

import (
	"net"
	"net/netip"
	"testing"

	"github.com/sesame-knock/sesame/internal/netport"
)

func TestMatch(t *testing.T) {
	ssh := netport.Port{Proto: netport.TCP, Num: 22}
	dns := netport.Port{Proto: netport.UDP, Num: 53}
	v4 := newMatch(netip.MustParseAddr("198.51.100.7"), []netport.Port{ssh, dns})
	v6 := newMatch(netip.MustParseAddr("2001:db8::7"), []netport.Port{ssh})
	mapped := newMatch(netip.MustParseAddr("::ffff:198.51.100.7"), []netport.Port{ssh})
	tests := []struct {
		name  string
		m     match
		src   string
		proto uint8
		dport uint16
		want  bool
	}{
		{"v4 tcp", v4, "198.51.100.7", 6, 22, true},
		{"v4 udp", v4, "198.51.100.7", 17, 53, true},
		{"v4 16-byte form", v4, "::ffff:198.51.100.7", 6, 22, true},
		{"other source", v4, "198.51.100.8", 6, 22, false},
		{"other port", v4, "198.51.100.7", 6, 23, false},
		{"udp on a tcp port", v4, "198.51.100.7", 17, 22, false},
		{"icmp", v4, "198.51.100.7", 1, 0, false},
		{"v6", v6, "2001:db8::7", 6, 22, true},
		{"v6 other", v6, "2001:db8::8", 6, 22, false},
		{"mapped source matches v4 entries", mapped, "198.51.100.7", 6, 22, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.m.matches(net.ParseIP(tc.src), tc.proto, tc.dport); got != tc.want {
				t.Errorf("matches = %v, want %v", got, tc.want)
			}
		})
	}
	if v4.matches(nil, 6, 22) {
		t.Error("an entry without an address matched")
	}
}
