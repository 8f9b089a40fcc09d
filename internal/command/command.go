// Package command runs a door's start and stop commands through /bin/sh -c, as knockd does.
package command

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"time"
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

// Runner runs jobs in the background with a cap on how many run at once. Pending stop commands
// are run at Close, so a stopping daemon does not leave doors open that a stop command would
// have closed.
type Runner struct {
	log     *slog.Logger
	shell   string
	slots   chan struct{}
	mu      sync.Mutex
	pending map[*pendingStop]struct{}
	wg      sync.WaitGroup
	closed  bool
}

type pendingStop struct {
	job   Job
	timer *time.Timer
}

// MaxConcurrent is how many commands may run at once; more are refused and logged.
const MaxConcurrent = 64

// NewRunner returns a runner that logs to log.
func NewRunner(log *slog.Logger) *Runner {
	return &Runner{log: log, shell: "/bin/sh", slots: make(chan struct{}, MaxConcurrent), pending: map[*pendingStop]struct{}{}}
}

// Run starts j's start command now and schedules its stop command. It does not block.
func (r *Runner) Run(j Job) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	if j.Start == "" {
		// knockd: an empty start command runs nothing, and no stop command either.
		return
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.exec(j.Door, "start", Expand(j.Start, j.Addr), j.Addr)
		if j.Stop == "" {
			return
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.closed {
			r.wg.Add(1)
			go func() { defer r.wg.Done(); r.exec(j.Door, "stop", Expand(j.Stop, j.Addr), j.Addr) }()
			return
		}
		p := &pendingStop{job: j}
		r.pending[p] = struct{}{}
		r.wg.Add(1)
		p.timer = time.AfterFunc(j.Delay, func() {
			defer r.wg.Done()
			r.mu.Lock()
			_, ok := r.pending[p]
			delete(r.pending, p)
			r.mu.Unlock()
			if ok {
				r.exec(j.Door, "stop", Expand(j.Stop, j.Addr), j.Addr)
			}
		})
	}()
}

func (r *Runner) exec(door, what, line string, addr netip.Addr) {
	select {
	case r.slots <- struct{}{}:
		defer func() { <-r.slots }()
	default:
		r.log.Warn("command not run: too many commands running", "door", door, "src", addr, "command", what, "limit", MaxConcurrent)
		return
	}
	r.log.Info("running command", "door", door, "src", addr, "command", what, "line", line)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.shell, "-c", line)
	out, err := cmd.CombinedOutput()
	if err != nil {
		r.log.Warn("command failed", "door", door, "src", addr, "command", what, "err", err, "output", truncate(out))
		return
	}
	if len(out) > 0 {
		r.log.Debug("command output", "door", door, "src", addr, "command", what, "output", truncate(out))
	}
}

func truncate(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 512 {
		s = s[:512] + "…"
	}
	return s
}

// Close runs every pending stop command now, waits for all commands, and refuses new jobs.
func (r *Runner) Close() {
	r.mu.Lock()
	r.closed = true
	var stops []Job
	for p := range r.pending {
		if p.timer.Stop() {
			r.wg.Done()
			stops = append(stops, p.job)
		}
		delete(r.pending, p)
	}
	r.mu.Unlock()
	for _, j := range stops {
		r.exec(j.Door, "stop", Expand(j.Stop, j.Addr), j.Addr)
	}
	r.wg.Wait()
}

// String describes a job for logs.
func (j Job) String() string { return fmt.Sprintf("%s for %s", j.Door, j.Addr) }
