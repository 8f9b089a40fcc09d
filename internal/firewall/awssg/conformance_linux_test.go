//go:build linux

package awssg

import (
	"net/netip"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/firewall/fwtest"
	"github.com/sesame-knock/sesame/internal/netport"
)

// TestConformance runs the backend conformance sequence (fwtest.RunState: Run's calls and List
// checks, with the double's rules in place of packets) through the real SDK against the double.
func TestConformance(t *testing.T) {
	srv := newDouble(t, sg1)
	fwtest.RunState(t, fwtest.StateTarget{
		New:    func(t *testing.T) firewall.Backend { return newBackend(t, srv, nil) },
		Admits: func(src netip.Addr, port netport.Port) bool { return len(ruleFor(srv, sg1, src, port)) > 0 },
		Settle: 3 * time.Second,
	})
}
