package server

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/capture"
	"github.com/sesame-knock/sesame/internal/config"
	"github.com/sesame-knock/sesame/internal/knock"
	"github.com/sesame-knock/sesame/internal/netport"
	"github.com/sesame-knock/sesame/internal/rotate"
)

// rotPeriod is the window of the test's rotating door; t0 is a window boundary.
const rotPeriod = 10 * time.Second

// rotConfig is doorConfig plus "rot", a rotating door (tcp 10000-60000, 4 knocks, 2 uses per
// window) that opens tcp/2222, with the sweep guard width guard.
func rotConfig(guard int) *config.Config {
	cfg := doorConfig()
	cfg.Server.SweepGuard = guard
	cfg.Doors = append(cfg.Doors, config.Door{
		Door: knock.Door{Name: "rot", Flags: knock.TCPFlags{Set: knock.SYN, Clear: knock.ACK}, Timeout: 5 * time.Second},
		Open: []netport.Port{tcp(2222)}, OpenFor: time.Hour,
		Rotate: &config.Rotation{Secret: aliceK, Params: rotate.Params{
			Door: "rot", Period: rotPeriod, Lo: 10000, Hi: 60000, Length: 4, Uses: 2, Proto: netport.TCP}},
	})
	return cfg
}

// rotSeq is the sequence of counter c in window w of cfg's door "rot".
func rotSeq(t *testing.T, cfg *config.Config, w int64, c int) []netport.Port {
	t.Helper()
	r := cfg.Doors[1].Rotate
	seq, err := rotate.Sequence(r.Secret[:], r.Params, w, uint32(c))
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

func window(cfg *config.Config, now time.Time) int64 { return cfg.Doors[1].Rotate.Window(now) }

var rot2222 = tcp(2222)

// newRotBed is newBed moved on to the window after the one the server started in: sequences of
// that one are refused (TestRotatingRefusesStartWindow).
func newRotBed(t *testing.T, cfg *config.Config) *bed {
	t.Helper()
	b := newBed(t, cfg)
	b.clock.Advance(rotPeriod)
	b.srv.rotateNow(b.clock.Now())
	return b
}

// TestRotatingRefusesStartWindow: which sequences were used is not kept across a restart, so
// the server refuses every sequence of the window it started in and of the one before; the
// next window's open.
func TestRotatingRefusesStartWindow(t *testing.T) {
	cfg := rotConfig(2)
	b := newBed(t, cfg)
	b.clock.Advance(rotPeriod / 2)
	w := window(cfg, b.clock.Now())
	b.knock(srcA, rotSeq(t, cfg, w, 0)...)
	b.knock(srcB, rotSeq(t, cfg, w-1, 1)...)
	if b.fw.Has(srcA, rot2222) || b.fw.Has(srcB, rot2222) {
		t.Fatal("a sequence of the start window (or the one before) opened")
	}
	if n := b.srv.Stats().Knock.Refused["sequence of a window before the server started"]; n != 2 {
		t.Errorf("%d refusals for the start window, want 2 (%v)", n, b.srv.Stats().Knock.Refused)
	}
	b.clock.Advance(rotPeriod)
	b.srv.rotateNow(b.clock.Now())
	b.knock(srcC, rotSeq(t, cfg, w+1, 0)...)
	if !b.fw.Has(srcC, rot2222) {
		t.Fatal("a sequence of the window after the start did not open")
	}
}

// TestRotatingOpensOnce: a complete sequence opens once; its replay from another address is
// refused later in the window, in the next window (where it is still the previous one) and
// after; the next counter opens again in the same window.
func TestRotatingOpensOnce(t *testing.T) {
	for _, guard := range []int{0, 2} {
		cfg := rotConfig(guard)
		b := newRotBed(t, cfg)
		w := window(cfg, b.clock.Now())
		seq := rotSeq(t, cfg, w, 0)
		b.clock.Advance(time.Second)
		b.knock(srcA, seq...)
		if !b.fw.Has(srcA, rot2222) {
			t.Fatalf("guard %d: the owner's knock opened nothing; log:\n%s", guard, strings.Join(b.logs.all(), "\n"))
		}
		replays := []struct {
			name    string
			advance time.Duration
			src     netip.Addr
		}{
			{"same window, same source", time.Second, srcA},
			{"same window, another source", time.Second, srcB},
			{"same window, IPv6 source", 0, srcC},
			{"next window (previous)", rotPeriod, srcB},
			{"two windows later", rotPeriod, srcB},
			{"much later", 10 * rotPeriod, srcC},
		}
		for _, r := range replays {
			b.clock.Advance(r.advance)
			b.srv.rotateNow(b.clock.Now())
			b.knock(r.src, seq...)
			if r.src != srcA && b.fw.Has(r.src, rot2222) {
				t.Fatalf("guard %d: %s: the replay opened the door", guard, r.name)
			}
		}
		// Two windows on, the sequence is no longer armed: its knocks are not even a sequence
		// (with the guard, they are guard ports).
		if got := b.srv.Stats().Knock.Refused["sequence already used"]; got != 4 {
			t.Errorf("guard %d: %d refusals as already used, want 4 (the replays of the first two windows)", guard, got)
		}
		if got := b.srv.Stats().Grants["rot"].Added; got != 1 {
			t.Errorf("guard %d: %d grants, want 1", guard, got)
		}
		// The owner knocks twice in one window, counters 0 and 1 (from fresh addresses: the
		// sweep guard ignores srcC for a while after its knocks on stale ports).
		w = window(cfg, b.clock.Now())
		src1, src2 := netip.MustParseAddr("198.18.0.50"), netip.MustParseAddr("fd5e:5a3e::50")
		b.knock(src1, rotSeq(t, cfg, w, 0)...)
		b.knock(src2, rotSeq(t, cfg, w, 1)...)
		if !b.fw.Has(src1, rot2222) || !b.fw.Has(src2, rot2222) {
			t.Fatalf("guard %d: counters 0 and 1 of one window did not both open", guard)
		}
		b.stop()
	}
}

// TestRotatingWindows: a sequence of the current or the previous window opens; one of the next
// window is refused and not used up (it opens once its window comes); older ones do nothing.
func TestRotatingWindows(t *testing.T) {
	tests := []struct {
		name    string
		offset  int64 // window of the sequence, relative to the current one
		open    bool
		refusal string
		laterOK bool // opens once its window has come
	}{
		{"current", 0, true, "", false},
		{"previous", -1, true, "", false},
		{"next", 1, false, "sequence not of this window", true},
		{"two back", -2, false, "", false},
		{"two ahead", 2, false, "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := rotConfig(0)
			b := newRotBed(t, cfg)
			b.clock.Advance(rotPeriod/2 + 3*rotPeriod)
			b.srv.rotateNow(b.clock.Now())
			w := window(cfg, b.clock.Now())
			seq := rotSeq(t, cfg, w+tc.offset, 0)
			b.knock(srcA, seq...)
			if got := b.fw.Has(srcA, rot2222); got != tc.open {
				t.Fatalf("opened %v, want %v", got, tc.open)
			}
			if tc.refusal != "" && b.srv.Stats().Knock.Refused[tc.refusal] != 1 {
				t.Errorf("refusals %v, want one %q", b.srv.Stats().Knock.Refused, tc.refusal)
			}
			if tc.laterOK {
				b.clock.Advance(rotPeriod)
				b.srv.rotateNow(b.clock.Now())
				b.knock(srcB, seq...)
				if !b.fw.Has(srcB, rot2222) {
					t.Fatal("the early sequence was used up: it does not open in its own window")
				}
			}
		})
	}
}

