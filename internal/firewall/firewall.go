package firewall

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/sesame-knock/sesame/internal/netport"
)

// Gate is what sesame's own firewall table enforces: new connections to a protected port are
// dropped unless their (source, protocol, port) has a live grant; established traffic passes.
type Gate struct {
	Protected []netport.Port
}

// Grant opens one protected port for one source address until Timeout has passed.
type Grant struct {
	Src     netip.Addr
	Port    netport.Port
	Timeout time.Duration
}

// String is the log form of a grant.
func (g Grant) String() string {
	return fmt.Sprintf("%s %s for %s", g.Src, g.Port, g.Timeout)
}

// LiveGrant is a grant as the kernel holds it now, with the time it has left.
type LiveGrant struct {
	Src       netip.Addr
	Port      netport.Port
	Remaining time.Duration
}

// Backend keeps the gate and its grants in the kernel. Grants expire in the kernel, so they close
// on time even when the daemon is dead.
type Backend interface {
	// Apply atomically replaces sesame's own rules with gate, keeping every live grant, and
	// touches nothing else of the host's firewall. It is safe to call again (reload, restart).
	Apply(ctx context.Context, gate Gate) error
	// Grant adds or refreshes grants; a refreshed grant gets the new timeout.
	Grant(ctx context.Context, grants ...Grant) error
	// Revoke removes grants; removing an absent grant is not an error.
	Revoke(ctx context.Context, grants ...Grant) error
	// List returns the live grants.
	List(ctx context.Context) ([]LiveGrant, error)
	// Close releases the backend. With removeRules false the gate and its grants stay in the
	// kernel (fail closed); with true sesame's rules are removed and protected ports are no
	// longer gated by sesame.
	Close(ctx context.Context, removeRules bool) error
}
