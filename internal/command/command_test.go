package command

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestExpand(t *testing.T) {
	tests := []struct{ tmpl, addr, want string }{
		{"iptables -A INPUT -s %IP% -j ACCEPT", "198.18.0.2", "iptables -A INPUT -s 198.18.0.2 -j ACCEPT"},
		{"%IP% %IP%", "fe80::1%eth0", "fe80::1 fe80::1"},
		{"x %IP%", "::ffff:198.18.0.2", "x 198.18.0.2"},
		{"no token", "198.18.0.2", "no token"},
	}
	for _, tc := range tests {
		if got := Expand(tc.tmpl, netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("Expand(%q, %s) = %q, want %q", tc.tmpl, tc.addr, got, tc.want)
		}
	}
}

// fakeClock is a Clock that moves only when Advance is called.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c     *fakeClock
	due   time.Time
	f     func()
	state int // 0 waiting, 1 fired, 2 stopped
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1e9, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, due: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return t
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	if t.state != 0 {
		return false
	}
	t.state = 2
	return true
}

// Advance moves the clock by d and runs the timers that became due, in order.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []*fakeTimer
	keep := c.timers[:0]
	for _, t := range c.timers {
		switch {
		case t.state == 0 && !t.due.After(c.now):
			t.state = 1
			due = append(due, t)
		case t.state == 0:
			keep = append(keep, t)
		}
	}
	c.timers = keep
	c.mu.Unlock()
	slices.SortStableFunc(due, func(a, b *fakeTimer) int { return a.due.Compare(b.due) })
	for _, t := range due {
		t.f()
	}
}

// bed is a runner whose commands append lines to a file.
type bed struct {
	t     *testing.T
	dir   string
	out   string
	r     *Runner
	clock *fakeClock
	log   *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newBed(t *testing.T, opts Options) *bed {
	t.Helper()
	b := &bed{t: t, dir: t.TempDir(), clock: newFakeClock(), log: &syncBuffer{}}
	b.out = filepath.Join(b.dir, "events")
	opts.Log = slog.New(slog.NewTextHandler(b.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if opts.Clock == nil {
		opts.Clock = b.clock
	}
	b.r = New(opts)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		b.r.Close(ctx)
	})
	return b
}

// job is a job of door whose commands append "start <ip>" and "stop <ip>" lines; a negative
// delay means no stop command.
func (b *bed) job(door string, i int, delay time.Duration) Job {
	j := Job{Door: door, Addr: addr(i), Start: "echo start %IP% >> " + b.out, Stop: "echo stop %IP% >> " + b.out, Delay: delay}
	if delay < 0 {
		j.Stop, j.Delay = "", 0
	}
	return j
}

func addr(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}) }

func (b *bed) run(j Job) {
	b.t.Helper()
	if err := b.r.Run(context.Background(), j); err != nil {
		b.t.Fatalf("Run(%v): %v", j, err)
	}
}

func (b *bed) lines() []string {
	data, err := os.ReadFile(b.out)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		b.t.Fatal(err)
	}
	return strings.Fields(strings.ReplaceAll(strings.TrimSpace(string(data)), " ", "_"))
}

