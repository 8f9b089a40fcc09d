package lograte

import (
	"bytes"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// clock is a settable test clock.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newClock() *clock { return &clock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func addr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)})
}

// TestBudgetSpoofedFlood: 10,000 distinct sources in one second get at most the global budget's
// lines (its burst plus one second of its rate) and, once, a summary that counts every line held
// back; a legitimate event after the flood is logged again once the budget has recovered.
func TestBudgetSpoofedFlood(t *testing.T) {
	tests := []struct {
		name    string
		rate    float64
		burst   int
		sources int
	}{
		{"server default", 20, 100, 10000},
		{"small budget", 1, 1, 10000},
		{"large budget", 500, 2000, 10000},
		{"fewer sources than the table holds", 20, 100, 3000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newClock()
			b := NewBudget(tc.rate, tc.burst, 10*time.Second, c.now)
			l := New(10, time.Second, 4096, c.now)
			l.SetBudget(b)
			allowed := 0
			step := time.Second / time.Duration(tc.sources)
			for i := 0; i < tc.sources; i++ {
				if ok, _ := l.Allow(addr(i)); ok {
					allowed++
				}
				c.advance(step)
			}
			limit := tc.burst + int(tc.rate) // one second of flood
			if allowed > limit || allowed < tc.burst {
				t.Errorf("%d lines allowed, want between %d and %d", allowed, tc.burst, limit)
			}
			summaries := 0
			var held uint64
			for i := 0; i < 5; i++ { // the server asks once a second
				if n, _, ok := b.Report(); ok {
					summaries++
					held += n
				}
				c.advance(time.Second / 10)
			}
			if summaries != 1 {
				t.Errorf("%d summaries in half a second, want 1", summaries)
			}
			if got := uint64(allowed) + held + l.Suppressed(); got != uint64(tc.sources) {
				t.Errorf("allowed %d + summarised %d + per-source %d = %d, want every line of %d accounted for",
					allowed, held, l.Suppressed(), got, tc.sources)
			}
			if b.Suppressed() != held {
				t.Errorf("Suppressed() = %d, summarised %d", b.Suppressed(), held)
			}
			// After the flood, the budget refills and a legitimate refusal is logged again.
			c.advance(time.Duration(float64(time.Second) / tc.rate))
			if ok, _ := l.Allow(netip.MustParseAddr("198.19.0.7")); !ok {
				t.Error("a legitimate line after the flood was held back once the budget recovered")
			}
		})
	}
}

// TestBudgetRules covers the token bucket and the report interval.
func TestBudgetRules(t *testing.T) {
	type op struct {
		advance time.Duration
		allow   int // lines asked for
		want    int // lines allowed
		report  int // -1: no report expected; else the count it must carry
	}
	tests := []struct {
		name  string
		rate  float64
		burst int
		ops   []op
	}{
		{"burst then rate", 2, 3, []op{
			{0, 5, 3, 2}, {500 * time.Millisecond, 2, 1, -1}, {500 * time.Millisecond, 3, 1, -1}}},
		{"refill is capped at burst", 10, 2, []op{{time.Hour, 5, 2, 3}}},
		{"report at most once per interval", 1, 1, []op{
			{0, 3, 1, 2}, {time.Second, 3, 1, -1}, {9 * time.Second, 1, 1, 2}}},
		{"nothing to report", 1, 5, []op{{0, 5, 5, -1}, {20 * time.Second, 1, 1, -1}}},
		{"zero rate never refills", 0, 1, []op{{0, 2, 1, 1}, {time.Hour, 1, 0, 1}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newClock()
			b := NewBudget(tc.rate, tc.burst, 10*time.Second, c.now)
			for i, o := range tc.ops {
				c.advance(o.advance)
				got := 0
				for range o.allow {
					if b.Allow() {
						got++
					}
				}
				if got != o.want {
					t.Errorf("op %d: %d allowed, want %d", i, got, o.want)
				}
				n, _, ok := b.Report()
				switch {
				case o.report < 0 && ok:
					t.Errorf("op %d: unexpected report of %d", i, n)
				case o.report >= 0 && (!ok || n != uint64(o.report)):
					t.Errorf("op %d: report %d, %v; want %d", i, n, ok, o.report)
				}
			}
		})
	}
}

// TestLimiterLoudSourceSparesBudget: lines one loud source is refused by its own limit take
// nothing from the global budget, so other sources still get lines.
func TestLimiterLoudSourceSparesBudget(t *testing.T) {
	c := newClock()
	b := NewBudget(5, 20, 10*time.Second, c.now)
	l := New(3, time.Second, 100, c.now)
	l.SetBudget(b)
	for range 10000 {
		l.Allow(addr(1))
	}
	for i := 2; i < 12; i++ {
		if ok, _ := l.Allow(addr(i)); !ok {
			t.Fatalf("source %d refused after one loud source: the global budget was spent by refused lines", i)
		}
	}
	if b.Suppressed() != 0 || l.Suppressed() != 10000-3 {
		t.Errorf("global held back %d (want 0), per-source %d (want %d)", b.Suppressed(), l.Suppressed(), 10000-3)
	}
}

// TestBudgetHandler: records past the budget are not written, and the summary line says how
// many were held back.
func TestBudgetHandler(t *testing.T) {
	c := newClock()
	b := NewBudget(1, 2, 10*time.Second, c.now)
	var out bytes.Buffer
	log := slog.New(b.Handler(slog.NewTextHandler(&out, nil))).With("door", "ssh")
	for range 50 {
		log.Warn("command not run: too many commands running")
	}
	b.LogReport(slog.New(slog.NewTextHandler(&out, nil)), "grants")
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines, want 2 and a summary:\n%s", len(lines), out.String())
	}
	if !strings.Contains(lines[0], "door=ssh") || !strings.Contains(lines[2], "suppressed=48") || !strings.Contains(lines[2], "budget=grants") {
		t.Errorf("lines:\n%s", out.String())
	}
	var nilBudget *Budget
	if !nilBudget.Allow() || nilBudget.Suppressed() != 0 {
		t.Error("a nil budget must allow everything")
	}
}
