package server

import (
	"context"
	crand "crypto/rand"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/command"
	"github.com/sesame-knock/sesame/internal/config"
	"github.com/sesame-knock/sesame/internal/netport"
	"github.com/sesame-knock/sesame/internal/spa"
)

// refusalMessages are the messages of the lines that refuse a source: fail2ban's filter
// (dist/fail2ban/filter.d/sesame.conf) reads the address from their first attribute.
var refusalMessages = []string{
	"knock refused",
	"sweep guard: knocks from this source are ignored for a while",
	"spa refused",
	"command not run: too many commands waiting",
	"stop command run early: too many stop commands pending",
}

// attrRecorder keeps every record with its attributes in order.
type attrRecorder struct {
	mu   sync.Mutex
	recs []loggedRecord
}

type loggedRecord struct {
	msg   string
	attrs []slog.Attr
}

func (r *attrRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *attrRecorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *attrRecorder) WithGroup(string) slog.Handler            { return r }
func (r *attrRecorder) Handle(_ context.Context, rec slog.Record) error {
	l := loggedRecord{msg: rec.Message}
	rec.Attrs(func(a slog.Attr) bool { l.attrs = append(l.attrs, a); return true })
	r.mu.Lock()
	r.recs = append(r.recs, l)
	r.mu.Unlock()
	return nil
}

func (r *attrRecorder) records() []loggedRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.recs)
}

func (l loggedRecord) String() string {
	var b strings.Builder
	b.WriteString(l.msg)
	for _, a := range l.attrs {
		b.WriteString(" " + a.String())
	}
	return b.String()
}

