package server

import (
	"net/netip"
	"sync"
	"time"

	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/netport"
)

// maxAttributions bounds the attribution table. Past it, new grants still go to the kernel but
// are listed as GrantKernel until old entries expire.
const maxAttributions = 1 << 16

type grantKey struct {
	src  netip.Addr
	port netport.Port
}

type owner struct {
	kind    GrantKind
	by      string
	note    string
	expires time.Time
}

type grantCounts struct {
	added, expired, errors, opened uint64
}

// attribution remembers who made each grant this server made (by source and port, until it
// expires) and counts grants per door, client or "operator". It is touched once per grant,
// never per packet.
type attribution struct {
	max int

	mu       sync.Mutex
	owners   map[grantKey]owner
	names    map[string]*grantCounts
	dropped  uint64 // grants not attributed: the table was full
	lastFull time.Time
}

func newAttribution(max int) *attribution {
	return &attribution{max: max, owners: map[grantKey]owner{}, names: map[string]*grantCounts{}}
}

func (a *attribution) name(by string) *grantCounts {
	c := a.names[by]
	if c == nil {
		c = new(grantCounts)
		a.names[by] = c
	}
	return c
}

// record notes grants made by (kind, by) at now; err is the firewall's answer.
func (a *attribution) record(kind GrantKind, by, note string, grants []firewall.Grant, now time.Time, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.name(by)
	if err != nil {
		c.errors += uint64(len(grants))
		return
	}
	c.added += uint64(len(grants))
	for _, g := range grants {
		k := grantKey{g.Src, g.Port}
		if _, ok := a.owners[k]; !ok && len(a.owners) >= a.max {
			// Full: make room from expired entries, at most once a second.
			if now.Sub(a.lastFull) >= time.Second {
				a.lastFull = now
				a.sweepLocked(now)
			}
			if len(a.owners) >= a.max {
				a.dropped++
				continue
			}
		}
		a.owners[k] = owner{kind: kind, by: by, note: note, expires: now.Add(g.Timeout)}
	}
}

// opened counts one opening of door name (with or without ports to grant).
func (a *attribution) opened(name string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.name(name).opened++
}

func (a *attribution) openings(name string) uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	if c := a.names[name]; c != nil {
		return c.opened
	}
	return 0
}

// sweep forgets the grants expired at now, counting them.
func (a *attribution) sweep(now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.sweepLocked(now)
}

func (a *attribution) sweepLocked(now time.Time) {
	for k, o := range a.owners {
		if !now.Before(o.expires) {
			a.name(o.by).expired++
			delete(a.owners, k)
		}
	}
}

// lookup returns who made the grant of src on port, if this server did and it has not expired.
func (a *attribution) lookup(src netip.Addr, port netport.Port, now time.Time) (owner, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	o, ok := a.owners[grantKey{src, port}]
	return o, ok && now.Before(o.expires)
}

// forget drops the attribution of revoked grants.
func (a *attribution) forget(grants []firewall.Grant) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, g := range grants {
		delete(a.owners, grantKey{g.Src, g.Port})
	}
}

// counts returns the grant counters by name, with the grants active at now.
func (a *attribution) counts(now time.Time) map[string]GrantCounts {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.sweepLocked(now)
	out := make(map[string]GrantCounts, len(a.names))
	for name, c := range a.names {
		if c.added == 0 && c.errors == 0 {
			continue // a door that opened without ports to grant
		}
		out[name] = GrantCounts{Added: c.added, Expired: c.expired, Errors: c.errors}
	}
	for _, o := range a.owners {
		g := out[o.by]
		g.Active++
		out[o.by] = g
	}
	return out
}
