package knock

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/netport"
)

var t0 = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

func tcp(p uint16) Element { return Element{Proto: netport.TCP, Num: p} }
func udp(p uint16) Element { return Element{Proto: netport.UDP, Num: p} }

var (
	alice = netip.MustParseAddr("198.18.0.2")
	bob   = netip.MustParseAddr("198.18.0.3")
	eve   = netip.MustParseAddr("fd5e:5a3e::66")
	self  = netip.MustParseAddr("198.18.0.1")
)

func testDoors() []Door {
	return []Door{
		{Name: "ssh", Sequence: []Element{tcp(7000), udp(8000), tcp(9000)}, Flags: TCPFlags{Set: SYN, Clear: ACK}, Timeout: 5 * time.Second},
		{Name: "web", Sequence: []Element{tcp(7100), tcp(8100), tcp(9100)}, Timeout: 5 * time.Second,
			Sources: []netip.Prefix{netip.MustParsePrefix("198.18.0.0/24"), netip.MustParsePrefix("fd5e:5a3e::/64")}},
	}
}

// step is one packet: at (ms after t0) from src to element, with TCP flags (SYN by default).
type step struct {
	ms    int
	src   netip.Addr
	el    Element
	flags uint8
}

func run(m *Machine, steps []step) []string {
	var got []string
	for _, s := range steps {
		flags := s.flags
		if flags == 0 {
			flags = SYN
		}
		m.Observe(Knock{Time: t0.Add(time.Duration(s.ms) * time.Millisecond), Src: s.src, Dst: self, Element: s.el, TCPFlags: flags}, func(e Event) {
			if e.Kind == Opened {
				got = append(got, fmt.Sprintf("%s:%d", e.Src, e.Door))
			}
		})
	}
	return got
}