// waitStats waits up to 30 s for cond to hold on the runner's totals.
func (b *bed) waitStats(what string, cond func(DoorStats) bool) {
	b.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond(b.r.Stats().Total) {
		if time.Now().After(deadline) {
			b.t.Fatalf("timed out waiting for %s; stats %+v", what, b.r.Stats().Total)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// gate returns a command that waits (at most ~20 s) until open is called.
func (b *bed) gate(name string) (cmd string, open func()) {
	path := filepath.Join(b.dir, "gate-"+name)
	cmd = fmt.Sprintf("i=0; while [ ! -e %s ] && [ $i -lt 2000 ]; do sleep 0.01; i=$((i+1)); done", path)
	return cmd, func() {
		if err := os.WriteFile(path, nil, 0o600); err != nil {
			b.t.Fatal(err)
		}
	}
}

// TestRunnerThousandJobs: 1000 doors opened at once with 64 workers; every start runs, then
// every stop, each after its own start.
func TestRunnerThousandJobs(t *testing.T) {
	const n = 1000
	b := newBed(t, Options{})
	for i := range n {
		b.run(b.job("d", i, time.Hour))
	}
	b.waitStats("1000 starts", func(s DoorStats) bool { return s.Run == n && s.PendingStops == n })
	if got := b.lines(); len(got) != n {
		t.Fatalf("%d lines after the starts, want %d", len(got), n)
	}
	b.clock.Advance(time.Hour)
	b.waitStats("1000 stops", func(s DoorStats) bool { return s.Run == 2*n })
	lines := b.lines()
	seen := map[string]int{}
	for i, l := range lines {
		seen[l]++
		if ip, ok := strings.CutPrefix(l, "stop_"); ok && !slices.Contains(lines[:i], "start_"+ip) {
			t.Errorf("stop for %s before its start", ip)
		}
	}
	for i := range n {
		for _, what := range []string{"start_", "stop_"} {
			if k := seen[what+addr(i).String()]; k != 1 {
				t.Errorf("%s%s ran %d times, want 1", what, addr(i), k)
			}
		}
	}
	if s := b.r.Stats(); s.Total.Failed != 0 || s.Total.Overflowed != 0 || s.Doors["d"].Run != 2*n {
		t.Errorf("stats %+v", s)
	}
}

// TestRunnerOrder: with one worker, starts run in arrival order, and a stop that is due runs
// before the starts still waiting.
func TestRunnerOrder(t *testing.T) {
	tests := []struct {
		name  string
		delay []time.Duration // per job; jobs without delay have no stop when negative
		want  []string
	}{
		{"fifo", []time.Duration{-1, -1, -1, -1, -1}, []string{"start_0", "start_1", "start_2", "start_3", "start_4"}},
		{"stop before waiting starts", []time.Duration{0, -1, -1}, []string{"start_0", "stop_0", "start_1", "start_2"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newBed(t, Options{Workers: 1})
			gate, open := b.gate("g")
			b.run(Job{Door: "d", Addr: addr(9), Start: gate})
			b.waitStats("the gate to run", func(s DoorStats) bool { return s.Running == 1 })
			for i, d := range tc.delay {
				j := Job{Door: "d", Addr: netip.AddrFrom4([4]byte{0, 0, 0, byte(i)}), Start: "echo start_" + fmt.Sprint(i) + " >> " + b.out}
				if d >= 0 {
					j.Stop, j.Delay = "echo stop_"+fmt.Sprint(i)+" >> "+b.out, d
				}
				b.run(j)
			}
			open()
			b.waitStats("all commands", func(s DoorStats) bool { return s.Run == uint64(1+len(tc.want)) })
			if got := b.lines(); !slices.Equal(got, tc.want) {
				t.Errorf("order %v, want %v", got, tc.want)
			}
		})
	}
}

// TestRunnerOverflow: past Queue waiting starts, jobs are refused, counted per door and logged
// with door and source; the queued ones still run.
func TestRunnerOverflow(t *testing.T) {
	b := newBed(t, Options{Workers: 1, Queue: 3})
	gate, open := b.gate("g")
	b.run(Job{Door: "a", Addr: addr(100), Start: gate})
	b.waitStats("the gate to run", func(s DoorStats) bool { return s.Running == 1 })
	tests := []struct {
		door string
		i    int
		want error
	}{
		{"a", 1, nil}, {"a", 2, nil}, {"b", 3, nil},
		{"a", 4, ErrQueueFull}, {"b", 5, ErrQueueFull}, {"b", 6, ErrQueueFull},
	}
	for _, tc := range tests {
		if err := b.r.Run(context.Background(), b.job(tc.door, tc.i, -1)); !errors.Is(err, tc.want) {
			t.Errorf("job %d: err %v, want %v", tc.i, err, tc.want)
		}
	}
	s := b.r.Stats()
	if s.Doors["a"].Overflowed != 1 || s.Doors["b"].Overflowed != 2 || s.Total.Overflowed != 3 || s.Total.Queued != 3 {
		t.Errorf("stats %+v", s)
	}
	if l := b.log.String(); !strings.Contains(l, "too many commands waiting") || !strings.Contains(l, "src=198.18.0.5 door=b") {
		t.Errorf("log lacks the overflow line with door and source:\n%s", l)
	}
	// A flood of refusals is logged at most burst (10) times while the clock stands still.
	for i := range 50 {
		b.r.Run(context.Background(), b.job("b", 1000+i, -1))
	}
	if got := strings.Count(b.log.String(), "too many commands waiting"); got != 10 {
		t.Errorf("%d overflow lines logged, want 10 (rate-limited)", got)
	}
	if got := b.r.Stats().Doors["b"].Overflowed; got != 52 {
		t.Errorf("door b overflowed %d, want 52", got)
	}
	open()
	b.waitStats("the queued jobs", func(s DoorStats) bool { return s.Run == 4 })
	if got, want := b.lines(), []string{"start_198.18.0.1", "start_198.18.0.2", "start_198.18.0.3"}; !slices.Equal(got, want) {
		t.Errorf("ran %v, want %v", got, want)
	}
}

// TestRunnerPendingStops: stops run when due, in due order whatever the order they were
// scheduled in, and past MaxPending the one due soonest runs early instead of being dropped.
func TestRunnerPendingStops(t *testing.T) {
	tests := []struct {
		name       string
		maxPending int
		delays     []time.Duration
		advance    time.Duration
		want       []string // lines after the advance
		early      uint64
	}{
		{"due order", 0, []time.Duration{2 * time.Hour, time.Hour}, time.Hour,
			[]string{"start_198.18.0.0", "start_198.18.0.1", "stop_198.18.0.1"}, 0},
		{"all due", 0, []time.Duration{2 * time.Hour, time.Hour}, 2 * time.Hour,
			[]string{"start_198.18.0.0", "start_198.18.0.1", "stop_198.18.0.1", "stop_198.18.0.0"}, 0},
		{"bound reached: soonest runs early", 2, []time.Duration{3 * time.Hour, time.Hour, 2 * time.Hour}, 0,
			[]string{"start_198.18.0.0", "start_198.18.0.1", "start_198.18.0.2", "stop_198.18.0.1"}, 1},
		{"bound reached, then the rest on time", 2, []time.Duration{3 * time.Hour, time.Hour, 2 * time.Hour}, 2 * time.Hour,
			[]string{"start_198.18.0.0", "start_198.18.0.1", "start_198.18.0.2", "stop_198.18.0.1", "stop_198.18.0.2"}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newBed(t, Options{Workers: 1, MaxPending: tc.maxPending})
			for i, d := range tc.delays {
				b.run(b.job("d", i, d))
				b.waitStats("the start", func(s DoorStats) bool { return s.Run >= uint64(i+1) && s.Running == 0 })
			}
			b.clock.Advance(tc.advance)
			b.waitStats("the due stops", func(s DoorStats) bool { return s.Run == uint64(len(tc.want)) && s.Running == 0 })
			if got := b.lines(); !slices.Equal(got, tc.want) {
				t.Errorf("ran %v, want %v", got, tc.want)
			}
			s := b.r.Stats().Total
			if s.StoppedEarly != tc.early || s.PendingStops != len(tc.delays)+len(tc.delays)-len(tc.want) {
				t.Errorf("stats %+v", s)
			}
			if tc.early > 0 && !strings.Contains(b.log.String(), "stop command run early: too many stop commands pending\" src=198.18.0.1 door=d") {
				t.Errorf("no early-stop line in the log:\n%s", b.log.String())
			}
		})
	}
}

// TestRunnerClose: Close runs every pending stop at once, lets a running start finish and runs
// its stop, does not run starts still waiting (and says how many), and refuses new jobs.
func TestRunnerClose(t *testing.T) {
	b := newBed(t, Options{Workers: 1})
	for i := range 3 {
		b.run(b.job("d", i, time.Hour))
	}
	b.waitStats("3 starts", func(s DoorStats) bool { return s.PendingStops == 3 })
	gate, open := b.gate("g")
	j := b.job("d", 3, time.Hour)
	j.Start = gate + "; " + j.Start
	b.run(j)
	b.waitStats("the gate to run", func(s DoorStats) bool { return s.Running == 1 })
	for i := 4; i < 9; i++ {
		b.run(b.job("d", i, time.Hour))
	}
	closed := make(chan error, 1)
	go func() { closed <- b.r.Close(context.Background()) }()
	b.waitStats("the queued starts to be abandoned", func(s DoorStats) bool { return s.Abandoned == 5 })
	if err := b.r.Run(context.Background(), b.job("d", 10, 0)); !errors.Is(err, ErrClosed) {
		t.Errorf("Run after Close: %v, want ErrClosed", err)
	}
	open()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not return")
	}
	lines := b.lines()
	slices.Sort(lines)
	var want []string
	for i := range 4 {
		want = append(want, "start_"+addr(i).String(), "stop_"+addr(i).String())
	}
	slices.Sort(want)
	if !slices.Equal(lines, want) {
		t.Errorf("ran %v, want %v", lines, want)
	}
	if s := b.r.Stats().Total; s.PendingStops != 0 || s.Queued != 0 || s.Abandoned != 6 || s.Run != 8 {
		t.Errorf("stats %+v", s)
	}
	if !strings.Contains(b.log.String(), "abandoned=5") {
		t.Errorf("log does not say how many starts were abandoned:\n%s", b.log.String())
	}
}

// TestRunnerCloseDeadline: when Close's context ends, running commands are killed, the stops
// not run are counted and Close says so, promptly.
func TestRunnerCloseDeadline(t *testing.T) {
	b := newBed(t, Options{Workers: 1})
	gate, _ := b.gate("never")
	for i := range 3 {
		j := b.job("d", i, time.Hour)
		j.Stop = gate
		b.run(j)
	}
	b.waitStats("3 starts", func(s DoorStats) bool { return s.PendingStops == 3 })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := b.r.Close(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "2 stop commands not run") {
		t.Errorf("Close: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %v", d)
	}
	if s := b.r.Stats().Total; s.StopsNotRun != 2 || s.Failed != 1 || s.Running != 0 {
		t.Errorf("stats %+v", s)
	}

	// A start killed at the deadline: its stop is counted as not run, not run after the kill.
	b = newBed(t, Options{Workers: 1})
	j := b.job("d", 1, time.Hour)
	j.Start = gate
	b.run(j)
	b.waitStats("the start to run", func(s DoorStats) bool { return s.Running == 1 })
	ctx, cancel = context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := b.r.Close(ctx); !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "1 stop commands not run") {
		t.Errorf("Close: %v", err)
	}
	if s := b.r.Stats().Total; s.StopsNotRun != 1 || s.Failed != 1 || s.Run != 0 || s.QueuedStops != 0 {
		t.Errorf("stats %+v", s)
	}
	if got := b.lines(); len(got) != 0 {
		t.Errorf("ran %v after the deadline", got)
	}
}