// TestRotatingPartialBurnsNothing: sources that saw and sent part of the owner's sequence (its
// first knock, all but its last, the last ones alone, out of order) use nothing up: the owner's
// complete sequence still opens.
func TestRotatingPartialBurnsNothing(t *testing.T) {
	cfg := rotConfig(2)
	b := newRotBed(t, cfg)
	w := window(cfg, b.clock.Now())
	seq := rotSeq(t, cfg, w, 0)
	partials := [][]netport.Port{seq[:1], seq[:3], seq[1:], {seq[0], seq[2], seq[1], seq[3]}, {seq[3]}}
	for i, p := range partials {
		src := netip.AddrFrom4([4]byte{198, 18, 0, byte(10 + i)})
		b.knock(src, p...)
		if b.fw.Has(src, rot2222) {
			t.Fatalf("partial %d (%v) opened the door", i, p)
		}
	}
	// A partial sequence that times out, from the owner's own address.
	b.knock(srcA, seq[:2]...)
	b.clock.Advance(6 * time.Second)
	b.knock(srcA, seq...)
	if !b.fw.Has(srcA, rot2222) {
		t.Fatalf("the owner's sequence opened nothing after partial copies; log:\n%s", strings.Join(b.logs.all(), "\n"))
	}
	if n := b.srv.Stats().Knock.Refused["sequence already used"]; n != 0 {
		t.Errorf("%d refusals as already used, want 0", n)
	}
}