func TestMachineRules(t *testing.T) {
	a, b := alice, bob
	tests := []struct {
		name  string
		steps []step
		want  string
	}{
		{"correct sequence opens", []step{{0, a, tcp(7000), 0}, {10, a, udp(8000), 0}, {20, a, tcp(9000), 0}}, "198.18.0.2:0"},
		{"wrong order", []step{{0, a, tcp(7000), 0}, {10, a, tcp(9000), 0}, {20, a, udp(8000), 0}}, ""},
		{"reverse order", []step{{0, a, tcp(9000), 0}, {10, a, udp(8000), 0}, {20, a, tcp(7000), 0}}, ""},
		{"too slow", []step{{0, a, tcp(7000), 0}, {3000, a, udp(8000), 0}, {5001, a, tcp(9000), 0}}, ""},
		{"just in time", []step{{0, a, tcp(7000), 0}, {3000, a, udp(8000), 0}, {5000, a, tcp(9000), 0}}, "198.18.0.2:0"},
		{"duplicate first knock", []step{{0, a, tcp(7000), 0}, {1, a, tcp(7000), 0}, {10, a, udp(8000), 0}, {20, a, tcp(9000), 0}}, "198.18.0.2:0"},
		{"retransmitted SYN after stage 2", []step{{0, a, tcp(7000), 0}, {10, a, udp(8000), 0}, {1000, a, tcp(7000), 0}, {1010, a, tcp(9000), 0}}, "198.18.0.2:0"},
		{"duplicate middle knock", []step{{0, a, tcp(7000), 0}, {10, a, udp(8000), 0}, {11, a, udp(8000), 0}, {20, a, tcp(9000), 0}}, "198.18.0.2:0"},
		{"other door's port resets", []step{{0, a, tcp(7000), 0}, {5, a, tcp(9100), 0}, {10, a, udp(8000), 0}, {20, a, tcp(9000), 0}}, ""},
		{"restart after failure", []step{{0, a, tcp(7000), 0}, {5, a, tcp(9100), 0}, {6, a, tcp(7000), 0}, {10, a, udp(8000), 0}, {20, a, tcp(9000), 0}}, "198.18.0.2:0"},
		{"flags mismatch ignored", []step{{0, a, tcp(7000), 0}, {5, a, tcp(9000), FIN}, {10, a, udp(8000), 0}, {20, a, tcp(9000), SYN | ACK}, {30, a, tcp(9000), 0}}, "198.18.0.2:0"},
		{"ack-only knocks never start", []step{{0, a, tcp(7000), ACK}, {10, a, udp(8000), 0}, {20, a, tcp(9000), 0}}, ""},
		{"source not allowed", []step{{0, netip.MustParseAddr("203.0.113.9"), tcp(7100), 0}, {10, netip.MustParseAddr("203.0.113.9"), tcp(8100), 0}, {20, netip.MustParseAddr("203.0.113.9"), tcp(9100), 0}}, ""},
		{"allowed source, any flags door", []step{{0, a, tcp(7100), FIN}, {10, a, tcp(8100), 0}, {20, a, tcp(9100), 0}}, "198.18.0.2:1"},
		{"other source does not disturb", []step{{0, a, tcp(7000), 0}, {1, b, tcp(9000), 0}, {2, b, tcp(7000), 0}, {3, b, tcp(7000), 0}, {10, a, udp(8000), 0}, {11, b, tcp(9100), 0}, {20, a, tcp(9000), 0}}, "198.18.0.2:0"},
		{"guard port poisons", []step{{0, a, tcp(6999), 0}, {1, a, tcp(7000), 0}, {10, a, udp(8000), 0}, {20, a, tcp(9000), 0}}, ""},
		{"guard mid-sequence resets", []step{{0, a, tcp(7000), 0}, {1, a, tcp(7001), 0}, {10, a, udp(8000), 0}, {20, a, tcp(9000), 0}}, ""},
		{"guard lapses", []step{{0, a, tcp(6999), 0}, {5001, a, tcp(7000), 0}, {5010, a, udp(8000), 0}, {5020, a, tcp(9000), 0}}, "198.18.0.2:0"},
		// Door web takes any flags, so an ACK could walk it: an ACK on a guard port counts.
		{"guard counts ACK for an any-flags door", []step{{0, a, tcp(6999), ACK}, {1, a, tcp(7000), 0}, {10, a, udp(8000), 0}, {20, a, tcp(9000), 0}}, ""},
		{"guard on one source only", []step{{0, b, tcp(6999), 0}, {1, a, tcp(7000), 0}, {10, a, udp(8000), 0}, {20, a, tcp(9000), 0}}, "198.18.0.2:0"},
		{"ipv6 source", []step{{0, eve, tcp(7000), 0}, {10, eve, udp(8000), 0}, {20, eve, tcp(9000), 0}}, "fd5e:5a3e::66:0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := New(testDoors(), Options{MaxSources: 100, GuardWidth: 8, Exclude: []netport.Port{{Proto: netport.TCP, Num: 22}}})
			got := strings.Join(run(m, tc.steps), ",")
			if got != tc.want {
				t.Errorf("opened %q, want %q", got, tc.want)
			}
		})
	}
}

func TestMachineGaps(t *testing.T) {
	d := []Door{{Name: "g", Sequence: []Element{tcp(1000), tcp(2000), tcp(3000)}, Timeout: 10 * time.Second, MinGap: 100 * time.Millisecond, MaxGap: time.Second}}
	tests := []struct {
		name string
		ms   [3]int
		want int
	}{
		{"within gaps", [3]int{0, 200, 400}, 1},
		{"too fast", [3]int{0, 50, 400}, 0},
		{"too slow between", [3]int{0, 200, 1300}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := New(d, Options{MaxSources: 10})
			got := run(m, []step{{tc.ms[0], alice, tcp(1000), 0}, {tc.ms[1], alice, tcp(2000), 0}, {tc.ms[2], alice, tcp(3000), 0}})
			if len(got) != tc.want {
				t.Errorf("opened %d times, want %d", len(got), tc.want)
			}
		})
	}
}

func TestMachineInterleavedSources(t *testing.T) {
	m := New(testDoors(), Options{MaxSources: 2000, GuardWidth: 32})
	var srcs []netip.Addr
	for i := 0; i < 1000; i++ {
		srcs = append(srcs, netip.AddrFrom4([4]byte{198, 18, byte(1 + i/256), byte(i)}))
	}
	seq := testDoors()[0].Sequence
	opened := map[netip.Addr]bool{}
	for stage, el := range seq {
		for i, s := range srcs {
			m.Observe(Knock{Time: t0.Add(time.Duration(stage*1000+i) * time.Microsecond), Src: s, Element: el, TCPFlags: SYN}, func(e Event) {
				if e.Kind == Opened {
					opened[e.Src] = true
				}
			})
		}
	}
	if len(opened) != len(srcs) {
		t.Fatalf("%d of %d interleaved sources opened", len(opened), len(srcs))
	}
	if n := m.Stats().Sources; n != 0 {
		t.Errorf("%d sources still held after every sequence completed", n)
	}
}

