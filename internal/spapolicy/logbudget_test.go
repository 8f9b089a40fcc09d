package spapolicy

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/lograte"
)

// TestSPARefusalsShareLogBudget: garbage from 10,000 spoofed sources in one second writes at
// most the shared global budget's refusal lines, and the budget counts the rest.
func TestSPARefusalsShareLogBudget(t *testing.T) {
	now := t0
	clock := func() time.Time { return now }
	h, buf := newHandler(t, testConfig(newCreds(t)), clock)
	b := lograte.NewBudget(20, 100, 10*time.Second, clock)
	h.ShareLogBudget(b)
	const sources = 10000
	for i := 0; i < sources; i++ {
		src := netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)})
		h.Handle(t.Context(), src, []byte("not an spa packet, not even close"), nil)
		now = now.Add(time.Second / sources)
	}
	lines := strings.Count(buf.String(), "spa refused")
	if lines > 120 || lines < 100 {
		t.Errorf("%d refusal lines from %d spoofed sources in 1s, want 100 to 120", lines, sources)
	}
	if n, _, ok := b.Report(); !ok || n < sources-120 {
		t.Errorf("budget report %d, %v; want the %d lines held back", n, ok, sources-lines)
	}
}
