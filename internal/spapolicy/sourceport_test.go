package spapolicy

import (
	"context"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/config"
	"github.com/sesame-knock/sesame/internal/fwknop"
	"github.com/sesame-knock/sesame/internal/netport"
	"github.com/sesame-knock/sesame/internal/spa"
)

// TestSPASourcePorts: a client with source_ports is granted only packets from those UDP source
// ports, native and fwknop; a packet without one (in a ping, port 0) is refused; clients
// without source_ports take any port.
func TestSPASourcePorts(t *testing.T) {
	c := newCreds(t)
	cfg := testConfig(c)
	cfg.Clients[0].SourcePorts = []config.PortRange{{Lo: 40000, Hi: 40100}} // alice
	cfg.Clients[3].SourcePorts = []config.PortRange{{Lo: 62201, Hi: 62201}} // legacy
	now := func() time.Time { return t0 }
	h, logs := newHandler(t, cfg, now)
	rng := rand.NewChaCha8([32]byte{7})
	alice := native(shared, spa.Request{Ports: []netport.Port{ssh}}, 0)
	legacy := fw(fwKeys, fwknop.Message{Type: fwknop.TypeAccess, AllowIP: client4, Ports: []netport.Port{ssh}}, 0)
	bob := native(pair, spa.Request{Ports: []netport.Port{ssh}}, 0)
	for _, tc := range []struct {
		name   string
		build  builder
		port   uint16
		client string
		want   Reason
	}{
		{"alice inside", alice, 40000, "alice", ReasonAccepted},
		{"alice top", alice, 40100, "alice", ReasonAccepted},
		{"alice below", alice, 39999, "alice", ReasonSourcePortNotAllowed},
		{"alice above", alice, 40101, "alice", ReasonSourcePortNotAllowed},
		{"alice in a ping", alice, 0, "alice", ReasonSourcePortNotAllowed},
		{"legacy right", legacy, 62201, "legacy", ReasonAccepted},
		{"legacy wrong", legacy, 62202, "legacy", ReasonSourcePortNotAllowed},
		{"bob any port", bob, 1234, "bob", ReasonAccepted},
		{"bob in a ping", bob, 0, "bob", ReasonAccepted},
	} {
		before := h.Counts()[tc.want]
		pkt := tc.build(t, c, t0, rng)
		grants, _ := h.HandleFrom(context.Background(), client4, tc.port, pkt, nil)
		if got := h.Counts()[tc.want]; got != before+1 {
			t.Errorf("%s: %v counted %d times, want %d; log:\n%s", tc.name, tc.want, got, before+1, logs)
		}
		if (len(grants) > 0) != (tc.want == ReasonAccepted) {
			t.Errorf("%s: grants %v", tc.name, grants)
		}
	}
	if !strings.Contains(logs.String(), `reason="source port not allowed" detail="source port 39999"`) ||
		!strings.Contains(logs.String(), `detail="no source port (a packet in a ping)"`) {
		t.Errorf("log:\n%s", logs)
	}
}
