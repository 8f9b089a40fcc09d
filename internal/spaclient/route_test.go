package spaclient

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/fwknop"
	"github.com/sesame-knock/sesame/internal/netport"
	"github.com/sesame-knock/sesame/internal/spa"
)

// TestUseRoute: which address a request asks for, given the client's address on the route to
// the server, for each way of asking and each format.
func TestUseRoute(t *testing.T) {
	a := netip.MustParseAddr
	tests := []struct {
		name          string
		format        Format
		allow         string // -a
		source        bool   // -s
		local, server string
		want          string // the address asked for; "" for the packet's source
		wantErr       string
	}{
		{"default ipv4", FormatSesame, "", false, "198.51.100.77", "192.0.2.1", "198.51.100.77", ""},
		{"default loopback", FormatSesame, "", false, "127.0.0.1", "127.0.0.1", "127.0.0.1", ""},
		{"default ipv6", FormatSesame, "", false, "2001:db8::5", "2001:db8::1", "2001:db8::5", ""},
		{"default ipv6 loopback", FormatSesame, "", false, "::1", "::1", "::1", ""},
		{"default fwknop ipv4", FormatFwknop, "", false, "198.18.0.2", "198.18.0.1", "198.18.0.2", ""},
		{"mapped local", FormatFwknop, "", false, "::ffff:198.18.0.2", "198.18.0.1", "198.18.0.2", ""},
		{"link-local zone dropped", FormatSesame, "", false, "fe80::2%eth0", "fe80::1%eth0", "fe80::2", ""},
		{"private to private", FormatSesame, "", false, "10.0.0.5", "10.0.0.1", "10.0.0.5", ""},
		{"ula to ula", FormatSesame, "", false, "fd00::5", "fd00::1", "fd00::5", ""},
		{"-a wins", FormatSesame, "203.0.113.9", false, "198.51.100.77", "192.0.2.1", "203.0.113.9", ""},
		{"-a wins behind NAT", FormatSesame, "203.0.113.9", false, "192.168.1.5", "192.0.2.1", "203.0.113.9", ""},
		{"-s", FormatSesame, "", true, "198.51.100.77", "192.0.2.1", "", ""},
		{"-s behind NAT", FormatFwknop, "", true, "192.168.1.5", "192.0.2.1", "", ""},
		{"-s fwknop ipv6", FormatFwknop, "", true, "2001:db8::5", "2001:db8::1", "", ""},
		{"fwknop ipv6", FormatFwknop, "", false, "2001:db8::5", "2001:db8::1", "", "fwknop's format carries only IPv4"},
		{"rfc1918 to public", FormatSesame, "", false, "192.168.1.5", "192.0.2.1", "", "a private address: a NAT"},
		{"cgnat to public", FormatSesame, "", false, "100.64.7.8", "203.0.113.1", "", "a private address"},
		{"ula to public", FormatSesame, "", false, "fd00::5", "2001:db8::1", "", "a private address"},
		{"no local address", FormatSesame, "", false, "0.0.0.0", "192.0.2.1", "", "no local address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &Request{Format: tt.format, Source: tt.source}
			if tt.allow != "" {
				r.Allow = a(tt.allow)
			}
			err := r.UseRoute(a(tt.local), a(tt.server))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("UseRoute error = %v, want %q", err, tt.wantErr)
				}
				if r.Allow.IsValid() {
					t.Errorf("Allow = %v after an error", r.Allow)
				}
				return
			}
			if err != nil {
				t.Fatalf("UseRoute: %v", err)
			}
			got := ""
			if r.Allow.IsValid() {
				got = r.Allow.String()
			}
			if got != tt.want || r.Source != tt.source {
				t.Errorf("Allow, Source = %q, %v; want %q, %v", got, r.Source, tt.want, tt.source)
			}
		})
	}
}

