package lograte

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Budget is a token bucket shared by every source: at most Burst lines at once and Rate lines
// a second on average, whoever they are about. It sits in front of the per-source limits, which
// a flood from spoofed sources defeats (every new source brings a fresh per-source burst). It
// counts the lines it held back, for a periodic summary (Report) and for metrics (Suppressed).
// It is safe for concurrent use.
type Budget struct {
	mu       sync.Mutex
	rate     float64 // tokens a second
	burst    float64
	tokens   float64
	last     time.Time
	now      func() time.Time
	every    time.Duration // shortest time between two reports
	reported time.Time     // time of the last report; zero before the first
	pending  uint64        // held back since the last report
	total    atomic.Uint64 // held back since New
}

// NewBudget returns a budget of rate lines a second with bursts of burst lines, starting full.
// Report says what it held back at most once every reportEvery. now is the clock (time.Now
// when nil). A rate below 0 counts as 0 and a burst below 1 as 1.
func NewBudget(rate float64, burst int, reportEvery time.Duration, now func() time.Time) *Budget {
	if now == nil {
		now = time.Now
	}
	rate, b := max(rate, 0), float64(max(burst, 1))
	return &Budget{rate: rate, burst: b, tokens: b, last: now(), now: now, every: reportEvery}
}

// Allow takes one line from the budget, or counts it as held back and reports false.
func (b *Budget) Allow() bool {
	if b == nil {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.take(b.now(), true)
}

// ready reports whether a line would be allowed now, without taking it; a line it refuses is
// counted as held back.
func (b *Budget) ready() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.take(b.now(), false)
}

// take refills the bucket to now and takes a token if consume is set; b.mu is held.
func (b *Budget) take(now time.Time, consume bool) bool {
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(b.burst, b.tokens+d.Seconds()*b.rate)
		b.last = now
	}
	if b.tokens < 1 {
		b.pending++
		b.total.Add(1)
		return false
	}
	if consume {
		b.tokens--
	}
	return true
}

// Suppressed returns how many lines the budget has held back since it was made.
func (b *Budget) Suppressed() uint64 {
	if b == nil {
		return 0
	}
	return b.total.Load()
}

// Report returns how many lines were held back since the last report, and the time since
// it, when there are some and the last report is at least reportEvery old (the first report
// may come at once). Otherwise it returns ok false, and the count keeps growing. The summary
// line is thus itself bounded: one per reportEvery at most.
func (b *Budget) Report() (n uint64, since time.Duration, ok bool) {
	if b == nil {
		return 0, 0, false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	if b.pending == 0 || !b.reported.IsZero() && now.Sub(b.reported) < b.every {
		return 0, 0, false
	}
	n, b.pending = b.pending, 0
	if !b.reported.IsZero() {
		since = now.Sub(b.reported)
	}
	b.reported = now
	return n, since, true
}

// LogReport writes the summary line of Report to log, if there is one: "suppressed log lines"
// with the count, the budget's name and the interval it covers.
func (b *Budget) LogReport(log *slog.Logger, name string) {
	n, since, ok := b.Report()
	if !ok {
		return
	}
	args := []any{"budget", name, "suppressed", n}
	if since > 0 {
		args = append(args, "interval", since.Round(time.Millisecond))
	}
	log.Warn("suppressed log lines in the last interval (log budget exhausted)", args...)
}

// Handler returns a slog.Handler that writes through next the records b allows, and holds back
// (and counts) the others. Every record counts against b, errors included.
func (b *Budget) Handler(next slog.Handler) slog.Handler {
	return &budgetHandler{b: b, next: next}
}

type budgetHandler struct {
	b    *Budget
	next slog.Handler
}

func (h *budgetHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

func (h *budgetHandler) Handle(ctx context.Context, r slog.Record) error {
	if !h.b.Allow() {
		return nil
	}
	return h.next.Handle(ctx, r)
}

func (h *budgetHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &budgetHandler{b: h.b, next: h.next.WithAttrs(as)}
}

func (h *budgetHandler) WithGroup(name string) slog.Handler {
	return &budgetHandler{b: h.b, next: h.next.WithGroup(name)}
}
