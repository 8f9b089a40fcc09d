package config

import (
	"encoding"
	"fmt"
	"math"
	"net/netip"
	"strings"
	"time"

	"github.com/sesame-knock/sesame/internal/fwknop"
	"github.com/sesame-knock/sesame/internal/knock"
	"github.com/sesame-knock/sesame/internal/netport"
)

// field is one key of a native TOML table, as the decoder found it: whether the file sets it,
// its value, and what is wrong with it. Decoding never fails on a bad value, so that the loader
// reports the first error in a fixed order and knows which table of an array it is in.
type field[T any] struct {
	set bool
	v   T
	err error
}

// UnmarshalTOML implements toml.Unmarshaler.
func (f *field[T]) UnmarshalTOML(data any) error {
	f.set = true
	f.err = decodeValue(&f.v, data)
	return nil
}

// fieldErr is the error of a field, for the loader's walk over a table.
func (f *field[T]) fieldErr() error { return f.err }

// decodeValue converts a decoded TOML value into dst.
func decodeValue(dst, data any) error {
	switch dst := dst.(type) {
	case *string:
		s, ok := data.(string)
		if !ok {
			return fmt.Errorf("want a string, got %s", typeName(data))
		}
		*dst = s
	case *bool:
		b, ok := data.(bool)
		if !ok {
			return fmt.Errorf("want true or false, got %s", typeName(data))
		}
		*dst = b
	case *int:
		n, ok := data.(int64)
		if !ok {
			return fmt.Errorf("want an integer, got %s", typeName(data))
		}
		if n < math.MinInt32 || n > math.MaxInt32 {
			return fmt.Errorf("%d is out of range", n)
		}
		*dst = int(n)
	case *[]string:
		arr, ok := data.([]any)
		if !ok {
			return fmt.Errorf("want a list of strings, got %s", typeName(data))
		}
		out := make([]string, len(arr))
		for i, e := range arr {
			if out[i], ok = e.(string); !ok {
				return fmt.Errorf("want a list of strings, found %s", typeName(e))
			}
		}
		*dst = out
	case *duration:
		return dst.decode(data)
	case *[]duration:
		arr, ok := data.([]any)
		if !ok {
			return fmt.Errorf("want a list of durations, got %s", typeName(data))
		}
		out := make([]duration, len(arr))
		for i, e := range arr {
			if err := out[i].decode(e); err != nil {
				return fmt.Errorf("element %d: %w", i+1, err)
			}
		}
		*dst = out
	case *date:
		return dst.decode(data)
	case *[]element:
		return decodeList(dst, data, func(i int, err error) error { return fmt.Errorf("element %d: %w", i+1, err) })
	case *[]knockElem:
		arr, ok := data.([]any)
		if !ok {
			return fmt.Errorf("want a list of elements, got %s", typeName(data))
		}
		out := make([]knockElem, len(arr))
		for i, e := range arr {
			if err := out[i].decode(e); err != nil {
				return fmt.Errorf("element %d: %w", i+1, err)
			}
		}
		*dst = out
	case *[]openPort:
		return decodeList(dst, data, nil)
	case *[]portRange:
		return decodeList(dst, data, nil)
	case *[]source:
		return decodeList(dst, data, nil)
	case *[]forwardEntry:
		return decodeList(dst, data, nil)
	case encoding.TextUnmarshaler:
		s, ok := data.(string)
		if !ok {
			return fmt.Errorf("want a string, got %s", typeName(data))
		}
		return dst.UnmarshalText([]byte(s))
	default:
		panic(fmt.Sprintf("config: no decoding into %T", dst))
	}
	return nil
}

// decodeList converts a list of strings into values of a text type; wrap, if set, says which.
func decodeList[T any, P interface {
	*T
	encoding.TextUnmarshaler
}](dst *[]T, data any, wrap func(int, error) error) error {
	var ss []string
	if err := decodeValue(&ss, data); err != nil {
		return err
	}
	out := make([]T, len(ss))
	for i, s := range ss {
		if err := P(&out[i]).UnmarshalText([]byte(s)); err != nil {
			if wrap != nil {
				err = wrap(i, err)
			}
			return err
		}
	}
	*dst = out
	return nil
}

