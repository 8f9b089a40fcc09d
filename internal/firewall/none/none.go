// Package none is the firewall backend that does nothing. It suits setups where sesame only
// authenticates knocks and something else opens ports: it accepts an empty gate, and refuses to
// gate ports or hand out grants, so a configuration that expects gating fails loudly instead of
// leaving ports silently open.
package none

import (
	"context"
	"fmt"

	"github.com/sesame-knock/sesame/internal/firewall"
)

// ErrCannotGate is returned when firewall "none" is asked to gate ports or grant access.
var ErrCannotGate = fmt.Errorf("firewall %q cannot gate ports: choose firewall %q or %q", firewall.None, firewall.Nftables, firewall.Iptables)

// Backend is a firewall.Backend that changes nothing in the kernel.
type Backend struct{}

var _ firewall.Backend = Backend{}

// New returns the no-op backend.
func New() Backend { return Backend{} }

// Apply accepts a gate with no protected ports and refuses any other.
func (Backend) Apply(ctx context.Context, gate firewall.Gate) error {
	if len(gate.Protected) > 0 {
		return fmt.Errorf("%w (asked to protect %v)", ErrCannotGate, gate.Protected)
	}
	return nil
}

// Grant always fails: there is no gate to open.
func (Backend) Grant(ctx context.Context, grants ...firewall.Grant) error {
	if len(grants) == 0 {
		return nil
	}
	return fmt.Errorf("%w (grant %s)", ErrCannotGate, grants[0])
}

// Revoke always fails like Grant.
func (Backend) Revoke(ctx context.Context, grants ...firewall.Grant) error {
	if len(grants) == 0 {
		return nil
	}
	return fmt.Errorf("%w (revoke %s)", ErrCannotGate, grants[0])
}

// List returns no grants.
func (Backend) List(ctx context.Context) ([]firewall.LiveGrant, error) { return nil, nil }

// Close does nothing.
func (Backend) Close(ctx context.Context, removeRules bool) error { return nil }
