// Package netport names transport-layer services: a protocol and a port, as in "tcp/22".
package netport

import (
	"fmt"
	"strconv"
	"strings"
)

// Proto is an IP protocol number that sesame knows how to knock on or open.
type Proto uint8

// The protocols sesame uses. ICMP stands for ICMP echo on IPv4 and ICMPv6 echo on IPv6.
const (
	ICMP Proto = 1
	TCP  Proto = 6
	UDP  Proto = 17
)

// String returns "tcp", "udp" or "icmp".
func (p Proto) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	case ICMP:
		return "icmp"
	}
	return "proto(" + strconv.Itoa(int(p)) + ")"
}

// ParseProto parses "tcp", "udp" or "icmp" in any case.
func ParseProto(s string) (Proto, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "tcp":
		return TCP, nil
	case "udp":
		return UDP, nil
	case "icmp":
		return ICMP, nil
	}
	return 0, fmt.Errorf("unknown protocol %q (want tcp, udp or icmp)", s)
}

// Port is a protocol and a port number. For ICMP the number is 0.
type Port struct {
	Proto Proto
	Num   uint16
}

// String returns the "tcp/22" form.
func (p Port) String() string {
	if p.Proto == ICMP {
		return "icmp"
	}
	return p.Proto.String() + "/" + strconv.Itoa(int(p.Num))
}

// Parse parses "tcp/22" or "udp/53". Ports must be 1-65535; ICMP is not a port that can be opened.
func Parse(s string) (Port, error) {
	proto, num, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return Port{}, fmt.Errorf("port %q: want PROTO/PORT, as in tcp/22", s)
	}
	p, err := ParseProto(proto)
	if err != nil {
		return Port{}, fmt.Errorf("port %q: %w", s, err)
	}
	if p == ICMP {
		return Port{}, fmt.Errorf("port %q: only tcp and udp ports can be opened", s)
	}
	n, err := ParseNumber(num)
	if err != nil {
		return Port{}, fmt.Errorf("port %q: %w", s, err)
	}
	return Port{Proto: p, Num: n}, nil
}

// ParseNumber parses a decimal port number in 1-65535, with no sign, spaces or other text.
func ParseNumber(s string) (uint16, error) {
	if s == "" {
		return 0, fmt.Errorf("empty port number")
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("port number %q is not a decimal number", s)
		}
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("port number %q is out of range 1-65535", s)
	}
	return uint16(n), nil
}

// MarshalText returns the "tcp/22" form (for JSON and TOML).
func (p Port) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText parses the "tcp/22" form, as Parse does.
func (p *Port) UnmarshalText(b []byte) error {
	q, err := Parse(string(b))
	if err != nil {
		return err
	}
	*p = q
	return nil
}

// IsZero reports whether p is the zero Port (no protocol, no number).
func (p Port) IsZero() bool { return p == Port{} }