// typeName names the TOML type of a decoded value.
func typeName(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case time.Time:
		return "a date-time"
	case []any, []map[string]any:
		return "an array"
	case map[string]any:
		return "a table"
	}
	return fmt.Sprintf("%T", v)
}

// duration is a Go duration string ("1m30s") or an integer number of seconds, not negative.
type duration time.Duration

func (d *duration) decode(data any) error {
	switch v := data.(type) {
	case string:
		p, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("%q is not a duration", v)
		}
		if p < 0 {
			return fmt.Errorf("%q is negative", v)
		}
		*d = duration(p)
	case int64:
		if v < 0 || v > math.MaxInt64/int64(time.Second) {
			return fmt.Errorf("%d seconds is out of range", v)
		}
		*d = duration(time.Duration(v) * time.Second)
	default:
		return fmt.Errorf("want a duration such as \"30s\" or an integer number of seconds, got %s", typeName(data))
	}
	return nil
}

// date is a day, as a TOML date or a string "2027-01-31"; it starts at local midnight.
type date time.Time

func (d *date) decode(data any) error {
	switch e := data.(type) {
	case time.Time:
		*d = date(time.Date(e.Year(), e.Month(), e.Day(), e.Hour(), e.Minute(), e.Second(), 0, time.Local))
	case string:
		t, err := time.ParseInLocation("2006-01-02", e, time.Local)
		if err != nil {
			return fmt.Errorf("%q: want a date, as in 2027-01-31", e)
		}
		*d = date(t)
	default:
		return fmt.Errorf("want a date, as in 2027-01-31, got %s", typeName(data))
	}
	return nil
}

// element is a native sequence element (ParseElement).
type element knock.Element

func (e *element) UnmarshalText(b []byte) error {
	v, err := ParseElement(string(b))
	*e = element(v)
	return err
}

// openPort is a port to open, "tcp/22" (parseOpen).
type openPort netport.Port

func (p *openPort) UnmarshalText(b []byte) error {
	v, err := parseOpen(string(b))
	*p = openPort(v)
	return err
}

// source is a network knocks or packets may come from (ParseSource).
type source netip.Prefix

func (s *source) UnmarshalText(b []byte) error {
	v, err := ParseSource(string(b))
	*s = source(v)
	return err
}

// target is a door's target address (ParseTarget).
type target netip.Addr

func (a *target) UnmarshalText(b []byte) error {
	v, err := ParseTarget(string(b))
	*a = target(v)
	return err
}

// tcpFlags is a TCP flag condition (ParseTCPFlags).
type tcpFlags knock.TCPFlags

func (f *tcpFlags) UnmarshalText(b []byte) error {
	v, err := ParseTCPFlags(string(b))
	*f = tcpFlags(v)
	return err
}

// udpPort is the port SPA listens on, "udp/62201".
type udpPort uint16

func (u *udpPort) UnmarshalText(b []byte) error {
	port, err := netport.Parse(string(b))
	switch {
	case err != nil:
		return fmt.Errorf("%q: want udp/PORT, as in udp/62201", b)
	case port.Proto != netport.UDP:
		return fmt.Errorf("%q: SPA packets are UDP: want udp/PORT", b)
	}
	*u = udpPort(port.Num)
	return nil
}

// digest is an fwknop HMAC digest name.
type digest fwknop.Digest

func (d *digest) UnmarshalText(b []byte) error {
	v, err := fwknop.ParseDigest(string(b))
	if err != nil {
		return fmt.Errorf("%q: want md5, sha1, sha256, sha384, sha512, sha3_256 or sha3_512", b)
	}
	*d = digest(v)
	return nil
}

// mode is an fwknop encryption mode name.
type mode fwknop.Mode

func (m *mode) UnmarshalText(b []byte) error {
	v, err := fwknop.ParseMode(string(b))
	if err != nil {
		return fmt.Errorf("%q: want cbc, ecb, cfb, ofb, ctr or legacy", b)
	}
	*m = mode(v)
	return nil
}