func TestMachineBoundedMemory(t *testing.T) {
	m := New(testDoors(), Options{MaxSources: 1000})
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 200000; i++ {
		src := netip.AddrFrom4([4]byte{10, byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))})
		m.Observe(Knock{Time: t0.Add(time.Duration(i) * time.Microsecond), Src: src, Element: tcp(7000), TCPFlags: SYN}, func(Event) {})
		if n := m.Stats().Sources; n > 1000 {
			t.Fatalf("after %d knocks %d sources held, cap 1000", i, n)
		}
	}
	if m.Stats().Evicted == 0 {
		t.Error("no evictions counted")
	}
	// The legitimate knocker still gets in while the table is full.
	got := run(m, []step{{1000000, alice, tcp(7000), 0}, {1000010, alice, udp(8000), 0}, {1000020, alice, tcp(9000), 0}})
	if len(got) != 1 {
		t.Errorf("legitimate knock under a full table: opened %v", got)
	}
	m.Expire(t0.Add(time.Hour))
	if n := m.Stats().Sources; n != 0 {
		t.Errorf("after Expire: %d sources held, want 0", n)
	}
}

// TestMachineSweeps is the rule that makes blind sweeps fail: every sweep order over a range
// that contains the sequence hits a guard port first, and is then ignored.
func TestMachineSweeps(t *testing.T) {
	doors := []Door{
		{Name: "spread", Sequence: []Element{tcp(31337), tcp(1024), tcp(50000), tcp(8080)}, Flags: TCPFlags{Set: SYN}, Timeout: 10 * time.Second},
		{Name: "adjacent", Sequence: []Element{tcp(7000), tcp(7001), tcp(7002)}, Flags: TCPFlags{Set: SYN}, Timeout: 10 * time.Second},
	}
	ports := make([]uint16, 65535)
	for i := range ports {
		ports[i] = uint16(i + 1)
	}
	orders := map[string][]uint16{"ascending": ports, "descending": reversed(ports)}
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 20; i++ {
		p := append([]uint16(nil), ports...)
		r.Shuffle(len(p), func(a, b int) { p[a], p[b] = p[b], p[a] })
		orders[fmt.Sprintf("random-%d", i)] = p
	}
	for name, order := range orders {
		t.Run(name, func(t *testing.T) {
			m := New(doors, Options{MaxSources: 10, GuardWidth: 32})
			for pass := 0; pass < 3; pass++ {
				for i, p := range order {
					at := t0.Add(time.Duration(pass*len(order)+i) * 10 * time.Microsecond)
					m.Observe(Knock{Time: at, Src: alice, Element: tcp(p), TCPFlags: SYN}, func(e Event) {
						if e.Kind == Opened {
							t.Fatalf("sweep opened door %s at port %d", doors[e.Door].Name, p)
						}
					})
				}
			}
		})
	}
	// Without the guard, the same ascending sweep opens the adjacent door: the rule matters.
	m := New(doors, Options{MaxSources: 10})
	opened := false
	for i, p := range ports {
		m.Observe(Knock{Time: t0.Add(time.Duration(i) * time.Microsecond), Src: alice, Element: tcp(p), TCPFlags: SYN}, func(e Event) {
			opened = opened || e.Kind == Opened
		})
	}
	if !opened {
		t.Error("control: an ascending sweep without the guard should open the adjacent door")
	}
}

