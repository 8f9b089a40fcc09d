package server

import (
	"sync/atomic"
	"time"
)

// KnockReason is why the knock machine refused a knock. Its String is the name logged in the
// "reason" attribute.
type KnockReason uint8

// Knock refusal reasons.
const (
	KnockTimeout     KnockReason = iota + 1 // the sequence in progress ran out of time
	KnockWrong                              // not the next knock of the sequence in progress
	KnockTooFast                            // sooner than the door's min_gap
	KnockNotAllowed                         // the source may not knock on the door
	KnockSpent                              // a rotating door's complete sequence, used already
	KnockWindow                             // a rotating door's complete sequence, not of the current or previous window
	KnockStartWindow                        // a rotating door's complete sequence, of a window that began before the server started
	numKnockReasons
)

var knockReasonNames = [numKnockReasons]string{
	KnockTimeout:     "sequence timeout",
	KnockWrong:       "wrong knock",
	KnockTooFast:     "knock sooner than min_gap",
	KnockNotAllowed:  "source not allowed",
	KnockSpent:       "sequence already used",
	KnockWindow:      "sequence not of this window",
	KnockStartWindow: "sequence of a window before the server started",
}

// String is the reason's log name.
func (r KnockReason) String() string {
	if r > 0 && r < numKnockReasons {
		return knockReasonNames[r]
	}
	return "none"
}

// stats are the counters the per-packet path updates: fixed arrays of atomics, no lock.
type stats struct {
	knockPackets atomic.Uint64
	knockOpened  atomic.Uint64
	knockRefused [numKnockReasons]atomic.Uint64
	latency      histogram
}

// LatencyBounds are the upper bounds, in seconds, of the packet-to-grant latency histogram.
var LatencyBounds = [...]float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}

// histogram counts observations per bucket of LatencyBounds (the last one is +Inf).
type histogram struct {
	buckets [len(LatencyBounds) + 1]atomic.Uint64
	count   atomic.Uint64
	sumNs   atomic.Uint64
}

func (h *histogram) observe(d time.Duration) {
	d = max(d, 0)
	sec := d.Seconds()
	i := 0
	for i < len(LatencyBounds) && sec > LatencyBounds[i] {
		i++
	}
	h.buckets[i].Add(1)
	h.sumNs.Add(uint64(d))
	h.count.Add(1)
}

func (h *histogram) snapshot() Histogram {
	out := Histogram{Bounds: LatencyBounds[:], Counts: make([]uint64, len(LatencyBounds))}
	var cum uint64
	for i := range LatencyBounds {
		cum += h.buckets[i].Load()
		out.Counts[i] = cum
	}
	out.Count = h.count.Load()
	out.Sum = float64(h.sumNs.Load()) / float64(time.Second)
	return out
}

// Stats returns one snapshot of every counter the server keeps.
func (s *Server) Stats() Stats {
	now := s.deps.Now()
	out := Stats{
		Capture:  CaptureStats(s.deps.Intake.Stats()),
		Grants:   s.grants.counts(now),
		Logs:     LogStats{Suppressed: s.SuppressedLogLines()},
		Latency:  s.stats.latency.snapshot(),
		Commands: commandStats(s),
		Bans:     s.banStats(),
	}
	if s.deps.Fleet != nil {
		t := s.deps.Fleet.Totals()
		out.Fleet = &t
	}
	out.Knock = KnockStats{
		Packets: s.stats.knockPackets.Load(),
		Opened:  s.stats.knockOpened.Load(),
		Refused: map[string]uint64{},
		Guarded: s.Counters.Guarded.Load(),
	}
	for r := KnockTimeout; r < numKnockReasons; r++ {
		out.Knock.Refused[r.String()] = s.stats.knockRefused[r].Load()
	}
	s.mu.Lock()
	ms := s.cur.machine.Stats()
	s.mu.Unlock()
	out.Knock.Sources, out.Knock.Evicted = ms.Sources, ms.Evicted
	out.SPA.Decisions = map[string]map[string]uint64{}
	s.reloadMu.Lock()
	pol, store := s.spa.policy, s.spa.store
	s.reloadMu.Unlock()
	if pol != nil {
		out.SPA.Decisions = pol.Decisions()
	}
	if l, ok := store.(interface{ Len() int }); ok {
		out.Replay.Entries = l.Len()
	}
	return out
}

func commandStats(s *Server) CommandStats {
	t := s.runner.Stats().Total
	return CommandStats{Queued: t.Queued + t.QueuedStops, Running: t.Running, PendingStops: t.PendingStops,
		Run: t.Run, Failed: t.Failed, Overflowed: t.Overflowed}
}
