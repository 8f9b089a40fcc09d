package spapolicy

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/config"
	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/fwknop"
	"github.com/sesame-knock/sesame/internal/netport"
	"github.com/sesame-knock/sesame/internal/spa"
)

func mustForward(t *testing.T, s string) config.Forward {
	t.Helper()
	f, err := config.ParseForward(s)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestSPAForwards: requests for a forwarded port are granted as that forward, native and
// fwknop (-A, -N, --nat-local); a NAT request for a destination or port the forward list lacks
// is refused with "forward not allowed" and a detail naming it; a client without forwards
// refuses NAT requests as before.
func TestSPAForwards(t *testing.T) {
	c := newCreds(t)
	cfg := testConfig(c)
	gw := netport.Port{Proto: netport.TCP, Num: 8022}
	loc := netport.Port{Proto: netport.TCP, Num: 55000}
	inner4 := netip.MustParseAddrPort("198.19.0.2:22")
	inner6 := netip.MustParseAddrPort("[fd5e:5a3f::2]:22")
	cfg.Clients[0].Forward = []config.Forward{mustForward(t, "tcp/8022 -> 198.19.0.2:22"), mustForward(t, "tcp/8022 -> [fd5e:5a3f::2]:22")}
	fwd := config.SPAClient{Name: "gwfw", Format: config.SPAFormatFwknop, Fwknop: fwKeys, Open: []netport.Port{https},
		Forward: []config.Forward{mustForward(t, "tcp/22 -> 198.19.0.2:22"), mustForward(t, "tcp/55000 -> local:22")},
		Sources: config.AnySource, DefaultOpenFor: 10 * time.Second, MaxOpenFor: time.Minute}
	// The fwknop stanza with forwards goes first: the "legacy" one holds the same keys.
	cfg.Clients = append([]config.SPAClient{fwd}, cfg.Clients...)
	for i := range cfg.Clients {
		if err := cfg.Validate(firewall.Nftables); err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
	}
	fwdGrant := func(src netip.Addr, p netport.Port, to netip.AddrPort, d time.Duration) []firewall.Grant {
		return []firewall.Grant{{Src: src, Port: p, To: to, Timeout: d}}
	}
	a4 := netip.MustParseAddr("198.18.0.2")
	tests := []struct {
		name   string
		src    netip.Addr
		build  builder
		reason Reason
		detail string
		want   []firewall.Grant
	}{
		{"native forward v4", client4, native(shared, spa.Request{Ports: []netport.Port{gw}, Addr: client4}, 0), ReasonAccepted, "",
			fwdGrant(client4, gw, inner4, 30*time.Second)},
		{"native forward v6", client6, native(shared, spa.Request{Ports: []netport.Port{gw}, Addr: client6}, 0), ReasonAccepted, "",
			fwdGrant(client6, gw, inner6, 30*time.Second)},
		{"native forward and open", client4, native(shared, spa.Request{Ports: []netport.Port{gw, ssh}, Addr: client4}, 0), ReasonAccepted, "",
			append(fwdGrant(client4, gw, inner4, 30*time.Second), grants(client4, 30*time.Second, ssh)...)},
		{"fwknop -A forwarded port", client4, fw(fwKeys, fwknop.Message{Type: fwknop.TypeAccess, AllowIP: a4, Ports: []netport.Port{ssh}}, 0), ReasonAccepted, "",
			fwdGrant(a4, ssh, inner4, 10*time.Second)},
		{"fwknop -N allowed", client4, fw(fwKeys, fwknop.Message{Type: fwknop.TypeNATAccess, AllowIP: a4, NATAccess: "198.19.0.2,22", Ports: []netport.Port{ssh}}, 0), ReasonAccepted, "",
			fwdGrant(a4, ssh, inner4, 10*time.Second)},
		{"fwknop -N other host", client4, fw(fwKeys, fwknop.Message{Type: fwknop.TypeNATAccess, AllowIP: a4, NATAccess: "198.19.0.9,22", Ports: []netport.Port{ssh}}, 0), ReasonForwardNotAllowed,
			"NAT tcp/22 -> 198.19.0.9:22: the client's forward is tcp/22 -> 198.19.0.2:22", nil},
		{"fwknop -N other port", client4, fw(fwKeys, fwknop.Message{Type: fwknop.TypeNATAccess, AllowIP: a4, NATAccess: "198.19.0.2,2222", Ports: []netport.Port{ssh}}, 0), ReasonForwardNotAllowed,
			"NAT tcp/22 -> 198.19.0.2:2222", nil},
		{"fwknop -N unforwarded open port", client4, fw(fwKeys, fwknop.Message{Type: fwknop.TypeNATAccess, AllowIP: a4, NATAccess: "198.19.0.2,443", Ports: []netport.Port{https}}, 0), ReasonForwardNotAllowed,
			"tcp/443: the client has no forward of this port", nil},
		{"fwknop -N host name", client4, fw(fwKeys, fwknop.Message{Type: fwknop.TypeNATAccess, AllowIP: a4, NATAccess: "inner.example,22", Ports: []netport.Port{ssh}}, 0), ReasonForwardNotAllowed,
			"not an IP address", nil},
		{"fwknop --nat-local", client4, fw(fwKeys, fwknop.Message{Type: fwknop.TypeLocalNATAccess, AllowIP: a4, NATAccess: "198.18.0.1,22", Ports: []netport.Port{loc}}, 0), ReasonAccepted, "",
			fwdGrant(a4, loc, netip.MustParseAddrPort("0.0.0.0:22"), 10*time.Second)},
		{"fwknop --nat-local other port", client4, fw(fwKeys, fwknop.Message{Type: fwknop.TypeLocalNATAccess, AllowIP: a4, NATAccess: "198.18.0.1,23", Ports: []netport.Port{loc}}, 0), ReasonForwardNotAllowed,
			"local NAT tcp/55000 -> port 23", nil},
		{"fwknop -N without forwards", client4, fw(otherKeys, fwknop.Message{Type: fwknop.TypeNATAccess, User: "alice", AllowIP: a4, NATAccess: "198.19.0.2,22", Ports: []netport.Port{ssh}}, 0), ReasonNATRefused,
			"no forwards", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, logs := newHandler(t, cfg, func() time.Time { return t0 })
			pkt := tc.build(t, c, t0, rand.NewChaCha8([32]byte{7}))
			got := hg(h.Handle(context.Background(), tc.src, pkt, nil))
			if !slices.Equal(got, tc.want) {
				t.Errorf("grants %v, want %v", got, tc.want)
			}
			if !strings.Contains(logs.String(), "reason=\""+tc.reason.String()+"\"") && !strings.Contains(logs.String(), "reason="+tc.reason.String()) {
				t.Errorf("log lacks reason %q:\n%s", tc.reason, logs)
			}
			if tc.detail != "" && !strings.Contains(logs.String(), tc.detail) {
				t.Errorf("log lacks detail %q:\n%s", tc.detail, logs)
			}
		})
	}
}