// TestMachineNonSYNSweeps: a sequential sweep with segments that are not SYNs (nmap -sF, -sN,
// -sA, -sX) must not walk a door that accepts such segments, such as a knockd door without
// TCPFlags; and a sweep with flags no door accepts is neither a knock nor a guard hit.
func TestMachineNonSYNSweeps(t *testing.T) {
	seq := []Element{tcp(7000), tcp(8000), tcp(9000)}
	anyFlags := []Door{{Name: "knockd", Sequence: seq, Timeout: 10 * time.Second}}
	finDoor := []Door{{Name: "fin", Sequence: seq, Flags: TCPFlags{Set: FIN}, Timeout: 10 * time.Second}}
	synDoor := []Door{{Name: "syn", Sequence: seq, Flags: TCPFlags{Set: SYN, Clear: ACK}, Timeout: 10 * time.Second}}
	mixed := append(append([]Door(nil), synDoor...),
		Door{Name: "udp-then-any", Sequence: []Element{udp(40000), tcp(40001)}, Timeout: 10 * time.Second})
	tests := []struct {
		name      string
		doors     []Door
		flags     uint8
		guard     int
		wantOpen  bool
		wantGuard bool
	}{
		{"FIN sweep, any-flags door", anyFlags, FIN, 32, false, true},
		{"NULL sweep, any-flags door", anyFlags, 0, 32, false, true},
		{"ACK sweep, any-flags door", anyFlags, ACK, 32, false, true},
		{"Xmas sweep, any-flags door", anyFlags, FIN | PSH | URG, 32, false, true},
		{"SYN sweep, any-flags door", anyFlags, SYN, 32, false, true},
		{"FIN sweep, fin door", finDoor, FIN | ACK, 32, false, true},
		// Another door anywhere that takes any flags makes FIN count near the syn door too.
		{"FIN sweep, syn door beside an any-flags door", mixed, FIN, 32, false, true},
		// No door takes a FIN: the sweep neither walks the door nor trips the guard.
		{"FIN sweep, syn door only", synDoor, FIN, 32, false, false},
		// Controls: without the guard the same sweeps open the doors.
		{"control: FIN sweep, any-flags door, no guard", anyFlags, FIN, 0, true, false},
		{"control: NULL sweep, any-flags door, no guard", anyFlags, 0, 0, true, false},
		{"control: FIN sweep, fin door, no guard", finDoor, FIN, 0, true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := New(tc.doors, Options{MaxSources: 10, GuardWidth: tc.guard})
			// The kernel filter hands the machine only sequence and guard ports.
			var seen bitmap
			for _, d := range tc.doors {
				for _, e := range d.Sequence {
					seen.set(e.Num)
				}
			}
			for _, r := range GuardRanges(tc.doors, tc.guard, nil) {
				for p := int(r.Lo); p <= int(r.Hi); p++ {
					seen.set(uint16(p))
				}
			}
			opened, guarded := false, false
			for i, p := 0, 6990; p <= 9010; i, p = i+1, p+1 {
				if !seen.has(uint16(p)) {
					continue
				}
				at := t0.Add(time.Duration(i) * 100 * time.Microsecond)
				m.Observe(Knock{Time: at, Src: alice, Dst: self, Element: tcp(uint16(p)), TCPFlags: tc.flags}, func(e Event) {
					opened = opened || e.Kind == Opened
					guarded = guarded || e.Kind == Guarded
				})
			}
			if opened != tc.wantOpen || guarded != tc.wantGuard {
				t.Errorf("sweep with flags %#x: opened %v, guarded %v; want %v, %v", tc.flags, opened, guarded, tc.wantOpen, tc.wantGuard)
			}
		})
	}
}

func TestGuardFlags(t *testing.T) {
	syn := TCPFlags{Set: SYN, Clear: ACK}
	tests := []struct {
		name  string
		doors []Door
		want  []TCPFlags
	}{
		{"none", nil, nil},
		{"udp only door", []Door{{Sequence: []Element{udp(1)}}}, nil},
		{"syn doors", []Door{{Sequence: []Element{tcp(1)}, Flags: syn}, {Sequence: []Element{tcp(2)}, Flags: syn}}, []TCPFlags{syn}},
		{"any and syn", []Door{{Sequence: []Element{udp(1), tcp(3)}}, {Sequence: []Element{tcp(2)}, Flags: syn}}, []TCPFlags{{}, syn}},
		{"udp door flags ignored", []Door{{Sequence: []Element{udp(1)}, Flags: TCPFlags{Set: FIN}}, {Sequence: []Element{tcp(2)}, Flags: syn}}, []TCPFlags{syn}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := GuardFlags(tc.doors); !slices.Equal(got, tc.want) {
				t.Errorf("GuardFlags = %v, want %v", got, tc.want)
			}
		})
	}
}

func reversed(p []uint16) []uint16 {
	out := make([]uint16, len(p))
	for i, v := range p {
		out[len(p)-1-i] = v
	}
	return out
}