// TestRotatingInFlightAcrossBoundary: a knock begun just before a window boundary and ended
// after it opens; the server's move to the new window keeps its progress.
func TestRotatingInFlightAcrossBoundary(t *testing.T) {
	cfg := rotConfig(2)
	b := newRotBed(t, cfg)
	b.clock.Advance(rotPeriod - time.Second)
	w := window(cfg, b.clock.Now())
	seq := rotSeq(t, cfg, w, 0)
	b.knock(srcA, seq[:2]...)
	b.clock.Advance(2 * time.Second)
	b.srv.rotateNow(b.clock.Now())
	if window(cfg, b.clock.Now()) != w+1 {
		t.Fatal("the clock did not cross the boundary")
	}
	b.knock(srcA, seq[2:]...)
	if !b.fw.Has(srcA, rot2222) {
		t.Fatalf("the knock in flight across the boundary opened nothing; log:\n%s", strings.Join(b.logs.all(), "\n"))
	}
}

func filterHas(f capture.Filter, p netport.Port) bool {
	return slices.ContainsFunc(f.Knocks, func(k capture.Knock) bool { return k.Port == p })
}

// TestRotatingFilterFollows: the capture filter passes the ports of the previous, current and
// next window at every moment, the next window's before its boundary, and moves on with the
// clock; with the sweep guard, the range is guarded and the static door keeps its own.
func TestRotatingFilterFollows(t *testing.T) {
	cfg := rotConfig(0)
	b := newRotBed(t, cfg)
	check := func(at string, valid []int64, gone int64) {
		t.Helper()
		f := b.cap.Filter()
		for _, w := range valid {
			for c := range 2 {
				for _, p := range rotSeq(t, cfg, w, c) {
					if !filterHas(f, p) {
						t.Fatalf("%s: the filter lacks %v of window %d counter %d", at, p, w, c)
					}
				}
			}
		}
		for c := range 2 {
			if seq := rotSeq(t, cfg, gone, c); !slices.ContainsFunc(seq, func(p netport.Port) bool { return !filterHas(f, p) }) {
				t.Fatalf("%s: the filter still passes all of window %d (counter %d)", at, gone, c)
			}
		}
		if !filterHas(f, tcp(7000)) || !filterHas(f, udp(8000)) {
			t.Fatalf("%s: the static door's knocks are gone", at)
		}
	}
	w := window(cfg, b.clock.Now())
	check("at start", []int64{w - 1, w, w + 1}, w-2)
	sets := len(b.cap.Filters())
	b.clock.Advance(rotPeriod - 100*time.Millisecond)
	b.srv.rotateNow(b.clock.Now())
	if len(b.cap.Filters()) != sets {
		t.Error("the filter changed within a window")
	}
	check("just before the boundary", []int64{w - 1, w, w + 1}, w-2)
	b.clock.Advance(200 * time.Millisecond)
	b.srv.rotateNow(b.clock.Now())
	check("just after the boundary", []int64{w, w + 1, w + 2}, w-1)
	b.clock.Advance(5 * rotPeriod)
	b.srv.rotateNow(b.clock.Now())
	check("five windows later", []int64{w + 5, w + 6, w + 7}, w+4)

	g := newBed(t, rotConfig(2)).cap.Filter()
	if !slices.Contains(g.Guards, capture.PortRange{Proto: netport.TCP, Lo: 10000, Hi: 60000}) {
		t.Errorf("with the sweep guard, the range is not guarded: %v", g.Guards)
	}
	if !slices.Contains(g.Guards, capture.PortRange{Proto: netport.TCP, Lo: 6998, Hi: 6999}) {
		t.Errorf("the static door lost its guard band: %v", g.Guards)
	}
}

// TestRotatingSweepOpensNothing: an ascending sweep of the whole range, through the kernel
// filter's ports only (what the capture passes), opens nothing with the sweep guard, even
// when it holds an ascending sequence of the current window.
func TestRotatingSweepOpensNothing(t *testing.T) {
	cfg := rotConfig(2)
	b := newRotBed(t, cfg)
	w := window(cfg, b.clock.Now())
	var ascending []netport.Port
	for c := 0; ascending == nil; c++ {
		// Find a window whose counter-0 sequence ascends, and move the clock there.
		seq := rotSeq(t, cfg, w+int64(c), 0)
		if slices.IsSortedFunc(seq, func(a, b netport.Port) int { return int(a.Num) - int(b.Num) }) {
			ascending = seq
			b.clock.Advance(time.Duration(c) * rotPeriod)
			b.srv.rotateNow(b.clock.Now())
		}
		if c > 1000 {
			t.Fatal("no ascending sequence in 1000 windows")
		}
	}
	// The sweep: every port from the sequence's first to its last, in order, 1 ms apart.
	for p := ascending[0].Num; p <= ascending[len(ascending)-1].Num; p++ {
		b.knock(srcB, tcp(p))
		b.clock.Advance(50 * time.Microsecond)
	}
	if b.fw.Has(srcB, rot2222) {
		t.Fatal("a sweep over the range opened the rotating door")
	}
	if b.srv.Stats().Knock.Guarded == 0 {
		t.Error("the sweep hit no guard port")
	}
	// A knock with no stray ports in between still opens.
	b.knock(srcA, ascending...)
	if !b.fw.Has(srcA, rot2222) {
		t.Fatal("the owner's knock opened nothing after the sweep")
	}
}