// TestRefusalLinesNameSourceFirst: every line that refuses a source (knock refusals, the sweep
// guard, SPA refusals, command overflow) has src as its first attribute, holding the
// source's address, so that fail2ban's filter can find it right after the message.
func TestRefusalLinesNameSourceFirst(t *testing.T) {
	srcD := netip.MustParseAddr("198.18.0.4")
	wrongKey := mustShared()
	sealed := func(b *bed, id string, key *spa.SharedKey, at time.Time) []byte {
		pkt, err := spa.Seal(spa.Request{Ports: []netport.Port{tcp(443)}}, spa.ClientCredential{ID: id, Shared: key}, at, crand.Reader)
		if err != nil {
			b.t.Fatal(err)
		}
		return pkt
	}
	tests := []struct {
		name   string
		cfg    func() *config.Config
		runner *command.Options // a runner logging to the test's logger, when set
		send   func(b *bed) netip.Addr
		msg    string
		reason string // the reason attribute, when the line has one
	}{
		{"wrong knock", doorConfig, nil, func(b *bed) netip.Addr {
			b.knock(srcA, tcp(7000), tcp(23))
			return srcA
		}, "knock refused", "wrong knock"},
		{"sequence timeout", doorConfig, nil, func(b *bed) netip.Addr {
			b.knock(srcC, tcp(7000))
			b.clock.Advance(6 * time.Second)
			b.knock(srcC, udp(8000))
			return srcC
		}, "knock refused", "sequence timeout"},
		{"too fast", func() *config.Config {
			c := doorConfig()
			c.Doors = slices.Clone(c.Doors)
			c.Doors[0].MinGap = time.Second
			return c
		}, nil, func(b *bed) netip.Addr {
			b.knock(srcB, tcp(7000), udp(8000))
			return srcB
		}, "knock refused", "knock sooner than min_gap"},
		{"source not allowed", func() *config.Config {
			c := doorConfig()
			c.Doors = slices.Clone(c.Doors)
			c.Doors[0].Sources = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
			return c
		}, nil, func(b *bed) netip.Addr {
			b.knock(srcB, tcp(7000))
			return srcB
		}, "knock refused", "source not allowed"},
		{"sweep guard", doorConfig, nil, func(b *bed) netip.Addr {
			b.knock(srcC, tcp(7001))
			return srcC
		}, "sweep guard: knocks from this source are ignored for a while", ""},
		{"spa garbage", spaConfig, nil, func(b *bed) netip.Addr {
			b.sendSPA(srcB, 62201, false, []byte("GET / HTTP/1.0\r\n\r\n"))
			return srcB
		}, "spa refused", "malformed"},
		{"spa too short", spaConfig, nil, func(b *bed) netip.Addr {
			b.sendSPA(srcC, 62201, false, b.alicePacket()[:spa.HeaderLen+1])
			return srcC
		}, "spa refused", "too short"},
		{"spa too long", spaConfig, nil, func(b *bed) netip.Addr {
			b.sendSPA(srcC, 62201, false, append(b.alicePacket(), make([]byte, spa.MaxPacketLen)...))
			return srcC
		}, "spa refused", "too long"},
		{"spa port not allowed", spaConfig, nil, func(b *bed) netip.Addr {
			pkt, err := spa.Seal(spa.Request{Ports: []netport.Port{tcp(444)}}, spa.ClientCredential{ID: "alice", Shared: &aliceK}, b.clock.Now(), crand.Reader)
			if err != nil {
				b.t.Fatal(err)
			}
			b.sendSPA(srcB, 62201, false, pkt)
			return srcB
		}, "spa refused", "port not allowed"},
		{"spa bad MAC", spaConfig, nil, func(b *bed) netip.Addr {
			pkt := b.alicePacket()
			pkt[len(pkt)-1] ^= 1
			b.sendSPA(srcB, 62201, false, pkt)
			return srcB
		}, "spa refused", "bad MAC"},
		{"spa unknown client", spaConfig, nil, func(b *bed) netip.Addr {
			b.sendSPA(srcA, 62201, false, sealed(b, "mallory", &wrongKey, b.clock.Now()))
			return srcA
		}, "spa refused", "unknown client"},
		{"spa stale", spaConfig, nil, func(b *bed) netip.Addr {
			b.sendSPA(srcA, 62201, false, sealed(b, "alice", &aliceK, b.clock.Now().Add(-time.Hour)))
			return srcA
		}, "spa refused", "stale"},
		{"spa replay", spaConfig, nil, func(b *bed) netip.Addr {
			pkt := b.alicePacket()
			b.sendSPA(srcA, 62201, false, pkt)
			b.sendSPA(srcD, 62201, false, pkt)
			return srcD
		}, "spa refused", "replay"},
		{"spa bad source", spaConfig, nil, func(b *bed) netip.Addr {
			bad := netip.MustParseAddr("224.0.0.1")
			b.sendSPA(bad, 62201, false, b.alicePacket())
			return bad
		}, "spa refused", "bad source"},
		{"spa sniffed", func() *config.Config { return withSPA(doorConfig(), spaSection(62201, true)) }, nil, func(b *bed) netip.Addr {
			b.sendSPA(srcC, 62201, true, []byte("not a packet at all, but long enough to be read as one......"))
			return srcC
		}, "spa refused", ""},
		{"command queue full", func() *config.Config {
			c := doorConfig()
			c.Doors = slices.Clone(c.Doors)
			c.Doors[0].StartCommand = "sleep 1"
			return c
		}, &command.Options{Workers: 1, Queue: 1}, func(b *bed) netip.Addr {
			// One runs, one waits, the third is refused.
			b.knock(srcA, sequence...)
			if !waitUntil(5*time.Second, func() bool { return b.srv.CommandStats().Total.Running == 1 }) {
				b.t.Fatal("the first start command never ran")
			}
			b.knock(srcB, sequence...)
			b.knock(srcD, sequence...)
			return srcD
		}, "command not run: too many commands waiting", ""},
		{"stop run early", func() *config.Config {
			c := doorConfig()
			c.Doors = slices.Clone(c.Doors)
			c.Doors[0].StartCommand, c.Doors[0].StopCommand, c.Doors[0].CmdTimeout = "true", "true", time.Hour
			return c
		}, &command.Options{Workers: 1, MaxPending: 1}, func(b *bed) netip.Addr {
			b.knock(srcA, sequence...)
			// The first stop is scheduled once its start has run; the second start's stop
			// then pushes it out early.
			if !waitUntil(5*time.Second, func() bool { return b.srv.CommandStats().Total.PendingStops == 1 }) {
				b.t.Fatal("the first stop command was never scheduled")
			}
			b.knock(srcB, sequence...)
			return srcA
		}, "stop command run early: too many stop commands pending", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := &attrRecorder{}
			log := slog.New(rec)
			opts := []bedOption{withLogger(log)}
			if tc.runner != nil {
				o := *tc.runner
				o.Log = log
				opts = append(opts, withRunner(command.New(o)))
			}
			b := newBed(t, tc.cfg(), opts...)
			src := tc.send(b)
			var lines []loggedRecord
			waitUntil(5*time.Second, func() bool {
				lines = lines[:0]
				for _, r := range rec.records() {
					if slices.Contains(refusalMessages, r.msg) {
						lines = append(lines, r)
					}
				}
				return slices.ContainsFunc(lines, func(r loggedRecord) bool { return r.msg == tc.msg })
			})
			found := false
			for _, l := range lines {
				if len(l.attrs) == 0 || l.attrs[0].Key != "src" {
					t.Errorf("refusal line without src first: %s", l)
					continue
				}
				if l.msg != tc.msg {
					continue
				}
				if l.attrs[0].Value.String() != src.String() {
					t.Errorf("src=%s, want %s: %s", l.attrs[0].Value, src, l)
				}
				if tc.reason != "" && !slices.ContainsFunc(l.attrs, func(a slog.Attr) bool { return a.Key == "reason" && a.Value.String() == tc.reason }) {
					continue
				}
				found = true
			}
			if !found {
				var all []string
				for _, r := range rec.records() {
					all = append(all, r.String())
				}
				t.Fatalf("no %q line (reason %q) from %s; log:\n%s", tc.msg, tc.reason, src, strings.Join(all, "\n"))
			}
		})
	}
}

func spaConfig() *config.Config { return withSPA(doorConfig(), spaSection(62201, false)) }

func withLogger(l *slog.Logger) bedOption { return func(d *Deps, _ *bed) { d.Logger = l } }

func withRunner(r *command.Runner) bedOption { return func(d *Deps, _ *bed) { d.Commands = r } }

// waitUntil polls cond every 5 ms until it holds or timeout passes.
func waitUntil(timeout time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(timeout); ; time.Sleep(5 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}