func TestGuardRanges(t *testing.T) {
	got := GuardRanges([]Door{{Sequence: []Element{tcp(10), tcp(12), udp(65535)}}}, 3, []netport.Port{{Proto: netport.TCP, Num: 8}})
	want := []PortRange{{netport.TCP, 7, 7}, {netport.TCP, 9, 9}, {netport.TCP, 11, 11}, {netport.TCP, 13, 15}, {netport.UDP, 65532, 65534}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("GuardRanges = %v, want %v", got, want)
	}
}

func TestTCPFlags(t *testing.T) {
	tests := []struct {
		f     TCPFlags
		flags uint8
		want  bool
	}{
		{TCPFlags{}, 0, true},
		{TCPFlags{Set: SYN}, SYN | ACK, true},
		{TCPFlags{Set: SYN, Clear: ACK}, SYN | ACK, false},
		{TCPFlags{Set: SYN}, FIN, false},
	}
	for _, tc := range tests {
		if got := tc.f.Match(tc.flags); got != tc.want {
			t.Errorf("%q.Match(%#x) = %v, want %v", tc.f, tc.flags, got, tc.want)
		}
	}
	if s := (TCPFlags{Set: SYN, Clear: ACK}).String(); s != "syn,!ack" {
		t.Errorf("String = %q", s)
	}
}

func BenchmarkObserveNoise(b *testing.B) {
	m := New(testDoors(), Options{MaxSources: 65536, GuardWidth: 32})
	r := rand.New(rand.NewPCG(5, 6))
	els := []Element{tcp(7000), udp(8000), tcp(9000), tcp(7005)}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	// Warm up: fill the table, so that the loop measures the steady state of a flood.
	i := 0
	for ; m.Stats().Sources < 65536 && i < 10_000_000; i++ {
		src := netip.AddrFrom4([4]byte{10, byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))})
		m.Observe(Knock{Time: t0.Add(time.Duration(i) * time.Microsecond), Src: src, Element: els[i&3], TCPFlags: SYN}, func(Event) {})
	}
	b.ReportAllocs()
	for ; b.Loop(); i++ {
		src := netip.AddrFrom4([4]byte{10, byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))})
		m.Observe(Knock{Time: t0.Add(time.Duration(i) * time.Microsecond), Src: src, Element: els[i&3], TCPFlags: SYN}, func(Event) {})
	}
	b.StopTimer()
	runtime.GC()
	runtime.ReadMemStats(&after)
	if n := m.Stats().Sources; n > 0 {
		b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/float64(n), "heapB/source")
	}
	runtime.KeepAlive(m)
}

func TestMachineTarget(t *testing.T) {
	target := netip.MustParseAddr("198.18.0.77")
	doors := []Door{
		{Name: "host", Sequence: []Element{tcp(1000), tcp(2000)}, Timeout: time.Second},
		{Name: "wol", Sequence: []Element{tcp(1000), tcp(2000)}, Timeout: time.Second, Target: target},
	}
	for _, dst := range []netip.Addr{self, target} {
		m := New(doors, Options{MaxSources: 10})
		var opened []string
		for i, el := range []Element{tcp(1000), tcp(2000)} {
			m.Observe(Knock{Time: t0.Add(time.Duration(i) * time.Millisecond), Src: alice, Dst: dst, Element: el, TCPFlags: SYN}, func(e Event) {
				if e.Kind == Opened {
					opened = append(opened, doors[e.Door].Name)
				}
			})
		}
		want := "host"
		if dst == target {
			want = "wol"
		}
		if strings.Join(opened, ",") != want {
			t.Errorf("knock to %s opened %v, want %s", dst, opened, want)
		}
	}
}

