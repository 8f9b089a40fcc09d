package firewall

import (
	"strings"
	"testing"
)

func TestParseAllow(t *testing.T) {
	for _, tc := range []struct {
		in, want, err string
	}{
		{in: "192.0.2.0/24", want: "192.0.2.0/24"},
		{in: "192.0.2.7", want: "192.0.2.7/32"},
		{in: "2001:db8::/32 tcp/22", want: "2001:db8::/32 tcp/22"},
		{in: "  10.0.0.0/8   udp/68 ", want: "10.0.0.0/8 udp/68"},
		{in: "", err: "want \"CIDR\""},
		{in: "10.0.0.0/8 tcp/22 x", err: "want \"CIDR\""},
		{in: "10.0.0.1/8", err: "host bits set (the network is 10.0.0.0/8)"},
		{in: "10.0.0.0/33", err: "is not a CIDR"},
		{in: "::ffff:10.0.0.0/104", err: "IPv4 form"},
		{in: "fe80::1%eth0", err: "not an address or CIDR"},
		{in: "host.example", err: "not an address or CIDR"},
		{in: "10.0.0.0/8 tcp/0", err: "out of range"},
		{in: "10.0.0.0/8 icmp", err: "want PROTO/PORT"},
	} {
		a, err := ParseAllow(tc.in)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("ParseAllow(%q) = %v, %v; want error %q", tc.in, a, err, tc.err)
		case tc.err == "" && (err != nil || a.String() != tc.want):
			t.Errorf("ParseAllow(%q) = %v, %v; want %s", tc.in, a, err, tc.want)
		}
	}
}

func TestCheckGateStealth(t *testing.T) {
	for _, s := range []Stealth{"", StealthClosed, StealthDark, StealthOff} {
		if err := CheckGate(Gate{Stealth: s}); err != nil {
			t.Errorf("%q: %v", s, err)
		}
	}
	if err := CheckGate(Gate{Stealth: "hidden"}); err == nil {
		t.Error("an unknown stealth mode passed")
	}
	if err := CheckGate(Gate{Stealth: StealthDark, Allow: []Allow{{}}}); err == nil {
		t.Error("an allow entry without a network passed")
	}
}
