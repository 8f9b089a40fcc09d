package spapolicy

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/netport"
	"github.com/sesame-knock/sesame/internal/spa"
)

// TestReasonNames: the log names are the ones logs and tests have always grepped for, and
// every reason has one.
func TestReasonNames(t *testing.T) {
	want := map[Reason]string{ReasonAccepted: "accepted", ReasonBadMAC: "bad MAC", ReasonSourceAddrNeeded: "source address required",
		ReasonNATRefused: "NAT not supported", ReasonInternal: "internal error", ReasonTooShort: "too short"}
	for r, name := range want {
		if r.String() != name {
			t.Errorf("%d: %q, want %q", r, r.String(), name)
		}
	}
	seen := map[string]bool{}
	for r := ReasonAccepted; r < NumReasons; r++ {
		if n := r.String(); n == "none" || seen[n] {
			t.Errorf("reason %d: name %q missing or repeated", r, n)
		}
		seen[r.String()] = true
	}
}

// TestDecisionsAndClients: decisions are counted by format and reason, authenticated packets per
// client (a claimed but unauthenticated client counts nothing), HandleNamed names the client,
// and a staged configuration that is never committed changes nothing.
func TestDecisionsAndClients(t *testing.T) {
	c := newCreds(t)
	rng := rand.NewChaCha8([32]byte{21})
	h, _ := newHandler(t, testConfig(c), func() time.Time { return t0 })
	pkt := native(shared, spa.Request{Ports: []netport.Port{ssh}}, 0)(t, c, t0, rng)
	var named string
	grant := func(_ context.Context, client string, _ []firewall.Grant) error { named = client; return nil }
	h.HandleNamed(context.Background(), client4, pkt, grant)
	h.HandleNamed(context.Background(), client4, pkt, grant) // replay
	forged := append([]byte(nil), pkt...)
	forged[len(forged)-1] ^= 1
	h.HandleNamed(context.Background(), client4, forged, grant) // claims alice, bad MAC
	h.HandleNamed(context.Background(), client4, []byte("garbage"), grant)
	if named != "alice" {
		t.Errorf("grant function told client %q, want alice", named)
	}
	d := h.Decisions()
	if d["native"]["accepted"] != 1 || d["native"]["replay"] != 1 || d["native"]["bad MAC"] != 1 || d["fwknop"]["too short"] != 1 {
		t.Errorf("decisions %v", d)
	}
	if got := h.Clients()["alice"]; got != (ClientCounts{Accepted: 1, Refused: 1}) {
		t.Errorf("alice: %+v, want 1 accepted, 1 refused (the replay; the forgery is not hers)", got)
	}
	noAlice := testConfig(c)
	noAlice.Clients = noAlice.Clients[1:]
	if _, err := h.Prepare(noAlice); err != nil {
		t.Fatal(err)
	}
	if h.Config().Clients[0].Name != "alice" {
		t.Fatal("Prepare changed the running configuration")
	}
	st, _ := h.Prepare(testConfig(c))
	h.Commit(st)
	if got := h.Clients()["alice"]; got.Accepted != 1 {
		t.Errorf("counts lost over a reload: %+v", got)
	}
}