// TestRunnerTimeout: a command that hangs is killed with its children after Timeout, its
// worker is freed, and its stop still runs.
func TestRunnerTimeout(t *testing.T) {
	b := newBed(t, Options{Workers: 1, Timeout: 300 * time.Millisecond})
	pidFile := filepath.Join(b.dir, "pid")
	j := b.job("d", 1, 0)
	j.Start = "sleep 30 & echo $! > " + pidFile + "; wait"
	b.run(j)
	b.run(b.job("d", 2, -1))
	start := time.Now()
	b.waitStats("the stop and the next job", func(s DoorStats) bool { return s.Run == 2 && s.Failed == 1 })
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the next job waited %v", d)
	}
	if got, want := b.lines(), []string{"stop_198.18.0.1", "start_198.18.0.2"}; !slices.Equal(got, want) {
		t.Errorf("ran %v, want %v", got, want)
	}
	if !strings.Contains(b.log.String(), "killed after 300ms") {
		t.Errorf("the log does not say the command was killed:\n%s", b.log.String())
	}
	pid, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	// The background child was killed with the shell: gone, or a zombie awaiting its reaper.
	if stat, err := os.ReadFile("/proc/" + strings.TrimSpace(string(pid)) + "/stat"); err == nil {
		if f := strings.Fields(string(stat)); len(f) > 2 && f[2] != "Z" {
			t.Errorf("the command's child %s still runs: %s", pid, stat)
		}
	}
}

// TestRunnerBackground: a command that leaves a background process holding its output frees
// its worker a moment after the shell exits, and counts as run, not failed.
func TestRunnerBackground(t *testing.T) {
	b := newBed(t, Options{Workers: 1})
	j := b.job("d", 1, -1)
	j.Start = "sleep 3 & " + j.Start
	b.run(j)
	b.run(b.job("d", 2, -1))
	start := time.Now()
	b.waitStats("both jobs", func(s DoorStats) bool { return s.Run == 2 })
	if d := time.Since(start); d > 2500*time.Millisecond {
		t.Errorf("the second job waited %v for the background process", d)
	}
	if s := b.r.Stats().Total; s.Failed != 0 {
		t.Errorf("stats %+v", s)
	}
}