// converts a list of a text type into the model's type.
func convertList[T, U any](in []T, conv func(T) U) []U {
	if in == nil {
		return nil
	}
	out := make([]U, len(in))
	for i, v := range in {
		out[i] = conv(v)
	}
	return out
}

// ParseElement parses a native sequence element: "7000/tcp", "8000/udp", "7000" (TCP) or "icmp"
// (an ICMP echo).
func ParseElement(s string) (knock.Element, error) {
	num, proto, hasProto := strings.Cut(s, "/")
	if !hasProto {
		if strings.EqualFold(s, "icmp") {
			return knock.Element{Proto: netport.ICMP}, nil
		}
		proto = "tcp"
	}
	p, err := netport.ParseProto(proto)
	if err != nil {
		if _, e2 := netport.ParseProto(num); e2 == nil {
			return knock.Element{}, fmt.Errorf("%q: sequence elements are written PORT/PROTO, as in 7000/tcp", s)
		}
		return knock.Element{}, fmt.Errorf("%q: %w", s, err)
	}
	if p == netport.ICMP {
		return knock.Element{}, fmt.Errorf("%q: an icmp knock has no port: write icmp", s)
	}
	n, err := netport.ParseNumber(num)
	if err != nil {
		return knock.Element{}, fmt.Errorf("%q: %w", s, err)
	}
	return knock.Element{Proto: p, Num: n}, nil
}

// parseOpen parses an open entry, "tcp/22", with a hint for the sequence order "22/tcp".
func parseOpen(s string) (netport.Port, error) {
	port, err := netport.Parse(s)
	if err != nil {
		if num, proto, ok := strings.Cut(s, "/"); ok {
			if _, e2 := netport.ParseNumber(num); e2 == nil {
				if _, e3 := netport.ParseProto(proto); e3 == nil {
					return port, fmt.Errorf("%q: open entries are written PROTO/PORT, as in tcp/22", s)
				}
			}
		}
	}
	return port, err
}

// ParseTCPFlags parses a TCP flag condition in knockd's syntax: a comma-separated list of fin,
// syn, rst, psh, ack and urg (any case), each optionally prefixed with "!" for must-be-clear.
// Spaces around items and empty items are allowed; "" is no condition. A flag both required and
// forbidden is an error.
func ParseTCPFlags(s string) (knock.TCPFlags, error) {
	var f knock.TCPFlags
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, clear := strings.CutPrefix(item, "!")
		bit, ok := knock.FlagBit(name)
		if !ok {
			return knock.TCPFlags{}, fmt.Errorf("unknown tcp flag %q (want fin, syn, rst, psh, ack or urg, "+
				"optionally prefixed with !)", item)
		}
		if clear {
			f.Clear |= bit
		} else {
			f.Set |= bit
		}
		if f.Set&f.Clear != 0 {
			return knock.TCPFlags{}, fmt.Errorf("tcp flag %s is both required and forbidden", strings.ToLower(name))
		}
	}
	return f, nil
}

// ParseSource parses a source network, "10.0.0.0/8" or a bare address "192.0.2.7". Host bits are
// cleared; IPv4-mapped IPv6 and zones are refused.
func ParseSource(s string) (netip.Prefix, error) {
	var pfx netip.Prefix
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return pfx, fmt.Errorf("%q is not an address or CIDR prefix", s)
		}
		pfx = p
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return pfx, fmt.Errorf("%q is not an address or CIDR prefix", s)
		}
		pfx = netip.PrefixFrom(a, a.BitLen())
	}
	if pfx.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("%q is an IPv4-mapped IPv6 prefix: write the IPv4 form", s)
	}
	return pfx.Masked(), nil
}

// ParseTarget parses a door's target address. An IPv4-mapped IPv6 address becomes IPv4; a zone is
// refused.
func ParseTarget(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("%q is not an IP address", s)
	}
	return a.Unmap(), nil
}
