package server

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/capture"
	"github.com/sesame-knock/sesame/internal/command"
	"github.com/sesame-knock/sesame/internal/config"
	"github.com/sesame-knock/sesame/internal/firewall/none"
	"github.com/sesame-knock/sesame/internal/knock"
	"github.com/sesame-knock/sesame/internal/netport"
)

// chanIntake hands the packets sent on in to the server, one at a time.
type chanIntake struct{ in chan *capture.Packet }

func (c chanIntake) SetFilter(capture.Filter) error { return nil }
func (c chanIntake) Stats() capture.Stats           { return capture.Stats{} }

func (c chanIntake) Run(ctx context.Context, handle func(*capture.Packet)) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case p := <-c.in:
			handle(p)
		}
	}
}

// manualClock is a command.Clock that moves only when Advance is called.
type manualClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*manualTimer
}

type manualTimer struct {
	c    *manualClock
	due  time.Time
	f    func()
	done bool
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) AfterFunc(d time.Duration, f func()) command.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &manualTimer{c: c, due: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return t
}

func (t *manualTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := !t.done
	t.done = true
	return was
}

func (c *manualClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []*manualTimer
	for _, t := range c.timers {
		if !t.done && !t.due.After(c.now) {
			t.done = true
			due = append(due, t)
		}
	}
	c.mu.Unlock()
	for _, t := range due {
		t.f()
	}
}

func cmdConfig(out, tag string, delay time.Duration) *config.Config {
	return &config.Config{Doors: []config.Door{{
		Door:         knock.Door{Name: "cmd", Sequence: []knock.Element{udp(7000), udp(8000)}, Timeout: 5 * time.Second},
		StartCommand: "echo start-" + tag + " %IP% >> " + out, StopCommand: "echo stop-" + tag + " %IP% >> " + out,
		StartCommand6: "true", CmdTimeout: delay,
	}}}
}

// TestReloadKeepsPendingStops: a stop scheduled before a SIGHUP reload runs once, on time, with
// the old configuration's command; one still pending when the server stops runs at the end.
func TestReloadKeepsPendingStops(t *testing.T) {
	out := filepath.Join(t.TempDir(), "events")
	clock := &manualClock{now: time.Unix(1e9, 0)}
	runner := command.New(command.Options{Clock: clock})
	in := make(chan *capture.Packet)
	srv, err := New(cmdConfig(out, "old", time.Minute), Deps{Firewall: none.New(), Intake: chanIntake{in}, Commands: runner})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ran := make(chan error, 1)
	go func() { ran <- srv.Run(ctx) }()
	knockFrom := func(src string) {
		for _, port := range []uint16{7000, 8000} {
			in <- &capture.Packet{Time: time.Now(), Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr("198.18.0.1"), Proto: netport.UDP, SrcPort: 40000, DstPort: port}
		}
	}
	waitLines := func(want ...string) {
		t.Helper()
		var got []string
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			data, _ := os.ReadFile(out)
			got = strings.Split(strings.TrimSpace(string(data)), "\n")
			if slices.Equal(got, want) && srv.CommandStats().Total.Running == 0 {
				return
			}
		}
		t.Fatalf("command lines %q, want %q", got, want)
	}

	knockFrom("198.18.0.2")
	waitLines("start-old 198.18.0.2")
	if err := srv.Reload(ctx, cmdConfig(out, "new", time.Hour)); err != nil {
		t.Fatal(err)
	}
	knockFrom("198.18.0.3")
	waitLines("start-old 198.18.0.2", "start-new 198.18.0.3")
	clock.Advance(59 * time.Second)
	time.Sleep(50 * time.Millisecond)
	waitLines("start-old 198.18.0.2", "start-new 198.18.0.3") // not early
	clock.Advance(time.Second)
	waitLines("start-old 198.18.0.2", "start-new 198.18.0.3", "stop-old 198.18.0.2")
	cancel()
	if err := <-ran; err != nil {
		t.Fatal(err)
	}
	// The new door's stop was an hour away: it ran at the end; the old one did not run twice.
	waitLines("start-old 198.18.0.2", "start-new 198.18.0.3", "stop-old 198.18.0.2", "stop-new 198.18.0.3")
	if s := srv.CommandStats().Total; s.Run != 4 || s.PendingStops != 0 {
		t.Errorf("stats %+v", s)
	}
}
