package spapolicy

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/config"
	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/fwknop"
	"github.com/sesame-knock/sesame/internal/netport"
	"github.com/sesame-knock/sesame/internal/spa"
)

// requireConfig is testConfig with require_address set on every client or on none.
func requireConfig(c *creds, require bool) *config.SPA {
	cfg := testConfig(c)
	for i := range cfg.Clients {
		cfg.Clients[i].RequireSourceAddress = require
	}
	return cfg
}

// TestSPARequireAddress: with require_address a request for "the packet's source address" is
// refused whatever the format, with its own reason, and still burns its replay key; an explicit
// address is granted as before. Without it the source request is granted to the source.
func TestSPARequireAddress(t *testing.T) {
	owner := netip.MustParseAddr("198.18.7.7")
	c := newCreds(t)
	tests := []struct {
		name    string
		require bool
		build   builder
		reason  Reason
		want    []firewall.Grant
	}{
		{"native shared source, required", true, native(shared, spa.Request{Ports: []netport.Port{ssh}}, 0),
			ReasonSourceAddrNeeded, nil},
		{"native pair source, required", true, native(pair, spa.Request{Ports: []netport.Port{dns}}, 0),
			ReasonSourceAddrNeeded, nil},
		{"native shared explicit, required", true, native(shared, spa.Request{Ports: []netport.Port{ssh}, Addr: owner}, 0),
			ReasonAccepted, grants(owner, 30*time.Second, ssh)},
		{"native pair explicit ipv6, required", true, native(pair, spa.Request{Ports: []netport.Port{dns}, Addr: client6}, 0),
			ReasonAccepted, grants(client6, 10*time.Second, dns)},
		{"native shared source, not required", false, native(shared, spa.Request{Ports: []netport.Port{ssh}}, 0),
			ReasonAccepted, grants(client4, 30*time.Second, ssh)},
		{"fwknop source, required", true, fw(fwKeys, fwknop.Message{Type: fwknop.TypeAccess, Ports: []netport.Port{ssh}}, 0),
			ReasonSourceAddrNeeded, nil},
		{"fwknop explicit, required", true, fw(fwKeys, fwknop.Message{Type: fwknop.TypeAccess, AllowIP: owner, Ports: []netport.Port{ssh}}, 0),
			ReasonAccepted, grants(owner, 10*time.Second, ssh)},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, logs := newHandler(t, requireConfig(c, tc.require), func() time.Time { return t0 })
			pkt := tc.build(t, c, t0, rand.NewChaCha8([32]byte{byte(i), 7}))
			got := hg(h.Handle(context.Background(), client4, pkt, nil))
			if !slices.Equal(got, tc.want) {
				t.Errorf("grants = %v, want %v", got, tc.want)
			}
			line := logs.String()
			if !strings.Contains(line, "src="+client4.String()) || !strings.Contains(line, "reason="+strconv.Quote(tc.reason.String())) && !strings.Contains(line, "reason="+tc.reason.String()) {
				t.Errorf("log line lacks src or reason %q:\n%s", tc.reason, line)
			}
			// Refused or not, the packet was authenticated: the same bytes again are a replay.
			if got := hg(h.Handle(context.Background(), client4, pkt, nil)); got != nil {
				t.Errorf("the same packet again granted %v", got)
			}
			if n := h.Counts()[ReasonReplay]; n != 1 {
				t.Errorf("counts = %v, want one replay", h.Counts())
			}
		})
	}
}

// TestSPARequireAddressLogRate: a flood of source-address requests from one address is logged
// within the per-source budget, and the line after it says how many were held back.
func TestSPARequireAddressLogRate(t *testing.T) {
	c := newCreds(t)
	now := t0
	h, logs := newHandler(t, requireConfig(c, true), func() time.Time { return now })
	rng := rand.NewChaCha8([32]byte{42})
	const n = 50
	for range n {
		pkt := native(shared, spa.Request{Ports: []netport.Port{ssh}}, 0)(t, c, now, rng)
		if got := hg(h.Handle(context.Background(), client4, pkt, nil)); got != nil {
			t.Fatalf("granted %v", got)
		}
	}
	if got := h.Counts()[ReasonSourceAddrNeeded]; got != n {
		t.Fatalf("counts = %v, want %d %q", h.Counts(), n, ReasonSourceAddrNeeded)
	}
	lines := strings.Count(logs.String(), "\n")
	if lines == 0 || lines >= n {
		t.Fatalf("%d log lines for %d refusals, want a rate-limited few:\n%s", lines, n, logs.String())
	}
	now = now.Add(2 * time.Second)
	pkt := native(shared, spa.Request{Ports: []netport.Port{ssh}}, 0)(t, c, now, rng)
	h.Handle(context.Background(), client4, pkt, nil)
	last := strings.TrimSpace(logs.String())
	last = last[strings.LastIndexByte(last, '\n')+1:]
	if !strings.Contains(last, "suppressed=") || !strings.Contains(last, "require_address") {
		t.Errorf("line after the burst = %s, want suppressed=N and the reason's detail", last)
	}
}
