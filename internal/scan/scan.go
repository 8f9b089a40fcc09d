// Package scan detects port scans: a source that touches Threshold distinct ports within Window earns a ban that grows with each repeat.
package scan

import (
	"net/netip"
	"time"

	"github.com/sesame-knock/sesame/internal/netport"
)

// Config is what a Detector counts.
type Config struct {
	Window    time.Duration
	Threshold int
	// BanFor is the escalation: the first ban lasts BanFor[0], the next BanFor[1], ...; the
	// last repeats.
	BanFor []time.Duration
	// Forget is how long after its last ban ended a source's offences are forgotten.
	Forget time.Duration
	// MaxSources bounds the sources tracked; when full, the stalest is evicted.
	MaxSources int
}

type source struct {
	start    time.Time // of the current window
	ports    map[netport.Port]struct{}
	offences int
	banEnd   time.Time // end of the last ban
	last     time.Time
}

// Detector counts distinct ports per source per window. It is not safe for concurrent use.
type Detector struct {
	cfg     Config
	sources map[netip.Addr]*source
}

// New returns a Detector.
func New(cfg Config) *Detector {
	if cfg.MaxSources <= 0 {
		cfg.MaxSources = 65536
	}
	return &Detector{cfg: cfg, sources: map[netip.Addr]*source{}}
}

// Verdict is what Observe found.
type Verdict struct {
	Ban      bool
	For      time.Duration
	Ports    int // distinct ports in the window that tripped
	Offences int // this source's bans so far, this one included
}

// Observe counts a packet from src to port at t and says whether the source is now to be banned.
func (d *Detector) Observe(src netip.Addr, port netport.Port, t time.Time) Verdict {
	src = src.Unmap()
	s := d.sources[src]
	if s == nil {
		if len(d.sources) >= d.cfg.MaxSources {
			d.evict(t)
		}
		s = &source{start: t, ports: map[netport.Port]struct{}{}}
		d.sources[src] = s
	}
	s.last = t
	if s.offences > 0 && !s.banEnd.IsZero() && t.Sub(s.banEnd) >= d.cfg.Forget {
		s.offences = 0
	}
	if t.Sub(s.start) >= d.cfg.Window {
		s.start, s.ports = t, map[netport.Port]struct{}{}
	}
	s.ports[port] = struct{}{}
	if len(s.ports) < d.cfg.Threshold {
		return Verdict{}
	}
	n := len(s.ports)
	s.offences++
	dur := d.cfg.BanFor[min(s.offences, len(d.cfg.BanFor))-1]
	s.banEnd = t.Add(dur)
	s.start, s.ports = t, map[netport.Port]struct{}{}
	return Verdict{Ban: true, For: dur, Ports: n, Offences: s.offences}
}

// Forgive forgets src's offences (an operator lifted its ban, or it proved a key).
func (d *Detector) Forgive(src netip.Addr) { delete(d.sources, src.Unmap()) }

// Expire drops sources with nothing to remember at t: no open window and no offence to keep.
func (d *Detector) Expire(t time.Time) {
	for a, s := range d.sources {
		if t.Sub(s.last) >= d.cfg.Window && (s.offences == 0 || t.Sub(s.banEnd) >= d.cfg.Forget) {
			delete(d.sources, a)
		}
	}
}

// Len is the number of sources tracked.
func (d *Detector) Len() int { return len(d.sources) }

func (d *Detector) evict(t time.Time) {
	d.Expire(t)
	if len(d.sources) < d.cfg.MaxSources {
		return
	}
	var oldest netip.Addr
	var ot time.Time
	for a, s := range d.sources {
		if !oldest.IsValid() || s.last.Before(ot) {
			oldest, ot = a, s.last
		}
	}
	delete(d.sources, oldest)
}
