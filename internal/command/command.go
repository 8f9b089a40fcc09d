// Package command runs a door's start and stop commands through /bin/sh -c, as knockd does.
package command

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/sesame-knock/sesame/internal/lograte"
)

// Expand replaces every %IP% in tmpl with addr. addr is a parsed address, so only digits, dots,
// colons and hex letters reach the shell: nothing else from a packet ever does.
func Expand(tmpl string, addr netip.Addr) string {
	return strings.ReplaceAll(tmpl, "%IP%", addr.Unmap().WithZone("").String())
}

// Job is one door opening: a start command now and, after Delay, a stop command.
type Job struct {
	Door        string
	Addr        netip.Addr
	Start, Stop string // templates; empty means none
	Delay       time.Duration
}

// String describes a job for logs.
func (j Job) String() string { return fmt.Sprintf("%s for %s", j.Door, j.Addr) }

// Defaults of Options.
const (
	DefaultWorkers    = 64
	DefaultQueue      = 65536
	DefaultMaxPending = 65536
	DefaultTimeout    = 5 * time.Minute
	// waitDelay is how long a command's output pipe stays open after the command ended (or
	// was killed) while something it started in the background still holds it.
	waitDelay = time.Second
)

// Errors of Run.
var (
	ErrQueueFull = errors.New("command: queue full")
	ErrClosed    = errors.New("command: runner closed")
)

