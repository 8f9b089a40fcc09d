package firewall

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/sesame-knock/sesame/internal/netport"
)

// Forwarder is the optional interface of a backend that forwards: it keeps destination NAT
// entries for granted (source, protocol, port) in the kernel, each expiring there on its own.
// Callers find it with a type assertion; a backend without it cannot forward, and a
// configuration with forwards must be refused at start.
type Forwarder interface {
	// ApplyForwarding creates or replaces the forwarding rules, keeping every live forward.
	// dests are the destinations forwards may reach: new connections to them through this
	// host are dropped unless a forward admitted them.
	ApplyForwarding(ctx context.Context, dests []Destination) error
	// Forward adds or refreshes forwards (grants with To set); a refreshed one gets the new
	// timeout.
	Forward(ctx context.Context, fwds ...Grant) error
	// Unforward removes forwards; removing an absent one is not an error.
	Unforward(ctx context.Context, fwds ...Grant) error
	// ListForwards returns the live forwards, Timeout holding the time each has left.
	ListForwards(ctx context.Context) ([]Grant, error)
}

// Destination is a service on another host that forwards may reach: an address, a protocol
// and a port.
type Destination struct {
	Addr netip.Addr
	Port netport.Port
}

// CheckForwards checks forwards before a backend applies them: a source, a TCP or UDP port,
// a destination of the source's family (or unspecified: this host) with a port, and when
// added a timeout of at least 1 ms.
func CheckForwards(fwds []Grant, add bool) error {
	for _, f := range fwds {
		if !f.Src.IsValid() {
			return fmt.Errorf("forward %s: no source address", f)
		}
		if err := CheckPort(f.Port); err != nil {
			return fmt.Errorf("forward %s: %w", f, err)
		}
		to := f.To.Addr().Unmap()
		switch {
		case !f.IsForward():
			return fmt.Errorf("forward %s: no destination", f)
		case f.To.Port() == 0:
			return fmt.Errorf("forward %s: destination port 0", f)
		case to.Is4() != f.Src.Unmap().Is4():
			return fmt.Errorf("forward %s: the source and the destination differ in address family", f)
		case add && f.Timeout < time.Millisecond:
			return fmt.Errorf("forward %s: timeout must be at least 1ms", f)
		}
	}
	return nil
}