// TestMachineMemoryMillionSources is a spoofed flood: a million distinct sources each send the
// first knock of a door, into a table capped at 65536 sources. The live heap must stay small,
// and a legitimate knocker must still get in afterwards.
func TestMachineMemoryMillionSources(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: a million sources")
	}
	const max = 65536
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	m := New(testDoors(), Options{MaxSources: max, GuardWidth: 32})
	seed := rand.Uint32()
	for i := uint32(0); i < 1_000_000; i++ {
		// i*odd + seed is a bijection on uint32: every source is distinct.
		v := i*0x9e3779b1 + seed
		src := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
		m.Observe(Knock{Time: t0.Add(time.Duration(i) * time.Microsecond), Src: src, Dst: self, Element: tcp(7000), TCPFlags: SYN}, func(Event) {})
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	st := m.Stats()
	t.Logf("HeapInuse %.1f MiB (%.1f MiB before the machine), HeapAlloc +%.1f MiB, %d sources held, %d evicted",
		mib(after.HeapInuse), mib(before.HeapInuse), mib(after.HeapAlloc-before.HeapAlloc), st.Sources, st.Evicted)
	if after.HeapInuse >= 24<<20 {
		t.Errorf("HeapInuse %.1f MiB after a million sources, want under 24 MiB", mib(after.HeapInuse))
	}
	if st.Sources != max {
		t.Errorf("%d sources held, want %d", st.Sources, max)
	}
	if want := uint64(1_000_000 - max); st.Evicted != want {
		t.Errorf("%d evicted, want %d", st.Evicted, want)
	}
	got := run(m, []step{{2000000, alice, tcp(7000), 0}, {2000010, alice, udp(8000), 0}, {2000020, alice, tcp(9000), 0}})
	if len(got) != 1 {
		t.Errorf("legitimate knock after the flood: opened %v", got)
	}
	runtime.KeepAlive(m)
}

func mib(n uint64) float64 { return float64(n) / (1 << 20) }

// TestMachineMatchesReference drives the machine and refMachine (the straightforward
// map-and-pointers implementation it replaced) with the same random traffic, and requires the
// same events, stats and progress throughout: eviction, the free list, slab growth, the guard,
// gaps, targets and Expire included.
func TestMachineMatchesReference(t *testing.T) {
	target := netip.MustParseAddr("198.18.0.77")
	doors := append(testDoors(),
		Door{Name: "gaps", Sequence: []Element{tcp(1000), udp(1000), tcp(1001)}, Timeout: 3 * time.Second, MinGap: 50 * time.Millisecond, MaxGap: 800 * time.Millisecond},
		Door{Name: "wol", Sequence: []Element{tcp(7000), tcp(2000)}, Timeout: time.Second, Target: target},
		Door{Name: "one", Sequence: []Element{udp(4444)}, Timeout: time.Second},
	)
	var ports []Element
	for _, d := range doors {
		for _, e := range d.Sequence {
			ports = append(ports, e, Element{Proto: e.Proto, Num: e.Num + 3}, Element{Proto: e.Proto, Num: e.Num - 40})
		}
	}
	for _, tc := range []struct {
		name       string
		maxSources int
		pool       int
		tick       time.Duration // time scale of the traffic
		steps      int
	}{{"tiny", 1, 4, time.Millisecond, 100_000}, {"small", 5, 12, time.Millisecond, 200_000}, {"growing", 700, 3000, 10 * time.Microsecond, 200_000}} {
		t.Run(tc.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(7, uint64(tc.maxSources)))
			var pool []netip.Addr
			for i := range tc.pool {
				pool = append(pool, netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}))
			}
			pool = append(pool, netip.AddrFrom16(pool[0].As16()), eve, eve.WithZone("eth0"), netip.MustParseAddr("203.0.113.9"))
			opts := Options{MaxSources: tc.maxSources, GuardWidth: 8}
			m, ref := New(doors, opts), newRefMachine(doors, opts)
			at := t0
			for step := 0; step < tc.steps; step++ {
				switch r.IntN(10) {
				case 0:
					at = at.Add(time.Duration(r.IntN(2000)) * tc.tick)
				case 1:
					at = at.Add(-time.Duration(r.IntN(5)) * tc.tick)
				default:
					at = at.Add(time.Duration(r.IntN(100)) * tc.tick)
				}
				if r.IntN(500) == 0 {
					now := at.Add(time.Duration(r.IntN(8000)) * tc.tick)
					m.Expire(now)
					ref.Expire(now)
				} else {
					k := Knock{Time: at, Src: pool[r.IntN(len(pool))], Dst: self, Element: ports[r.IntN(len(ports))], TCPFlags: []uint8{SYN, SYN, SYN | ACK, ACK, FIN}[r.IntN(5)]}
					if r.IntN(8) == 0 {
						k.Dst = target
					}
					var got, want []Event
					m.Observe(k, func(e Event) { got = append(got, e) })
					ref.Observe(k, func(e Event) { want = append(want, e) })
					if fmt.Sprint(got) != fmt.Sprint(want) {
						t.Fatalf("step %d, knock %+v: events %v, want %v", step, k, got, want)
					}
				}
				if got, want := m.Stats(), ref.Stats(); got != want {
					t.Fatalf("step %d: stats %+v, want %+v", step, got, want)
				}
				if step%(97*len(pool)/8+1) == 0 {
					for _, a := range pool {
						if got, want := m.Progress(a), ref.Progress(a); fmt.Sprint(got) != fmt.Sprint(want) {
							t.Fatalf("step %d: progress of %s %v, want %v", step, a, got, want)
						}
					}
				}
			}
			if m.Stats().Evicted == 0 {
				t.Error("no evictions exercised")
			}
			if len(m.srcs) != tc.maxSources || cap(m.srcs) != tc.maxSources {
				t.Errorf("%d records (cap %d), want MaxSources %d", len(m.srcs), cap(m.srcs), tc.maxSources)
			}
		})
	}
}

