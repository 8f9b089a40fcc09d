package config

import (
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/netport"
)

func TestParseForward(t *testing.T) {
	tcp := func(n uint16) netport.Port { return netport.Port{Proto: netport.TCP, Num: n} }
	for _, tc := range []struct {
		in      string
		want    Forward
		wantErr string
	}{
		{in: "tcp/8022 -> 198.19.0.2:22", want: Forward{Port: tcp(8022), To: netip.MustParseAddrPort("198.19.0.2:22")}},
		{in: "udp/5353->[fd5e:5a3f::2]:53", want: Forward{Port: netport.Port{Proto: netport.UDP, Num: 5353}, To: netip.MustParseAddrPort("[fd5e:5a3f::2]:53")}},
		{in: "tcp/55000 -> local:22", want: Forward{Port: tcp(55000), To: netip.AddrPortFrom(netip.Addr{}, 22), Local: true}},
		{in: "tcp/* -> local:22", want: Forward{Port: tcp(0), To: netip.AddrPortFrom(netip.Addr{}, 22), Local: true}},
		{in: "nat tcp/* -> local:22", want: Forward{Port: tcp(0), To: netip.AddrPortFrom(netip.Addr{}, 22), Local: true, NATOnly: true}},
		{in: "nat tcp/8022 -> 198.19.0.2:22", want: Forward{Port: tcp(8022), To: netip.MustParseAddrPort("198.19.0.2:22"), NATOnly: true}},
		{in: "nat tcp/* -> 198.19.0.2:22", wantErr: "only for local forwards"},
		{in: "tcp/8022", wantErr: "want PROTO/PORT -> ADDRESS:PORT"},
		{in: "tcp/* -> 198.19.0.2:22", wantErr: "only for local forwards"},
		{in: "icmp/0 -> 198.19.0.2:22", wantErr: "only tcp and udp"},
		{in: "tcp/8022 -> 198.19.0.2", wantErr: "is not ADDRESS:PORT"},
		{in: "tcp/8022 -> 198.19.0.2:0", wantErr: "port 0"},
		{in: "tcp/8022 -> 127.0.0.1:22", wantErr: "write local:PORT"},
		{in: "tcp/8022 -> 0.0.0.0:22", wantErr: "not a unicast address"},
		{in: "tcp/8022 -> [ff02::1]:22", wantErr: "not a unicast address"},
		{in: "tcp/8022 -> local:0", wantErr: "want a port 1-65535"},
		{in: "8022/tcp -> 198.19.0.2:22", wantErr: "PROTO/PORT"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseForward(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
			if again, err := ParseForward(got.String()); err != nil || again != got {
				t.Errorf("String %q does not parse back: %+v, %v", got.String(), again, err)
			}
		})
	}
}

// TestSPAForwardConfig: forward lists load, add their ports to the protected ones and their
// destinations to Destinations, and are refused when ambiguous or on a backend that cannot
// forward.
func TestSPAForwardConfig(t *testing.T) {
	dir, _ := spaKeys(t)
	client := func(extra string) string {
		return "[server]\nfirewall = \"nftables\"\n[spa]\n[[spa.client]]\nname = \"n\"\nkey_file = \"alice.key\"\n" + extra
	}
	cfg, err := Parse(filepath.Join(dir, "s.toml"), []byte(client(`forward = ["tcp/8022 -> 198.19.0.2:22", "tcp/8022 -> [fd5e:5a3f::2]:22", "tcp/55000 -> local:2222"]`+"\n")))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(cfg.SPA.Clients[0].Forward); n != 3 {
		t.Fatalf("%d forwards", n)
	}
	prot := cfg.SPA.Protected()
	for _, p := range []netport.Port{{Proto: netport.TCP, Num: 8022}, {Proto: netport.TCP, Num: 55000}, {Proto: netport.TCP, Num: 2222}} {
		if !slices.Contains(prot, p) {
			t.Errorf("Protected %v lacks %s", prot, p)
		}
	}
	if slices.Contains(prot, netport.Port{Proto: netport.TCP, Num: 22}) {
		t.Errorf("Protected %v has the remote destination's port", prot)
	}
	wantDests := []firewall.Destination{
		{Addr: netip.MustParseAddr("198.19.0.2"), Port: netport.Port{Proto: netport.TCP, Num: 22}},
		{Addr: netip.MustParseAddr("fd5e:5a3f::2"), Port: netport.Port{Proto: netport.TCP, Num: 22}},
	}
	if got := cfg.SPA.Destinations(); !slices.Equal(got, wantDests) {
		t.Errorf("Destinations %v, want %v", got, wantDests)
	}
	for _, tc := range []struct{ name, src, want string }{
		{"two for one port", client(`forward = ["tcp/8022 -> 198.19.0.2:22", "tcp/8022 -> 198.19.0.3:22"]`), "two forwards for one port"},
		{"local overlaps", client(`forward = ["tcp/8022 -> 198.19.0.2:22", "tcp/* -> local:22"]`), "two forwards for one port"},
		{"open and forwarded", client(`open = ["tcp/8022"]` + "\n" + `forward = ["tcp/8022 -> 198.19.0.2:22"]`), "is in open too"},
		{"bad entry", client(`forward = ["tcp/8022 -> nowhere"]`), "is not ADDRESS:PORT"},
		{"iptables", strings.Replace(client(`forward = ["tcp/8022 -> 198.19.0.2:22"]`), "nftables", "iptables", 1), `forwards need firewall "nftables"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(filepath.Join(dir, "s.toml"), []byte(tc.src+"\n"))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}
