// Package firewalltest is an in-memory firewall.Backend for tests, with an injectable clock and injectable errors.
package firewalltest

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/netport"
)

// Op names a Backend method, for Fail.
type Op uint8

// The operations of firewall.Backend.
const (
	OpApply Op = iota
	OpGrant
	OpRevoke
	OpList
	OpClose
	OpBan
	OpUnban
	OpListBans
	OpForward // ApplyForwarding, Forward, Unforward and ListForwards
	numOps
)

// ErrClosed is returned by every call after Close.
var ErrClosed = errors.New("firewalltest: backend closed")

type key struct {
	src  netip.Addr
	port netport.Port
}

type forward struct {
	to      netip.AddrPort
	expires time.Time
}

// Backend keeps a gate and grants in memory. Grants expire by its clock, as the kernel's do;
// List reports the time they have left. It is safe for concurrent use.
type Backend struct {
	now func() time.Time

	mu      sync.Mutex
	gate    firewall.Gate
	applied int
	grants  map[key]time.Time // expiry
	bans    map[netip.Addr]time.Time
	dests   []firewall.Destination
	fwds    map[key]forward
	fail    [numOps]error
	calls   [numOps]int
	closed  bool
	removed bool
}

// New returns an empty backend on clock now (time.Now when nil).
func New(now func() time.Time) *Backend {
	if now == nil {
		now = time.Now
	}
	return &Backend{now: now, grants: map[key]time.Time{}, bans: map[netip.Addr]time.Time{}, fwds: map[key]forward{}}
}

// Fail makes every later call of op return err (nil: succeed again), changing nothing.
func (b *Backend) Fail(op Op, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.fail[op] = err
}

// Calls reports how many times op was called, failed calls included.
func (b *Backend) Calls(op Op) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.calls[op]
}

func (b *Backend) enter(op Op) error {
	b.calls[op]++
	if b.closed {
		return ErrClosed
	}
	return b.fail[op]
}

// Apply implements firewall.Backend: it replaces the gate and keeps every live grant.
func (b *Backend) Apply(_ context.Context, g firewall.Gate) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.enter(OpApply); err != nil {
		return err
	}
	if err := firewall.CheckGate(g); err != nil {
		return err
	}
	b.gate = firewall.Gate{Protected: slices.Clone(g.Protected)}
	b.applied++
	return nil
}

// Grant implements firewall.Backend: grants are added or refreshed, all or none.
func (b *Backend) Grant(_ context.Context, grants ...firewall.Grant) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.enter(OpGrant); err != nil {
		return err
	}
	if err := firewall.CheckGrants(grants, true); err != nil {
		return err
	}
	now := b.now()
	for _, g := range grants {
		b.grants[key{g.Src, g.Port}] = now.Add(g.Timeout)
	}
	return nil
}

// Revoke implements firewall.Backend.
func (b *Backend) Revoke(_ context.Context, grants ...firewall.Grant) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.enter(OpRevoke); err != nil {
		return err
	}
	if err := firewall.CheckGrants(grants, false); err != nil {
		return err
	}
	for _, g := range grants {
		delete(b.grants, key{g.Src, g.Port})
	}
	return nil
}

// List implements firewall.Backend: the grants live by the clock, sorted by source then port.
func (b *Backend) List(context.Context) ([]firewall.LiveGrant, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.enter(OpList); err != nil {
		return nil, err
	}
	return b.live(), nil
}

// Live is List without the call being counted or failed.
func (b *Backend) Live() []firewall.LiveGrant {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.live()
}

func (b *Backend) live() []firewall.LiveGrant {
	now := b.now()
	out := make([]firewall.LiveGrant, 0, len(b.grants))
	for k, exp := range b.grants {
		if !now.Before(exp) {
			delete(b.grants, k)
			continue
		}
		out = append(out, firewall.LiveGrant{Src: k.src, Port: k.port, Remaining: exp.Sub(now)})
	}
	slices.SortFunc(out, func(x, y firewall.LiveGrant) int {
		if c := x.Src.Compare(y.Src); c != 0 {
			return c
		}
		if x.Port.Proto != y.Port.Proto {
			return int(x.Port.Proto) - int(y.Port.Proto)
		}
		return int(x.Port.Num) - int(y.Port.Num)
	})
	return out
}

// Has reports whether src has a live grant on port.
func (b *Backend) Has(src netip.Addr, port netport.Port) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	exp, ok := b.grants[key{src, port}]
	return ok && b.now().Before(exp)
}