// refMachine is the former implementation of Machine: a map of heap-allocated sources in a
// pointer-linked LRU list, with time.Time fields. It borrows the guard and targets of a Machine.
type refMachine struct {
	*Machine
	sources    map[netip.Addr]*refSource
	head, tail *refSource
	evicted    uint64
}

type refAttempt struct {
	stage       int
	first, last time.Time
}

type refSource struct {
	addr         netip.Addr
	attempts     []refAttempt
	guardedUntil time.Time
	lastSeen     time.Time
	prev, next   *refSource
}

func newRefMachine(doors []Door, opts Options) *refMachine {
	return &refMachine{Machine: New(doors, opts), sources: map[netip.Addr]*refSource{}}
}

func (m *refMachine) Observe(k Knock, emit func(Event)) {
	src := k.Src.Unmap()
	s := m.sources[src]
	if s != nil && k.Time.Before(s.guardedUntil) {
		if m.isGuard(k) {
			s.guardedUntil = k.Time.Add(m.guardFor)
		}
		m.touch(s, k.Time)
		emit(Event{Kind: Ignored, Door: -1, Src: src})
		return
	}
	if m.isGuard(k) {
		if s == nil {
			s = m.add(src, k.Time)
		}
		clear(s.attempts)
		s.guardedUntil = k.Time.Add(m.guardFor)
		m.touch(s, k.Time)
		emit(Event{Kind: Guarded, Door: -1, Src: src})
		return
	}
	for i := range m.doors {
		d := &m.doors[i]
		if d.Target.IsValid() && d.Target != k.Dst.Unmap() || !d.Target.IsValid() && slices.Contains(m.targets, k.Dst.Unmap()) {
			continue
		}
		if k.Element.Proto == netport.TCP && !d.Flags.Match(k.TCPFlags) {
			continue
		}
		var a *refAttempt
		if s != nil {
			a = &s.attempts[i]
		}
		if a != nil && a.stage > 0 {
			if k.Time.Sub(a.first) > d.Timeout || d.MaxGap > 0 && k.Time.Sub(a.last) > d.MaxGap {
				*a = refAttempt{}
				emit(Event{Kind: Timeout, Door: i, Src: src})
			}
		}
		if a == nil || a.stage == 0 {
			if k.Element != d.Sequence[0] {
				continue
			}
			if !d.AllowsSource(src) {
				emit(Event{Kind: NotAllowed, Door: i, Src: src})
				continue
			}
			if len(d.Sequence) == 1 {
				emit(Event{Kind: Opened, Door: i, Stage: 1, Src: src})
				continue
			}
			if s == nil {
				s = m.add(src, k.Time)
				a = &s.attempts[i]
			}
			*a = refAttempt{stage: 1, first: k.Time, last: k.Time}
			emit(Event{Kind: Stage, Door: i, Stage: 1, Src: src})
			continue
		}
		switch {
		case k.Element == d.Sequence[a.stage]:
			if d.MinGap > 0 && k.Time.Sub(a.last) < d.MinGap {
				*a = refAttempt{}
				emit(Event{Kind: TooFast, Door: i, Src: src})
				continue
			}
			a.stage++
			a.last = k.Time
			if a.stage == len(d.Sequence) {
				*a = refAttempt{}
				emit(Event{Kind: Opened, Door: i, Stage: len(d.Sequence), Src: src})
				continue
			}
			emit(Event{Kind: Stage, Door: i, Stage: a.stage, Src: src})
		case slices.Contains(d.Sequence[:a.stage], k.Element):
		default:
			*a = refAttempt{}
			emit(Event{Kind: Failed, Door: i, Src: src})
		}
	}
	if s != nil {
		m.touch(s, k.Time)
		if s.idle() {
			m.remove(s)
		}
	}
}

