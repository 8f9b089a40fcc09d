package knockclient

import (
	"context"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/netport"
)

func tcp(n uint16) netport.Port { return netport.Port{Proto: netport.TCP, Num: n} }
func udp(n uint16) netport.Port { return netport.Port{Proto: netport.UDP, Num: n} }

var icmpHit = netport.Port{Proto: netport.ICMP}

func TestParseArgs(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name    string
		args    string
		want    Options
		wantErr string // substring; "" for success
	}{
		{name: "plain", args: "host 7000 8000 9000",
			want: Options{Host: "host", Hits: []netport.Port{tcp(7000), tcp(8000), tcp(9000)}}},
		{name: "suffixes", args: "10.0.0.1 7000:udp 8000:tcp 9000",
			want: Options{Host: "10.0.0.1", Hits: []netport.Port{udp(7000), tcp(8000), tcp(9000)}}},
		{name: "suffix in any case", args: "h 1234:UDP 1235:Tcp 1:uDp",
			want: Options{Host: "h", Hits: []netport.Port{udp(1234), tcp(1235), udp(1)}}},
		{name: "unknown suffix", args: "h 1236:foo", wantErr: `unknown protocol "foo"`},
		{name: "empty suffix", args: "h 1236:", wantErr: "unknown protocol"},
		{name: "-u makes bare ports udp, suffix wins", args: "-u h 1 2:tcp 3",
			want: Options{Host: "h", Hits: []netport.Port{udp(1), tcp(2), udp(3)}}},
		{name: "--udp", args: "--udp h 1",
			want: Options{Host: "h", Hits: []netport.Port{udp(1)}}},
		{name: "icmp", args: "h icmp 7000 0:icmp :ICMP",
			want: Options{Host: "h", Hits: []netport.Port{icmpHit, tcp(7000), icmpHit, icmpHit}}},
		{name: "icmp with port", args: "h 7:icmp", wantErr: "icmp takes no port"},
		{name: "payloads", args: "h 7000 8000:udp:hex:cafe01 icmp:hex:00FF 9000:udp",
			want: Options{Host: "h", Hits: []netport.Port{tcp(7000), udp(8000), icmpHit, udp(9000)}, Payloads: [][]byte{nil, {0xca, 0xfe, 0x01}, {0x00, 0xff}, nil}}},
		{name: "payload with -u", args: "-u h 8000:hex:01", want: Options{Host: "h", Hits: []netport.Port{udp(8000)}, Payloads: [][]byte{{0x01}}}},
		{name: "source port", args: "--source-port 40000 h 7000 8000:udp", want: Options{Host: "h", SourcePort: 40000, Hits: []netport.Port{tcp(7000), udp(8000)}}},
		{name: "source port =", args: "h 7000 --source-port=1", want: Options{Host: "h", SourcePort: 1, Hits: []netport.Port{tcp(7000)}}},
		{name: "source port 0", args: "--source-port 0 h 7000", wantErr: "out of range"},
		{name: "source port big", args: "--source-port 65536 h 7000", wantErr: "out of range"},
		{name: "source port missing", args: "h 7000 --source-port", wantErr: "--source-port needs a value"},
		{name: "source port and icmp", args: "--source-port 4000 h 7000 icmp", wantErr: "a ping has no source port"},
		{name: "tcp payload", args: "h 7000:tcp:hex:01", wantErr: "only a udp or icmp hit carries a payload"},
		{name: "bare tcp payload", args: "h 7000:hex:01", wantErr: "only a udp or icmp hit carries a payload"},
		{name: "bad payload", args: "h 8000:udp:hex:zz", wantErr: "not hexadecimal"},
		{name: "empty payload", args: "h 8000:udp:hex:", wantErr: "1-64 bytes"},
		{name: "long payload", args: "h 8000:udp:hex:" + strings.Repeat("ab", 65), wantErr: "1-64 bytes"},
		{name: "port 0", args: "h 0", wantErr: "out of range"},
		{name: "port 65535", args: "h 65535", want: Options{Host: "h", Hits: []netport.Port{tcp(65535)}}},
		{name: "port 65536 does not wrap", args: "h 65536", wantErr: "out of range"},
		{name: "port 70000 does not wrap", args: "h 70000:udp", wantErr: "out of range"},
		{name: "huge port", args: "h 99999999999999999999", wantErr: "out of range"},
		{name: "negative port", args: "h -1", wantErr: "ports cannot be negative"},
		{name: "negative port after --", args: "h -- -1", wantErr: "unknown tcp service"},
		{name: "unknown service", args: "h no-such-service-xyz", wantErr: `unknown tcp service "no-such-service-xyz"`},
		{name: "empty port", args: "h :tcp", wantErr: "no port"},
		{name: "delay", args: "-d 100 h 1", want: Options{Host: "h", Delay: 100 * ms, Hits: []netport.Port{tcp(1)}}},
		{name: "delay attached", args: "-d250 h 1", want: Options{Host: "h", Delay: 250 * ms, Hits: []netport.Port{tcp(1)}}},
		{name: "--delay=", args: "--delay=5 h 1", want: Options{Host: "h", Delay: 5 * ms, Hits: []netport.Port{tcp(1)}}},
		{name: "--delay value", args: "--delay 7 h 1", want: Options{Host: "h", Delay: 7 * ms, Hits: []netport.Port{tcp(1)}}},
		{name: "delay zero", args: "-d 0 h 1", want: Options{Host: "h", Hits: []netport.Port{tcp(1)}}},
		{name: "negative delay", args: "-d -5 h 1", wantErr: "must not be negative"},
		{name: "negative --delay", args: "--delay=-1 h 1", wantErr: "must not be negative"},
		{name: "bad delay", args: "-d abc h 1", wantErr: "not a number"},
		{name: "missing delay", args: "h 1 -d", wantErr: "needs a value"},
		{name: "missing --delay", args: "h 1 --delay", wantErr: "needs a value"},
		{name: "-4", args: "-4 h 1", want: Options{Host: "h", Family: 4, Hits: []netport.Port{tcp(1)}}},
		{name: "--ipv6", args: "--ipv6 h 1", want: Options{Host: "h", Family: 6, Hits: []netport.Port{tcp(1)}}},
		{name: "-4 and -6", args: "-4 -6 h 1", wantErr: "exclude each other"},
		{name: "cluster", args: "-4vu h 1", want: Options{Host: "h", Family: 4, Verbose: true, Hits: []netport.Port{udp(1)}}},
		{name: "cluster with delay", args: "-vd 30 h 1", want: Options{Host: "h", Verbose: true, Delay: 30 * ms, Hits: []netport.Port{tcp(1)}}},
		{name: "flags after host", args: "h -v 1 --udp 2", want: Options{Host: "h", Verbose: true, Hits: []netport.Port{udp(1), udp(2)}}},
		{name: "--verbose", args: "--verbose h 1", want: Options{Host: "h", Verbose: true, Hits: []netport.Port{tcp(1)}}},
		{name: "help", args: "-h", want: Options{Help: true}},
		{name: "--help with junk", args: "h 99999 --help", want: Options{Help: true}},
		{name: "version", args: "-V", want: Options{Version: true}},
		{name: "unknown short", args: "-x h 1", wantErr: "unknown option -x"},
		{name: "unknown long", args: "--source=1.2.3.4 h 1", wantErr: "unknown option --source"},
		{name: "long flag with value", args: "--udp=yes h 1", wantErr: "takes no value"},
		{name: "no host", args: "-v", wantErr: "no host"},
		{name: "no ports", args: "h", wantErr: "no ports"},
		{name: "ipv6 literal host", args: "-6 fd00::1 7000", want: Options{Host: "fd00::1", Family: 6, Hits: []netport.Port{tcp(7000)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseArgs(strings.Fields(tt.args))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseArgs(%q) error = %v, want one containing %q", tt.args, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseArgs(%q): %v", tt.args, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseArgs(%q) =\n%+v\nwant\n%+v", tt.args, got, tt.want)
			}
		})
	}
}