// TestRotatingUsedSurvivesReload: a reload (or a one-time door's move) does not forget which
// sequences were used.
func TestRotatingUsedSurvivesReload(t *testing.T) {
	cfg := rotConfig(2)
	b := newRotBed(t, cfg)
	seq := rotSeq(t, cfg, window(cfg, b.clock.Now()), 0)
	b.knock(srcA, seq...)
	if !b.fw.Has(srcA, rot2222) {
		t.Fatal("no grant")
	}
	if err := b.srv.Reload(context.Background(), rotConfig(2)); err != nil {
		t.Fatal(err)
	}
	b.knock(srcB, seq...)
	if b.fw.Has(srcB, rot2222) {
		t.Fatal("the replay after a reload opened the door")
	}
	st, err := b.srv.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if d := st.Doors[1]; d.Name != "rot" || d.Rotate != "tcp/10000-60000 x4 every 10s" || len(d.Sequence) != 0 || d.Opened != 1 {
		t.Errorf("status of the rotating door: %+v", d)
	}
}

// TestRotatingClockStepsBack: while the server runs, its clock stepped back by windows opens
// nothing (not a sequence used before, not one of the old windows) until it has caught up.
func TestRotatingClockStepsBack(t *testing.T) {
	cfg := rotConfig(0)
	b := newRotBed(t, cfg)
	b.clock.Advance(5 * rotPeriod)
	b.srv.rotateNow(b.clock.Now())
	w := window(cfg, b.clock.Now())
	used := rotSeq(t, cfg, w, 0)
	b.knock(srcA, used...)
	if !b.fw.Has(srcA, rot2222) {
		t.Fatal("no grant")
	}
	b.clock.Advance(-3 * rotPeriod)
	b.srv.rotateNow(b.clock.Now())
	b.knock(srcB, rotSeq(t, cfg, w-3, 0)...)
	b.knock(srcC, rotSeq(t, cfg, w-3, 1)...)
	if b.fw.Has(srcB, rot2222) || b.fw.Has(srcC, rot2222) {
		t.Fatal("a sequence of a window older than the newest seen opened")
	}
	b.clock.Advance(3 * rotPeriod)
	b.srv.rotateNow(b.clock.Now())
	b.knock(srcB, used...)
	if b.fw.Has(srcB, rot2222) {
		t.Fatal("the used sequence opened again after the clock stepped back and forth")
	}
	b.knock(srcC, rotSeq(t, cfg, w, 1)...)
	if !b.fw.Has(srcC, rot2222) {
		t.Fatal("the door did not open again once the clock caught up")
	}
}

// TestRotatingUDP: a rotating door of UDP knocks opens on its UDP sequence, not on the same
// ports knocked over TCP; with the sweep guard its UDP range is guarded.
func TestRotatingUDP(t *testing.T) {
	cfg := rotConfig(2)
	cfg.Doors[1].Rotate.Proto = netport.UDP
	b := newRotBed(t, cfg)
	seq := rotSeq(t, cfg, window(cfg, b.clock.Now()), 0)
	if seq[0].Proto != netport.UDP {
		t.Fatalf("sequence %v is not UDP", seq)
	}
	var asTCP []netport.Port
	for _, p := range seq {
		asTCP = append(asTCP, tcp(p.Num))
	}
	b.knock(srcB, asTCP...)
	if b.fw.Has(srcB, rot2222) {
		t.Fatal("the ports knocked over TCP opened a UDP door")
	}
	b.knock(srcA, seq...)
	if !b.fw.Has(srcA, rot2222) {
		t.Fatalf("the UDP sequence opened nothing; log:\n%s", strings.Join(b.logs.all(), "\n"))
	}
	if f := b.cap.Filter(); !slices.Contains(f.Guards, capture.PortRange{Proto: netport.UDP, Lo: 10000, Hi: 60000}) || !filterHas(f, seq[0]) {
		t.Errorf("filter guards %v, knocks %v", f.Guards, f.Knocks)
	}
}
