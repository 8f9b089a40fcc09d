package knock

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
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
		{"guard ignores ACK", []step{{0, a, tcp(6999), ACK}, {1, a, tcp(7000), 0}, {10, a, udp(8000), 0}, {20, a, tcp(9000), 0}}, "198.18.0.2:0"},
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
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		src := netip.AddrFrom4([4]byte{10, byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))})
		m.Observe(Knock{Time: t0.Add(time.Duration(i) * time.Microsecond), Src: src, Element: els[i&3], TCPFlags: SYN}, func(Event) {})
	}
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