// TestSPANATOnlyForwards: NAT-only forwards (fwknopd's ENABLE_IPT_LOCAL_NAT, "nat tcp/* ->
// local:PORT") serve --nat-local requests, to the port the request names among several, and
// leave a plain request for an open port an ordinary grant of that port.
func TestSPANATOnlyForwards(t *testing.T) {
	c := newCreds(t)
	cfg := testConfig(c)
	alt := netport.Port{Proto: netport.TCP, Num: 2222}
	loc := netport.Port{Proto: netport.TCP, Num: 55000}
	st := config.SPAClient{Name: "stanza#1", Format: config.SPAFormatFwknop, Fwknop: fwKeys, Open: []netport.Port{ssh, alt},
		Forward: []config.Forward{mustForward(t, "nat tcp/* -> local:22"), mustForward(t, "nat tcp/* -> local:2222")},
		Sources: config.AnySource, DefaultOpenFor: 10 * time.Second, MaxOpenFor: time.Minute}
	cfg.Clients = append([]config.SPAClient{st}, cfg.Clients...)
	if err := cfg.Validate(firewall.Nftables); err != nil {
		t.Fatal(err)
	}
	a4 := netip.MustParseAddr("198.18.0.2")
	local := func(p netport.Port, to uint16) []firewall.Grant {
		return []firewall.Grant{{Src: a4, Port: p, To: netip.AddrPortFrom(netip.IPv4Unspecified(), to), Timeout: 10 * time.Second}}
	}
	tests := []struct {
		name   string
		msg    fwknop.Message
		reason Reason
		want   []firewall.Grant
	}{
		{"plain -A open port", fwknop.Message{Type: fwknop.TypeAccess, AllowIP: a4, Ports: []netport.Port{ssh}}, ReasonAccepted,
			[]firewall.Grant{{Src: a4, Port: ssh, Timeout: 10 * time.Second}}},
		{"--nat-local to 22", fwknop.Message{Type: fwknop.TypeLocalNATAccess, AllowIP: a4, NATAccess: "198.18.0.1,22", Ports: []netport.Port{loc}}, ReasonAccepted,
			local(loc, 22)},
		{"--nat-local to 2222", fwknop.Message{Type: fwknop.TypeLocalNATAccess, AllowIP: a4, NATAccess: "198.18.0.1,2222", Ports: []netport.Port{loc}}, ReasonAccepted,
			local(loc, 2222)},
		{"--nat-local to a port not open", fwknop.Message{Type: fwknop.TypeLocalNATAccess, AllowIP: a4, NATAccess: "198.18.0.1,23", Ports: []netport.Port{loc}}, ReasonForwardNotAllowed, nil},
		{"-N to another host", fwknop.Message{Type: fwknop.TypeNATAccess, AllowIP: a4, NATAccess: "198.19.0.2,22", Ports: []netport.Port{loc}}, ReasonForwardNotAllowed, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, logs := newHandler(t, cfg, func() time.Time { return t0 })
			pkt := fw(fwKeys, tc.msg, 0)(t, c, t0, rand.NewChaCha8([32]byte{9}))
			got := hg(h.Handle(context.Background(), client4, pkt, nil))
			if !slices.Equal(got, tc.want) {
				t.Errorf("grants %v, want %v", got, tc.want)
			}
			if !strings.Contains(logs.String(), "reason=\""+tc.reason.String()+"\"") && !strings.Contains(logs.String(), "reason="+tc.reason.String()) {
				t.Errorf("log lacks reason %q:\n%s", tc.reason, logs)
			}
		})
	}
}