// TestPacketNeedsAnAddress: a request that names no address and does not ask for its source
// is not built (it would otherwise go out as a source-address request).
func TestPacketNeedsAnAddress(t *testing.T) {
	b := newBed(t)
	o, err := ParseArgs(strings.Fields("192.0.2.7 -A tcp/22 --id alice --key-file " + b.sharedKey))
	if err != nil {
		t.Fatal(err)
	}
	r, err := Resolve(o, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Packet(time.Now(), bytes.NewReader(make([]byte, 1024))); !errors.Is(err, errNoAddr) {
		t.Fatalf("Packet without an address: err = %v, want errNoAddr", err)
	}
}

// TestOpenLoopback runs Open against a UDP socket on 127.0.0.1 and ::1 and decodes what
// arrives: by default the packet names the address it comes from (the route's), -a names the
// given one, -s asks for the source with a warning, -T sends nothing.
func TestOpenLoopback(t *testing.T) {
	b := newBed(t)
	sc, err := spa.NewSharedClient("alice", b.shared)
	if err != nil {
		t.Fatal(err)
	}
	ring, err := spa.NewKeyring(sc)
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"127.0.0.1", "::1"} {
		srv, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(host), 0)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
		port := srv.LocalAddr().(*net.UDPAddr).AddrPort().Port()
		recv := func(t *testing.T, wait time.Duration) ([]byte, netip.Addr) {
			t.Helper()
			buf := make([]byte, 2048)
			srv.SetReadDeadline(time.Now().Add(wait))
			n, from, err := srv.ReadFromUDPAddrPort(buf)
			if err != nil {
				return nil, netip.Addr{}
			}
			return buf[:n], from.Addr().Unmap()
		}
		base := host + " -p " + itoa(port) + " -A tcp/22 --id alice --key-file " + b.sharedKey
		tests := []struct {
			name     string
			args     string
			want     string // address asked for; "" for the packet's source
			wantWarn bool
			test     bool
		}{
			{"default", base, host, false, false},
			{"-a", base + " -a 198.51.100.4", "198.51.100.4", false, false},
			{"-s", base + " -s", "", true, false},
			{"-a unspecified is -s", base + " -a 0.0.0.0", "", true, false},
			{"-T", base + " -T -v", host, false, true},
		}
		for _, tt := range tests {
			t.Run(host+"/"+tt.name, func(t *testing.T) {
				o, err := ParseArgs(strings.Fields(tt.args))
				if err != nil {
					t.Fatal(err)
				}
				var stdout, stderr bytes.Buffer
				if err := Open(context.Background(), o, &stdout, &stderr); err != nil {
					t.Fatalf("Open: %v", err)
				}
				if got := strings.Contains(stderr.String(), SourceWarning); got != tt.wantWarn {
					t.Errorf("stderr = %q, want the source warning: %v", stderr.String(), tt.wantWarn)
				}
				if tt.test {
					if pkt, _ := recv(t, 200*time.Millisecond); pkt != nil {
						t.Fatalf("-T sent %d bytes", len(pkt))
					}
					if !strings.Contains(stdout.String(), "for "+tt.want+" (my address on the route to the server)") {
						t.Errorf("-T -v output = %q, want the route address %s", stdout.String(), tt.want)
					}
					return
				}
				pkt, from := recv(t, 2*time.Second)
				if pkt == nil {
					t.Fatal("no packet arrived")
				}
				req, err := spa.Open(pkt, ring, time.Now(), 0)
				if err != nil {
					t.Fatalf("spa.Open: %v", err)
				}
				got := ""
				if !req.FromSource() {
					got = req.Addr.String()
				}
				if got != tt.want {
					t.Errorf("packet from %s asks for %q, want %q", from, got, tt.want)
				}
				if tt.name == "default" && got != from.String() {
					t.Errorf("packet from %s asks for %s: not its own source", from, got)
				}
			})
		}
	}
}

// TestOpenLoopbackFwknop: fwknop's format gets the same default over IPv4; over IPv6, whose
// addresses its allow-IP field cannot carry, it is a usage error naming the ways out.
func TestOpenLoopbackFwknop(t *testing.T) {
	b := newBed(t)
	srv, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	port := srv.LocalAddr().(*net.UDPAddr).AddrPort().Port()
	o, err := ParseArgs(strings.Fields("127.0.0.1 --fwknop -p " + itoa(port) + " -A tcp/22 --key-file " + b.fwKey))
	if err != nil {
		t.Fatal(err)
	}
	if err := Open(context.Background(), o, io.Discard, io.Discard); err != nil {
		t.Fatalf("Open: %v", err)
	}
	buf := make([]byte, 2048)
	srv.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, _, err := srv.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatal(err)
	}
	m, err := fwknop.Decode(buf[:n], b.fwKeys())
	if err != nil {
		t.Fatal(err)
	}
	if m.FromSource() || m.AllowIP != netip.MustParseAddr("127.0.0.1") || len(m.Ports) != 1 || m.Ports[0] != (netport.Port{Proto: netport.TCP, Num: 22}) {
		t.Errorf("fwknop packet asks for %v %v, want 127.0.0.1 tcp/22", m.AllowIP, m.Ports)
	}
	o, err = ParseArgs(strings.Fields("::1 --fwknop -p " + itoa(port) + " -A tcp/22 --key-file " + b.fwKey))
	if err != nil {
		t.Fatal(err)
	}
	err = Open(context.Background(), o, io.Discard, io.Discard)
	if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "only IPv4") || !strings.Contains(err.Error(), "-s") {
		t.Errorf("fwknop format to ::1: err = %v, want a usage error about IPv4 naming -s", err)
	}
}

// TestParseArgsResolve: fwknop's -R and its long forms are refused with a message that names
// the ways that work; the other address flags combine as before.
func TestParseArgsResolve(t *testing.T) {
	for _, args := range []string{"h -A tcp/22 -R", "h --resolve-ip-http", "h --resolve-ip-https", "h --resolve-url https://example.invalid/", "h -R -s", "h -a 192.0.2.1 -R"} {
		_, err := ParseArgs(strings.Fields(args))
		if !errors.Is(err, ErrResolveIP) || !strings.Contains(err.Error(), "-a ADDRESS") || !strings.Contains(err.Error(), "-s") {
			t.Errorf("ParseArgs(%q) err = %v, want ErrResolveIP", args, err)
		}
	}
	for _, tt := range []struct {
		args    string
		allow   string
		source  bool
		wantErr string
	}{
		{"h", "", false, ""},
		{"h -a 192.0.2.1", "192.0.2.1", false, ""},
		{"h -s", "", true, ""},
		{"h --source-ip", "", true, ""},
		{"h --allow-ip 2001:db8::1", "2001:db8::1", false, ""},
		{"h -a 192.0.2.1 -s", "", false, "mutually exclusive"},
	} {
		o, err := ParseArgs(strings.Fields(tt.args))
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseArgs(%q) err = %v, want %q", tt.args, err, tt.wantErr)
			}
			continue
		}
		if err != nil || o.Allow != tt.allow || o.Source != tt.source {
			t.Errorf("ParseArgs(%q) = %q, %v, %v; want %q, %v", tt.args, o.Allow, o.Source, err, tt.allow, tt.source)
		}
	}
}

func itoa(p uint16) string { return strconv.Itoa(int(p)) }