func TestParseArgsServiceNames(t *testing.T) {
	for _, tc := range []struct {
		arg, service string
		proto        netport.Proto
	}{{"ssh", "ssh", netport.TCP}, {"domain:UDP", "domain", netport.UDP}} {
		want, err := net.LookupPort(tc.proto.String(), tc.service)
		if err != nil {
			t.Logf("skipping %s: no services entry: %v", tc.arg, err)
			continue
		}
		got, err := ParseArgs([]string{"h", tc.arg})
		if err != nil {
			t.Fatal(err)
		}
		if w := (netport.Port{Proto: tc.proto, Num: uint16(want)}); got.Hits[0] != w {
			t.Errorf("ParseArgs(h %s) hits = %v, want %v", tc.arg, got.Hits, w)
		}
	}
}

func TestResolve(t *testing.T) {
	ctx := context.Background()
	v4, v6 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")
	tests := []struct {
		host    string
		family  int
		src     netip.Addr
		want    netip.Addr
		wantErr bool
	}{
		{host: "192.0.2.1", want: v4},
		{host: "192.0.2.1", family: 4, want: v4},
		{host: "192.0.2.1", family: 6, wantErr: true},
		{host: "2001:db8::1", family: 4, wantErr: true},
		{host: "[2001:db8::1]", want: v6},
		{host: "::ffff:192.0.2.1", want: v4},
		{host: "fe80::1%eth0", family: 6, want: netip.MustParseAddr("fe80::1%eth0")},
		{host: "2001:db8::1", src: netip.MustParseAddr("192.0.2.9"), wantErr: true},
		{host: "localhost", family: 4, want: netip.MustParseAddr("127.0.0.1")},
	}
	for _, tt := range tests {
		got, err := Resolve(ctx, tt.host, tt.family, tt.src)
		if tt.wantErr {
			if err == nil {
				t.Errorf("Resolve(%q, %d, %v) = %v, want an error", tt.host, tt.family, tt.src, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Resolve(%q, %d, %v) = %v, %v; want %v", tt.host, tt.family, tt.src, got, err, tt.want)
		}
	}
}

func TestSendLogsAndValidates(t *testing.T) {
	ctx := context.Background()
	if err := Send(ctx, Options{Host: "192.0.2.1"}, nil); err == nil {
		t.Error("Send without hits succeeded")
	}
	err := SendOne(ctx, netip.MustParseAddr("192.0.2.9"), netip.MustParseAddr("2001:db8::1"), udp(9))
	if err == nil || !strings.Contains(err.Error(), "address family") {
		t.Errorf("SendOne across families: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := SendOne(cctx, netip.Addr{}, netip.MustParseAddr("127.0.0.1"), udp(9)); err == nil {
		t.Error("SendOne with a cancelled context succeeded")
	}
	// UDP to the loopback needs no privileges; the log sees each hit.
	var lines []string
	opts := Options{Host: "127.0.0.1", Hits: []netport.Port{udp(9), udp(10)}, Verbose: true, Delay: time.Millisecond}
	if err := Send(ctx, opts, func(s string) { lines = append(lines, s) }); err != nil {
		t.Fatal(err)
	}
	want := []string{"hitting udp 127.0.0.1:9", "hitting udp 127.0.0.1:10"}
	if !reflect.DeepEqual(lines, want) {
		t.Errorf("log = %q, want %q", lines, want)
	}
}
