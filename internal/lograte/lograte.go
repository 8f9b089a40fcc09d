// Package lograte limits per-source log lines and counts the ones it held back.
package lograte

import (
	"net/netip"
	"sync"
	"time"
)

// Limiter allows each source a burst of lines and then one line per interval. A line that is
// allowed after some were held back carries their count, so a flood neither fills the disk nor
// hides a reason. Memory is bounded: past MaxSources, sources share one overflow budget.
type Limiter struct {
	mu        sync.Mutex
	burst     float64
	every     time.Duration
	max       int
	now       func() time.Time
	sources   map[netip.Addr]*bucket
	overflow  bucket
	lastPrune time.Time
}

type bucket struct {
	tokens     float64
	last       time.Time
	suppressed uint64
}

// New returns a limiter: burst lines at once, then one every interval, for at most maxSources
// sources tracked separately. now is the clock (time.Now when nil).
func New(burst int, every time.Duration, maxSources int, now func() time.Time) *Limiter {
	if now == nil {
		now = time.Now
	}
	return &Limiter{burst: float64(burst), every: every, max: maxSources, now: now, sources: map[netip.Addr]*bucket{}}
}

// Allow reports whether a line about src may be logged now and, if so, how many lines about it
// were held back since the last one allowed.
func (l *Limiter) Allow(src netip.Addr) (ok bool, suppressed uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b := l.sources[src]
	if b == nil {
		if len(l.sources) >= l.max && now.Sub(l.lastPrune) >= l.every {
			// At most one pass over the table per interval: a flood of new sources must not
			// cost a walk of the whole table per packet.
			l.lastPrune = now
			l.prune(now)
		}
		if len(l.sources) >= l.max {
			b = &l.overflow
		} else {
			b = &bucket{tokens: l.burst, last: now}
			l.sources[src] = b
		}
	}
	b.tokens = min(l.burst, b.tokens+float64(now.Sub(b.last))/float64(l.every))
	b.last = now
	if b.tokens < 1 {
		b.suppressed++
		return false, 0
	}
	b.tokens--
	s := b.suppressed
	b.suppressed = 0
	return true, s
}

// prune forgets sources whose budget is full again and who have nothing held back.
func (l *Limiter) prune(now time.Time) {
	for a, b := range l.sources {
		if b.suppressed == 0 && b.tokens+float64(now.Sub(b.last))/float64(l.every) >= l.burst {
			delete(l.sources, a)
		}
	}
}
