package knock

import (
	"slices"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/netport"
)

// TestSetSequence: a door with an empty sequence is disabled; SetSequence arms it and forgets
// progress on that door only, so a knock in progress on another door carries on.
func TestSetSequence(t *testing.T) {
	doors := append(testDoors(), Door{Name: "rot", Flags: TCPFlags{Set: SYN, Clear: ACK}, Timeout: 5 * time.Second})
	m := New(doors, Options{MaxSources: 16})
	if got := run(m, []step{{0, alice, tcp(20001), 0}, {1, alice, tcp(20002), 0}}); len(got) != 0 {
		t.Fatalf("a disabled door opened: %v", got)
	}
	m.SetSequence(2, []Element{tcp(20001), tcp(20002), tcp(20003)})
	got := run(m, []step{
		{10, alice, tcp(20001), 0}, {11, alice, tcp(20002), 0}, // alice is halfway on rot
		{12, bob, tcp(7000), 0}, {13, bob, udp(8000), 0}, // bob is halfway on ssh
	})
	if len(got) != 0 {
		t.Fatalf("opened early: %v", got)
	}
	if p := m.Progress(alice); p[2] != 2 {
		t.Fatalf("alice's progress %v", p)
	}
	// Re-arming rot forgets alice's progress on it, not bob's on ssh.
	m.SetSequence(2, []Element{tcp(20011), tcp(20012)})
	if p := m.Progress(alice); p[2] != 0 {
		t.Fatalf("alice's progress on the re-armed door %v, want 0", p)
	}
	got = run(m, []step{{20, bob, tcp(9000), 0}, {21, alice, tcp(20003), 0}, {22, eve, tcp(20011), 0}, {23, eve, tcp(20012), 0}})
	if want := []string{bob.String() + ":0", eve.String() + ":2"}; !slices.Equal(got, want) {
		t.Fatalf("opened %v, want %v", got, want)
	}
	m.SetSequence(2, nil)
	if got := run(m, []step{{30, alice, tcp(20011), 0}, {31, alice, tcp(20012), 0}}); len(got) != 0 {
		t.Fatalf("a disabled door opened: %v", got)
	}
}

// TestGuardRange: every port of the range but the kept ones is a guard port, for TCP segments
// whose flags match; re-guarding with other kept ports moves the holes.
func TestGuardRange(t *testing.T) {
	doors := []Door{{Name: "rot", Flags: TCPFlags{Set: SYN, Clear: ACK}, Timeout: 5 * time.Second}}
	m := New(doors, Options{MaxSources: 16})
	r := PortRange{Proto: netport.TCP, Lo: 20000, Hi: 20999}
	m.SetSequence(0, []Element{tcp(20500), tcp(20100)})
	m.GuardRange(r, doors[0].Flags, []Element{tcp(20500), tcp(20100)})
	kinds := func(steps ...step) []EventKind {
		var out []EventKind
		for _, s := range steps {
			m.Observe(Knock{Time: t0.Add(time.Duration(s.ms) * time.Millisecond), Src: s.src, Dst: self, Element: s.el, TCPFlags: s.flags}, func(e Event) { out = append(out, e.Kind) })
		}
		return out
	}
	if got := kinds(step{0, alice, tcp(20500), SYN}, step{1, alice, tcp(20100), SYN}); !slices.Equal(got, []EventKind{Stage, Opened}) {
		t.Fatalf("kept ports: %v", got)
	}
	if got := kinds(step{2, bob, tcp(20501), SYN}); !slices.Equal(got, []EventKind{Guarded}) {
		t.Fatalf("a range port: %v", got)
	}
	if got := kinds(step{3, eve, tcp(20501), SYN | ACK}, step{4, eve, tcp(21000), SYN}, step{5, eve, udp(20501), 0}); len(got) != 0 {
		t.Fatalf("an ACK, a port past the range, a UDP datagram: %v", got)
	}
	m.SetSequence(0, []Element{tcp(20501), tcp(20101)})
	m.GuardRange(r, doors[0].Flags, []Element{tcp(20501), tcp(20101)})
	carol := self.Next()
	if got := kinds(step{6, carol, tcp(20500), SYN}); !slices.Equal(got, []EventKind{Guarded}) {
		t.Fatalf("a port no longer kept: %v", got)
	}
}
