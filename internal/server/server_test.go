package server

import (
	"fmt"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/capture"
	"github.com/sesame-knock/sesame/internal/config"
	"github.com/sesame-knock/sesame/internal/knock"
	"github.com/sesame-knock/sesame/internal/netport"
)

func tcp(p uint16) netport.Port { return netport.Port{Proto: netport.TCP, Num: p} }
func udp(p uint16) netport.Port { return netport.Port{Proto: netport.UDP, Num: p} }

func testConfig(sniff bool) *config.Config {
	return &config.Config{
		Server: config.Server{SweepGuard: 2},
		Doors: []config.Door{{
			Door: knock.Door{Name: "ssh", Sequence: []knock.Element{tcp(7000), udp(8000), tcp(23)},
				Flags: knock.TCPFlags{Set: knock.SYN, Clear: knock.ACK}, Timeout: 5 * time.Second},
			Open: []netport.Port{tcp(22)}, OpenFor: 30 * time.Second,
		}},
		SPA: &config.SPA{Port: 62201, Sniff: sniff, Clients: []config.SPAClient{{Name: "a", Open: []netport.Port{tcp(22), tcp(443)}}}},
	}
}

func TestGate(t *testing.T) {
	tests := []struct {
		sniff bool
		want  string
	}{
		{false, "[tcp/22 tcp/443]"},
		{true, "[tcp/22 udp/62201 tcp/443]"},
	}
	for _, tc := range tests {
		if got := fmt.Sprint(Gate(testConfig(tc.sniff)).Protected); got != tc.want {
			t.Errorf("sniff=%v: protected %s, want %s", tc.sniff, got, tc.want)
		}
	}
}

func TestFilter(t *testing.T) {
	f := Filter(testConfig(true))
	want := []capture.Knock{
		{Port: tcp(7000), Flags: knock.TCPFlags{Set: knock.SYN, Clear: knock.ACK}},
		{Port: udp(8000)},
		{Port: tcp(23), Flags: knock.TCPFlags{Set: knock.SYN, Clear: knock.ACK}},
	}
	if fmt.Sprint(f.Knocks) != fmt.Sprint(want) {
		t.Errorf("knocks %v, want %v", f.Knocks, want)
	}
	// Guard bands of width 2 around 7000, 8000/udp and 23, never covering the opened tcp/22.
	wantGuards := "[{tcp 21 21} {tcp 24 25} {tcp 6998 6999} {tcp 7001 7002} {udp 7998 7999} {udp 8001 8002}]"
	if got := fmt.Sprint(f.Guards); got != wantGuards {
		t.Errorf("guards %s, want %s", got, wantGuards)
	}
	if fmt.Sprint(f.SPA) != "[62201]" {
		t.Errorf("spa ports %v", f.SPA)
	}
	if _, err := capture.Compile(f); err != nil {
		t.Errorf("the filter does not compile: %v", err)
	}
	if f := Filter(testConfig(false)); len(f.SPA) != 0 {
		t.Errorf("UDP socket mode: the capture should not take SPA packets, got %v", f.SPA)
	}
}

// TestFilterGuardsNonSYN: for a knockd door without TCPFlags, the capture filter asks for guard
// segments with any flags (FIN, NULL, ACK), not only SYNs.
func TestFilterGuardsNonSYN(t *testing.T) {
	cfg := &config.Config{
		Server: config.Server{SweepGuard: 4},
		Doors: []config.Door{{
			Door: knock.Door{Name: "knockd", Sequence: []knock.Element{tcp(7000), tcp(8000), tcp(9000)}, Timeout: 5 * time.Second},
			Open: []netport.Port{tcp(22)}, OpenFor: 30 * time.Second,
		}},
	}
	f := Filter(cfg)
	if len(f.GuardFlags) != 1 || f.GuardFlags[0] != (knock.TCPFlags{}) {
		t.Fatalf("guard flags %v, want the door's (any flags)", f.GuardFlags)
	}
	// capture's TestCompileGuardFlags shows the program then passes FIN, NULL and ACK.
	if _, err := capture.Compile(f); err != nil {
		t.Fatal(err)
	}
}
