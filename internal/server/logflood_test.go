package server

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/capture"
	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/netport"
)

// recorder is a slog.Handler that keeps every record's message and attributes, one string each.
type recorder struct {
	mu    sync.Mutex
	lines []string
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *recorder) WithGroup(string) slog.Handler            { return r }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	var b strings.Builder
	b.WriteString(rec.Message)
	rec.Attrs(func(a slog.Attr) bool { b.WriteString(" " + a.String()); return true })
	r.mu.Lock()
	r.lines = append(r.lines, b.String())
	r.mu.Unlock()
	return nil
}

func (r *recorder) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.lines)
}

func (r *recorder) count(sub string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, l := range r.lines {
		if strings.Contains(l, sub) {
			n++
		}
	}
	return n
}

// grantCounter is a firewall that counts grants.
type grantCounter struct {
	mu     sync.Mutex
	grants int
}

func (g *grantCounter) Apply(context.Context, firewall.Gate) error { return nil }
func (g *grantCounter) Grant(_ context.Context, gs ...firewall.Grant) error {
	g.mu.Lock()
	g.grants += len(gs)
	g.mu.Unlock()
	return nil
}
func (g *grantCounter) Revoke(context.Context, ...firewall.Grant) error    { return nil }
func (g *grantCounter) List(context.Context) ([]firewall.LiveGrant, error) { return nil, nil }
func (g *grantCounter) Close(context.Context, bool) error                  { return nil }

type nullIntake struct{}

func (nullIntake) Run(ctx context.Context, _ func(*capture.Packet)) error { <-ctx.Done(); return nil }
func (nullIntake) SetFilter(capture.Filter) error                         { return nil }
func (nullIntake) Stats() capture.Stats                                   { return capture.Stats{} }

// floodServer returns a server on testConfig with a settable clock, a recorder for its log, a
// counter of its knockd-style lines and a grant counter.
func floodServer(t *testing.T) (s *Server, now *time.Time, logs *recorder, knockd *int, fw *grantCounter) {
	t.Helper()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now, logs, knockd, fw = &t0, &recorder{}, new(int), &grantCounter{}
	s, err := New(testConfig(false), Deps{Firewall: fw, Intake: nullIntake{}, Logger: slog.New(logs),
		KnockdLog: func(string) { *knockd++ }, Now: func() time.Time { return *now }})
	if err != nil {
		t.Fatal(err)
	}
	return s, now, logs, knockd, fw
}

func packet(at time.Time, src netip.Addr, p netport.Port) *capture.Packet {
	return &capture.Packet{Time: at, Src: src, Dst: netip.MustParseAddr("198.18.0.1"), Proto: p.Proto,
		DstPort: p.Num, TCPFlags: 0x02}
}

func spoofed(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}) }

// TestLogFloodSpoofedSources: 10,000 spoofed sources in one second, each knocking a first knock,
// a wrong knock and a guard port, produce at most the refusal budget's lines, knockd-style
// lines included; 10,000 spoofed sources completing the sequence get every grant but at most
// the grant budget's lines.
func TestLogFloodSpoofedSources(t *testing.T) {
	tests := []struct {
		name     string
		knocks   []netport.Port
		maxLines int // log records plus knockd-style lines: an event may write one of each
		grants   int
	}{
		{"refusals", []netport.Port{tcp(7000), tcp(23), tcp(7001)}, 2 * (refusalLinesBurst + refusalLinesPerSecond), 0},
		{"opened", []netport.Port{tcp(7000), udp(8000), tcp(23)},
			2*(refusalLinesBurst+refusalLinesPerSecond) + 2*(grantLinesBurst+grantLinesPerSecond), 10000},
	}
	const sources = 10000
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, now, logs, knockd, fw := floodServer(t)
			for i := 0; i < sources; i++ {
				for _, k := range tc.knocks {
					s.handle(t.Context(), packet(*now, spoofed(i), k))
				}
				*now = now.Add(time.Second / sources)
			}
			lines := len(logs.lines) + *knockd
			if lines > tc.maxLines {
				t.Errorf("%d lines (%d log, %d knockd-style) from %d spoofed sources in 1s, want at most %d",
					lines, len(logs.lines), *knockd, sources, tc.maxLines)
			}
			if fw.grants != tc.grants {
				t.Errorf("%d grants, want %d: a grant earned must never be dropped", fw.grants, tc.grants)
			}
		})
	}
}

// TestLogFloodSummaryAndRecovery: after a flood, one summary line per budget says how many lines
// were held back (and the counter agrees), no second summary comes within the interval, and a
// legitimate refusal is logged again once the budget has recovered.
func TestLogFloodSummaryAndRecovery(t *testing.T) {
	s, now, logs, _, _ := floodServer(t)
	for i := 0; i < 10000; i++ {
		s.handle(t.Context(), packet(*now, spoofed(i), tcp(7001))) // a guard port
		*now = now.Add(100 * time.Microsecond)
	}
	before := len(logs.lines)
	for range 5 {
		s.reportLogs()
		*now = now.Add(time.Second)
	}
	if got := logs.count("suppressed log lines"); got != 1 {
		t.Fatalf("%d summary lines in 5s, want 1:\n%s", got, strings.Join(logs.lines[before:], "\n"))
	}
	if len(logs.lines) != before+1 || !strings.Contains(logs.lines[before], "budget=refusals") {
		t.Fatalf("summary %q", logs.lines[before:])
	}
	if held := s.SuppressedLogLines(); held != uint64(10000-before) {
		t.Errorf("SuppressedLogLines = %d, want %d (10000 events, %d logged)", held, 10000-before, before)
	}
	legit := netip.MustParseAddr("198.19.0.9")
	s.handle(t.Context(), packet(*now, legit, tcp(7001)))
	if logs.count("src="+legit.String()) != 1 {
		t.Errorf("a legitimate source's sweep guard line after the flood was not logged")
	}
}