func (s *refSource) idle() bool {
	if !s.guardedUntil.IsZero() && s.lastSeen.Before(s.guardedUntil) {
		return false
	}
	for _, a := range s.attempts {
		if a.stage > 0 {
			return false
		}
	}
	return true
}

func (m *refMachine) Expire(now time.Time) {
	for s := m.tail; s != nil; {
		prev := s.prev
		if now.Sub(s.lastSeen) <= m.guardFor && !s.expired(now, m.doors) {
			return
		}
		if s.expired(now, m.doors) {
			m.remove(s)
		}
		s = prev
	}
}

func (s *refSource) expired(now time.Time, doors []Door) bool {
	if now.Before(s.guardedUntil) {
		return false
	}
	for i, a := range s.attempts {
		if a.stage == 0 {
			continue
		}
		d := &doors[i]
		if now.Sub(a.first) <= d.Timeout && (d.MaxGap == 0 || now.Sub(a.last) <= d.MaxGap) {
			return false
		}
	}
	return true
}

func (m *refMachine) Stats() Stats { return Stats{Sources: len(m.sources), Evicted: m.evicted} }

func (m *refMachine) Progress(src netip.Addr) []int {
	out := make([]int, len(m.doors))
	if s := m.sources[src.Unmap()]; s != nil {
		for i, a := range s.attempts {
			out[i] = a.stage
		}
	}
	return out
}

func (m *refMachine) add(addr netip.Addr, now time.Time) *refSource {
	if len(m.sources) >= m.opts.MaxSources && m.tail != nil {
		m.remove(m.tail)
		m.evicted++
	}
	s := &refSource{addr: addr, attempts: make([]refAttempt, len(m.doors)), lastSeen: now}
	m.sources[addr] = s
	m.pushFront(s)
	return s
}

func (m *refMachine) touch(s *refSource, now time.Time) {
	if now.After(s.lastSeen) {
		s.lastSeen = now
	}
	if m.head == s {
		return
	}
	m.unlink(s)
	m.pushFront(s)
}

func (m *refMachine) remove(s *refSource) {
	m.unlink(s)
	delete(m.sources, s.addr)
}

func (m *refMachine) pushFront(s *refSource) {
	s.prev, s.next = nil, m.head
	if m.head != nil {
		m.head.prev = s
	}
	m.head = s
	if m.tail == nil {
		m.tail = s
	}
}

func (m *refMachine) unlink(s *refSource) {
	if s.prev != nil {
		s.prev.next = s.next
	} else if m.head == s {
		m.head = s.next
	}
	if s.next != nil {
		s.next.prev = s.prev
	} else if m.tail == s {
		m.tail = s.prev
	}
	s.prev, s.next = nil, nil
}

func TestForgetLiftsGuard(t *testing.T) {
	d := Door{Name: "d", Sequence: []Element{{Proto: netport.TCP, Num: 7000}, {Proto: netport.TCP, Num: 8000}}, Timeout: 10 * time.Second}
	m := New([]Door{d}, Options{MaxSources: 16, GuardWidth: 4})
	src := netip.MustParseAddr("198.18.0.2")
	t0 := time.Unix(1000, 0)
	var got []EventKind
	emit := func(e Event) { got = append(got, e.Kind) }
	m.Observe(Knock{Time: t0, Src: src, Element: Element{Proto: netport.TCP, Num: 7001}}, emit)
	for _, forget := range []bool{false, true} {
		got = nil
		if forget {
			m.Forget(src)
		}
		m.Observe(Knock{Time: t0.Add(time.Second), Src: src, Element: d.Sequence[0]}, emit)
		m.Observe(Knock{Time: t0.Add(2 * time.Second), Src: src, Element: d.Sequence[1]}, emit)
		opened := slices.Contains(got, Opened)
		if opened != forget {
			t.Fatalf("forget=%v: events %v, opened %v", forget, got, opened)
		}
	}
}
