// Package lograte limits log lines, per source and across all sources, and counts the ones it held back.
package lograte

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Limiter allows each source a burst of lines and then one line per interval. A line that is
// allowed after some were held back carries their count, so a flood neither fills the disk nor
// hides a reason. Memory is bounded: past MaxSources, sources share one overflow budget.
//
// A Limiter may share a global Budget (SetBudget), checked in front of the per-source limits: a
// line passes only if both allow it. A line the per-source limit refuses takes nothing from the
// global budget, so one loud source cannot spend it for everyone.
type Limiter struct {
	mu         sync.Mutex
	global     *Budget
	suppressed atomic.Uint64 // held back by the per-source limits since New
	burst      float64
	every      time.Duration
	max        int
	now        func() time.Time
	sources    map[netip.Addr]*bucket
	overflow   bucket
	lastPrune  time.Time
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
	if l.global != nil && !l.global.ready() {
		// Cheap rejection first: under a flood, no per-source state is touched.
		return false, 0
	}
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
		l.suppressed.Add(1)
		return false, 0
	}
	if l.global != nil && !l.global.Allow() {
		// Another user of the budget took its last token since ready.
		b.suppressed++
		return false, 0
	}
	b.tokens--
	s := b.suppressed
	b.suppressed = 0
	return true, s
}

// SetBudget makes l check the global budget g in front of its per-source limits (nil: none).
func (l *Limiter) SetBudget(g *Budget) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.global = g
}

// Suppressed returns how many lines the per-source limits have held back since New (lines the
// global budget held back are counted by the Budget).
func (l *Limiter) Suppressed() uint64 { return l.suppressed.Load() }

// prune forgets sources whose budget is full again and who have nothing held back.
func (l *Limiter) prune(now time.Time) {
	for a, b := range l.sources {
		if b.suppressed == 0 && b.tokens+float64(now.Sub(b.last))/float64(l.every) >= l.burst {
			delete(l.sources, a)
		}
	}
}