// Clock schedules the stop commands. The zero Options use the system clock.
type Clock interface {
	Now() time.Time
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a scheduled call of a Clock; *time.Timer is one.
type Timer interface{ Stop() bool }

type systemClock struct{}

func (systemClock) Now() time.Time                            { return time.Now() }
func (systemClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// Options configure a Runner; zero fields take the defaults.
type Options struct {
	Log *slog.Logger
	// Workers is how many commands run at once.
	Workers int
	// Queue is how many start commands may wait for a worker; more are refused, counted and
	// logged.
	Queue int
	// MaxPending is how many stop commands may wait for their delay. Past it the one due
	// soonest runs early: a stop whose start ran is never dropped.
	MaxPending int
	// Timeout is how long a command may run before it and its process group are killed.
	Timeout time.Duration
	Clock   Clock
	Shell   string // "/bin/sh"
}

// DoorStats are one door's command counters. Run and Failed count start and stop commands.
type DoorStats struct {
	Queued       int    // start commands waiting for a worker
	QueuedStops  int    // stop commands due and waiting for a worker
	Running      int    // commands running
	PendingStops int    // stop commands waiting for their delay
	Run          uint64 // commands that exited with status 0
	Failed       uint64 // commands that failed, exited non-zero or were killed
	Overflowed   uint64 // start commands refused: the queue was full
	Abandoned    uint64 // start commands not run: the runner closed first
	StoppedEarly uint64 // stop commands run before their delay: MaxPending was reached
	StopsNotRun  uint64 // stop commands not run: Close's deadline passed first
}

// Stats are a runner's counters: the sum over doors, and each door's.
type Stats struct {
	Total DoorStats
	Doors map[string]DoorStats
}

// Runner runs jobs' commands in the background, at most Workers at once. Start commands beyond
// that wait in a FIFO queue of at most Queue jobs. Stop commands wait for their delay in a
// table of at most MaxPending, then run before any waiting start command. Close runs every
// pending stop command at once.
type Runner struct {
	log     *slog.Logger
	opts    Options
	limiter *lograte.Limiter // for the overflow and early-stop lines, over all sources
	base    context.Context  // parent of every command; kill cancels it
	kill    context.CancelFunc
	wg      sync.WaitGroup

	mu       sync.Mutex
	starts   fifo
	stops    fifo
	pending  stopHeap
	seq      uint64
	timer    Timer
	timerDue time.Time
	timerGen uint64
	workers  int
	closed   bool
	doors    map[string]*DoorStats
}

// New returns a runner. It starts no goroutine until a job arrives.
func New(opts Options) *Runner {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Workers <= 0 {
		opts.Workers = DefaultWorkers
	}
	if opts.Queue <= 0 {
		opts.Queue = DefaultQueue
	}
	if opts.MaxPending <= 0 {
		opts.MaxPending = DefaultMaxPending
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Clock == nil {
		opts.Clock = systemClock{}
	}
	if opts.Shell == "" {
		opts.Shell = "/bin/sh"
	}
	base, kill := context.WithCancel(context.Background())
	return &Runner{
		log: opts.Log, opts: opts, base: base, kill: kill,
		limiter: lograte.New(10, time.Second, 1, opts.Clock.Now),
		doors:   map[string]*DoorStats{},
	}
}

// Run queues j's start command and, once it has run, schedules its stop command. It does not
// block. It refuses j with ErrQueueFull when Queue start commands are already waiting (counted
// and logged) and with ErrClosed after Close. ctx is only passed to the log.
func (r *Runner) Run(ctx context.Context, j Job) error {
	if j.Start == "" {
		// knockd: an empty start command runs nothing, and no stop command either.
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.door(j.Door)
	if r.closed {
		d.Abandoned++
		return ErrClosed
	}
	if r.starts.len() >= r.opts.Queue {
		d.Overflowed++
		if ok, suppressed := r.limiter.Allow(netip.Addr{}); ok {
			r.log.WarnContext(ctx, "command not run: too many commands waiting", "src", j.Addr, "door", j.Door,
				"queue", r.opts.Queue, "overflowed", d.Overflowed, "suppressed", suppressed)
		}
		return ErrQueueFull
	}
	r.starts.push(task{job: j})
	d.Queued++
	r.spawn()
	return nil
}

// Close refuses new jobs, drops the start commands still waiting (they never ran, so their
// stops are not needed), runs every pending stop command now and waits for all commands. When
// ctx ends first, the running commands are killed, the stops not yet run are counted and an
// error says how many.
func (r *Runner) Close(ctx context.Context) error {
	r.mu.Lock()
	if !r.closed {
		r.closed = true
		abandoned := r.starts.len()
		for {
			t, ok := r.starts.pop()
			if !ok {
				break
			}
			d := r.door(t.job.Door)
			d.Queued--
			d.Abandoned++
		}
		r.starts = fifo{}
		if r.timer != nil {
			r.timer.Stop()
			r.timer = nil
		}
		stops := len(r.pending)
		for len(r.pending) > 0 {
			r.due(heap.Pop(&r.pending).(task))
		}
		if abandoned > 0 {
			r.log.WarnContext(ctx, "shutdown: start commands still waiting are not run", "abandoned", abandoned)
		}
		if stops > 0 {
			r.log.InfoContext(ctx, "shutdown: running pending stop commands now", "stops", stops)
		}
	}
	r.mu.Unlock()
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	r.mu.Lock()
	before := r.stopsNotRun()
	for {
		t, ok := r.stops.pop()
		if !ok {
			break
		}
		d := r.door(t.job.Door)
		d.QueuedStops--
		d.StopsNotRun++
	}
	r.mu.Unlock()
	r.kill()
	<-done // every command returns within waitDelay of the kill
	r.mu.Lock()
	left := r.stopsNotRun() - before
	r.mu.Unlock()
	r.log.ErrorContext(ctx, "shutdown: deadline passed; commands killed", "stops_not_run", left)
	return fmt.Errorf("command: close: %d stop commands not run: %w", left, ctx.Err())
}

// stopsNotRun is the number of stops Close gave up on; r.mu is held.
func (r *Runner) stopsNotRun() uint64 {
	var n uint64
	for _, d := range r.doors {
		n += d.StopsNotRun
	}
	return n
}

// Stats returns the counters.
func (r *Runner) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := Stats{Doors: make(map[string]DoorStats, len(r.doors))}
	for name, d := range r.doors {
		s.Doors[name] = *d
		t := &s.Total
		t.Queued += d.Queued
		t.QueuedStops += d.QueuedStops
		t.Running += d.Running
		t.PendingStops += d.PendingStops
		t.Run += d.Run
		t.Failed += d.Failed
		t.Overflowed += d.Overflowed
		t.Abandoned += d.Abandoned
		t.StoppedEarly += d.StoppedEarly
		t.StopsNotRun += d.StopsNotRun
	}
	return s
}

// door returns name's counters; r.mu is held. Door names come from the configuration.
func (r *Runner) door(name string) *DoorStats {
	d := r.doors[name]
	if d == nil {
		d = &DoorStats{}
		r.doors[name] = d
	}
	return d
}

// spawn starts a worker if fewer than Workers run; r.mu is held. A worker exits only when both
// queues are empty, so a queued task always has a worker.
func (r *Runner) spawn() {
	if r.workers >= r.opts.Workers {
		return
	}
	r.workers++
	r.wg.Add(1)
	go r.work()
}

// due queues a stop command to run now; r.mu is held.
func (r *Runner) due(t task) {
	d := r.door(t.job.Door)
	if t.pending {
		t.pending = false
		d.PendingStops--
	}
	r.stops.push(t)
	d.QueuedStops++
	r.spawn()
}

func (r *Runner) work() {
	defer r.wg.Done()
	r.mu.Lock()
	for {
		// Stops first: they end grants, and starts only run when no stop is waiting, so the
		// stop queue never holds more than the pending table plus one per worker.
		t, ok := r.stops.pop()
		if !ok {
			t, ok = r.starts.pop()
		}
		if !ok {
			r.workers--
			if r.starts.cap() > 4096 || r.stops.cap() > 4096 {
				r.starts, r.stops = fifo{}, fifo{} // give a burst's memory back
			}
			r.mu.Unlock()
			return
		}
		d := r.door(t.job.Door)
		if t.stop {
			d.QueuedStops--
		} else {
			d.Queued--
		}
		if r.base.Err() != nil {
			// Close's deadline passed: this is the stop of a start that was killed then.
			d.StopsNotRun++
			continue
		}
		d.Running++
		r.mu.Unlock()
		err := r.exec(t)
		r.mu.Lock()
		d.Running--
		if err != nil {
			d.Failed++
		} else {
			d.Run++
		}
		if !t.stop && t.job.Stop != "" {
			r.schedule(t.job) // the start ran, even if it failed: its stop runs
		}
	}
}

// schedule puts j's stop command in the pending table, due after j.Delay; r.mu is held.
func (r *Runner) schedule(j Job) {
	t := task{job: j, stop: true}
	if r.closed || j.Delay <= 0 {
		r.due(t)
		return
	}
	if len(r.pending) >= r.opts.MaxPending {
		early := heap.Pop(&r.pending).(task)
		ed := r.door(early.job.Door)
		ed.StoppedEarly++
		if ok, suppressed := r.limiter.Allow(netip.Addr{}); ok {
			r.log.Warn("stop command run early: too many stop commands pending", "src", early.job.Addr, "door", early.job.Door,
				"max_pending", r.opts.MaxPending, "early_by", early.due.Sub(r.opts.Clock.Now()).Round(time.Millisecond), "suppressed", suppressed)
		}
		r.due(early)
	}
	r.seq++
	t.seq, t.due, t.pending = r.seq, r.opts.Clock.Now().Add(j.Delay), true
	heap.Push(&r.pending, t)
	r.door(j.Door).PendingStops++
	r.arm()
}

// arm sets the timer for the earliest pending stop; r.mu is held.
func (r *Runner) arm() {
	if len(r.pending) == 0 || r.closed {
		return
	}
	next := r.pending[0].due
	if r.timer != nil && !r.timerDue.After(next) {
		return // it fires first, and arms again
	}
	if r.timer != nil {
		r.timer.Stop()
	}
	r.timerGen++
	gen := r.timerGen
	r.timerDue = next
	r.timer = r.opts.Clock.AfterFunc(next.Sub(r.opts.Clock.Now()), func() { r.fire(gen) })
}

// fire queues every stop that is due.
func (r *Runner) fire(gen uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if gen == r.timerGen {
		r.timer = nil
	}
	now := r.opts.Clock.Now()
	for len(r.pending) > 0 && !r.pending[0].due.After(now) {
		r.due(heap.Pop(&r.pending).(task))
	}
	if len(r.pending) == 0 && cap(r.pending) > 4096 {
		r.pending = nil
	}
	r.arm()
}

func (r *Runner) exec(t task) error {
	what, tmpl := "start", t.job.Start
	if t.stop {
		what, tmpl = "stop", t.job.Stop
	}
	line := Expand(tmpl, t.job.Addr)
	r.log.Info("running command", "door", t.job.Door, "src", t.job.Addr, "command", what, "line", line)
	ctx, cancel := context.WithTimeout(r.base, r.opts.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.opts.Shell, "-c", line)
	killGroup(cmd)
	cmd.WaitDelay = waitDelay
	var out capped
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if errors.Is(err, exec.ErrWaitDelay) && ctx.Err() == nil {
		// The shell exited with status 0 but left a background process holding its output
		// (command = "daemon &"): that process keeps running, the worker moves on.
		err = nil
	}
	if ctx.Err() != nil {
		err = fmt.Errorf("killed after %v: %w", r.opts.Timeout, ctx.Err())
		if r.base.Err() != nil {
			err = fmt.Errorf("killed at shutdown: %w", r.base.Err())
		}
	}
	if err != nil {
		r.log.Warn("command failed", "door", t.job.Door, "src", t.job.Addr, "command", what, "err", err, "output", out.String())
		return err
	}
	if out.n > 0 {
		r.log.Debug("command output", "door", t.job.Door, "src", t.job.Addr, "command", what, "output", out.String())
	}
	return nil
}

// task is a start or stop command to run.
type task struct {
	job     Job
	stop    bool
	pending bool      // in the pending table
	due     time.Time // when a pending stop runs
	seq     uint64    // order among stops due at the same time
}

// fifo is a queue of tasks.
type fifo struct {
	items []task
	head  int
}

func (q *fifo) len() int { return len(q.items) - q.head }
func (q *fifo) cap() int { return cap(q.items) }

func (q *fifo) push(t task) { q.items = append(q.items, t) }

func (q *fifo) pop() (task, bool) {
	if q.head == len(q.items) {
		return task{}, false
	}
	t := q.items[q.head]
	q.items[q.head] = task{}
	q.head++
	switch {
	case q.head == len(q.items):
		q.items, q.head = q.items[:0], 0
	case q.head >= 1024 && 2*q.head >= len(q.items):
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items, q.head = q.items[:n], 0
	}
	return t, true
}

// stopHeap orders pending stops by due time, then by the order they were scheduled.
type stopHeap []task

func (h stopHeap) Len() int { return len(h) }
func (h stopHeap) Less(i, j int) bool {
	if !h[i].due.Equal(h[j].due) {
		return h[i].due.Before(h[j].due)
	}
	return h[i].seq < h[j].seq
}
func (h stopHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *stopHeap) Push(x any)   { *h = append(*h, x.(task)) }
func (h *stopHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = task{}
	*h = old[:len(old)-1]
	return t
}

// capped keeps the first 512 bytes of a command's output and counts the rest.
type capped struct {
	b []byte
	n int
}

func (c *capped) Write(p []byte) (int, error) {
	c.n += len(p)
	if room := 512 - len(c.b); room > 0 {
		c.b = append(c.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (c *capped) String() string {
	s := strings.TrimSpace(string(c.b))
	if c.n > len(c.b) {
		s += "…"
	}
	return s
}