// Gate returns the gate last applied and how many times one was.
func (b *Backend) Gate() (firewall.Gate, int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return firewall.Gate{Protected: slices.Clone(b.gate.Protected)}, b.applied
}

// Close implements firewall.Backend. With removeRules the gate and the grants go.
func (b *Backend) Close(_ context.Context, removeRules bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.enter(OpClose); err != nil {
		return err
	}
	b.closed, b.removed = true, removeRules
	if removeRules {
		b.gate, b.grants, b.bans = firewall.Gate{}, map[key]time.Time{}, map[netip.Addr]time.Time{}
	}
	return nil
}

// Closed reports whether Close was called, and with removeRules.
func (b *Backend) Closed() (closed, removed bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed, b.removed
}

var _ firewall.Banner = (*Backend)(nil)

// Ban implements firewall.Banner.
func (b *Backend) Ban(_ context.Context, src netip.Addr, dur time.Duration) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.enter(OpBan); err != nil {
		return err
	}
	if err := firewall.CheckBan(src, dur, true); err != nil {
		return err
	}
	b.bans[src.Unmap()] = b.now().Add(dur)
	return nil
}

// Unban implements firewall.Banner.
func (b *Backend) Unban(_ context.Context, src netip.Addr) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.enter(OpUnban); err != nil {
		return err
	}
	if err := firewall.CheckBan(src, 0, false); err != nil {
		return err
	}
	delete(b.bans, src.Unmap())
	return nil
}

// ListBans implements firewall.Banner: the live bans sorted by source.
func (b *Backend) ListBans(context.Context) ([]firewall.LiveBan, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.enter(OpListBans); err != nil {
		return nil, err
	}
	now := b.now()
	out := make([]firewall.LiveBan, 0, len(b.bans))
	for a, exp := range b.bans {
		if !now.Before(exp) {
			delete(b.bans, a)
			continue
		}
		out = append(out, firewall.LiveBan{Src: a, Remaining: exp.Sub(now)})
	}
	slices.SortFunc(out, func(x, y firewall.LiveBan) int { return x.Src.Compare(y.Src) })
	return out, nil
}

// Banned reports whether src has a live ban.
func (b *Backend) Banned(src netip.Addr) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	exp, ok := b.bans[src.Unmap()]
	return ok && b.now().Before(exp)
}

// Clock is a manual clock for tests: it moves only when told.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock reading t.
func NewClock(t time.Time) *Clock { return &Clock{now: t} }

// Now reads the clock.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock on by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// ApplyForwarding implements firewall.Forwarder: it records the destinations.
func (b *Backend) ApplyForwarding(_ context.Context, dests []firewall.Destination) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.enter(OpForward); err != nil {
		return err
	}
	b.dests = slices.Clone(dests)
	return nil
}

// Forward implements firewall.Forwarder: forwards are added or refreshed, all or none.
func (b *Backend) Forward(_ context.Context, fwds ...firewall.Grant) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.enter(OpForward); err != nil {
		return err
	}
	if err := firewall.CheckForwards(fwds, true); err != nil {
		return err
	}
	now := b.now()
	for _, f := range fwds {
		b.fwds[key{f.Src, f.Port}] = forward{to: f.To, expires: now.Add(f.Timeout)}
	}
	return nil
}

// Unforward implements firewall.Forwarder.
func (b *Backend) Unforward(_ context.Context, fwds ...firewall.Grant) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.enter(OpForward); err != nil {
		return err
	}
	if err := firewall.CheckForwards(fwds, false); err != nil {
		return err
	}
	for _, f := range fwds {
		delete(b.fwds, key{f.Src, f.Port})
	}
	return nil
}

// ListForwards implements firewall.Forwarder: the forwards live by the clock, Timeout the time
// each has left, sorted by source then port.
func (b *Backend) ListForwards(context.Context) ([]firewall.Grant, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.enter(OpForward); err != nil {
		return nil, err
	}
	now := b.now()
	var out []firewall.Grant
	for k, f := range b.fwds {
		if !now.Before(f.expires) {
			delete(b.fwds, k)
			continue
		}
		out = append(out, firewall.Grant{Src: k.src, Port: k.port, To: f.to, Timeout: f.expires.Sub(now)})
	}
	slices.SortFunc(out, func(x, y firewall.Grant) int {
		if c := x.Src.Compare(y.Src); c != 0 {
			return c
		}
		return int(x.Port.Num) - int(y.Port.Num)
	})
	return out, nil
}

// Destinations are the destinations the last ApplyForwarding set.
func (b *Backend) Destinations() []firewall.Destination {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.dests)
}
