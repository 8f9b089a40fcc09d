// Package server wires the packet path together: capture, knock recognition, policy, grants.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sesame-knock/sesame/internal/capture"
	"github.com/sesame-knock/sesame/internal/command"
	"github.com/sesame-knock/sesame/internal/config"
	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/knock"
	"github.com/sesame-knock/sesame/internal/lograte"
	"github.com/sesame-knock/sesame/internal/netport"
	"github.com/sesame-knock/sesame/internal/spapolicy"
)

// Intake delivers kernel-filtered packets (capture.AFPacket in production).
type Intake interface {
	Run(ctx context.Context, handle func(*capture.Packet)) error
	SetFilter(capture.Filter) error
}

// OneTime reads and consumes knockd one-time sequence files (knockdconf in production).
type OneTime interface {
	Consume(path string, used []knock.Element) (next []knock.Element, err error)
}

// Deps are the parts a server drives.
type Deps struct {
	Firewall firewall.Backend
	Intake   Intake
	Logger   *slog.Logger
	// KnockdLog, when set, receives knockd-style event lines (LogFile, UseSyslog).
	KnockdLog func(line string)
	OneTime   OneTime
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// SPA, when set, checks SPA packets: sniffed ones (cfg.SPA.Sniff) from Intake, and those
	// SPAIntake (a UDP socket, optional) receives.
	SPA       *spapolicy.Policy
	SPAIntake Intake
	// Commands runs the doors' commands; one with the defaults when nil. Run closes it at
	// the end, running every pending stop command.
	Commands *command.Runner
}

// commandDrain is how long the end of Run waits for the pending stop commands.
const commandDrain = time.Minute

// Counters are running totals, for status and metrics.
type Counters struct {
	Packets, Opened, Refused, Guarded, GrantErrors atomic.Uint64
}

// Log budgets (docs/SECURITY.md). Every per-packet log entry about a source goes through one
// of two global budgets, whatever its source: refusals and knocks in progress (behind the
// per-source limit, and shared with the SPA handler's refusals), and opened doors with their
// commands, a larger budget of its own so that a flood of refusals never hides a grant. What
// they hold back is counted and summed up at most once per logReportEvery.
const (
	refusalLinesPerSecond = 20
	refusalLinesBurst     = 100
	grantLinesPerSecond   = 100
	grantLinesBurst       = 500
	logReportEvery        = 10 * time.Second
)

// Server is the knock daemon.
type Server struct {
	deps      Deps
	log       *slog.Logger
	limiter   *lograte.Limiter // per source, behind refusals
	refusals  *lograte.Budget  // refusals, knocks in progress, sweep guard hits (knock and SPA)
	grantLogs *lograte.Budget  // opened doors, their knockd-style lines and commands
	runner    *command.Runner
	Counters  Counters

	mu      sync.Mutex // guards cfg and machine
	cfg     *config.Config
	machine *knock.Machine
	ctx     context.Context
}

// New returns a server for cfg. It changes nothing until Run.
func New(cfg *config.Config, deps Deps) (*Server, error) {
	if deps.Firewall == nil || deps.Intake == nil {
		return nil, errors.New("server: firewall and intake are required")
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	s := &Server{
		deps:      deps,
		log:       deps.Logger,
		limiter:   lograte.New(10, time.Second, 4096, deps.Now),
		refusals:  lograte.NewBudget(refusalLinesPerSecond, refusalLinesBurst, logReportEvery, deps.Now),
		grantLogs: lograte.NewBudget(grantLinesPerSecond, grantLinesBurst, logReportEvery, deps.Now),
	}
	s.limiter.SetBudget(s.refusals)
	if deps.SPA != nil {
		deps.SPA.ShareLogBudget(s.refusals)
	}
	// The runner's lines ("running command", "command not run", ...) follow grants.
	if deps.Commands == nil {
		deps.Commands = command.New(command.Options{Log: slog.New(s.grantLogs.Handler(deps.Logger.Handler()))})
		s.deps.Commands = deps.Commands
	}
	s.runner = deps.Commands
	s.install(cfg)
	return s, nil
}

// reportLogs writes the summary of log lines the budgets held back, at most once per
// logReportEvery each.
func (s *Server) reportLogs() {
	s.refusals.LogReport(s.log, "refusals")
	s.grantLogs.LogReport(s.log, "grants")
}

// SuppressedLogLines returns how many log entries the server's limits have held back since it
// started: the global budgets' and the knock path's per-source limits' (for metrics).
func (s *Server) SuppressedLogLines() uint64 {
	return s.refusals.Suppressed() + s.grantLogs.Suppressed() + s.limiter.Suppressed()
}

func (s *Server) install(cfg *config.Config) {
	s.cfg = cfg
	s.machine = knock.New(doorsOf(cfg), knock.Options{
		MaxSources: cfg.Server.MaxSources,
		GuardWidth: cfg.Server.SweepGuard,
		Exclude:    Gate(cfg).Protected,
	})
}

func doorsOf(cfg *config.Config) []knock.Door {
	out := make([]knock.Door, len(cfg.Doors))
	for i, d := range cfg.Doors {
		out[i] = d.Door
	}
	return out
}

// OpenPorts lists every port any door opens.
func OpenPorts(cfg *config.Config) []netport.Port {
	var out []netport.Port
	for _, d := range cfg.Doors {
		for _, p := range d.Open {
			if !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	return out
}

// Gate is the firewall gate cfg needs: every port a door opens is protected.
func Gate(cfg *config.Config) firewall.Gate {
	return firewall.Gate{Protected: spaProtected(cfg, OpenPorts(cfg))}
}

// Filter is the kernel capture filter cfg needs: the doors' knocks and the sweep guard ports.
func Filter(cfg *config.Config) capture.Filter {
	var f capture.Filter
	for _, d := range cfg.Doors {
		for _, e := range d.Sequence {
			k := capture.Knock{Port: e}
			if e.Proto == netport.TCP {
				k.Flags = d.Flags
			}
			if !slices.Contains(f.Knocks, k) {
				f.Knocks = append(f.Knocks, k)
			}
		}
	}
	// Protected ports are never guard ports: a granted client connecting must not be guarded.
	for _, r := range knock.GuardRanges(doorsOf(cfg), cfg.Server.SweepGuard, Gate(cfg).Protected) {
		f.Guards = append(f.Guards, capture.PortRange{Proto: r.Proto, Lo: r.Lo, Hi: r.Hi})
	}
	// The guard counts every TCP segment a door would count: the kernel must pass them all.
	f.GuardFlags = knock.GuardFlags(doorsOf(cfg))
	f.SPA = SPAPorts(cfg)
	return f
}

// Run applies the gate, then handles packets until ctx ends. At the end pending stop commands
// run and the firewall is closed as the config's on_stop says.
func (s *Server) Run(ctx context.Context) error {
	s.mu.Lock()
	cfg := s.cfg
	s.ctx = ctx
	s.mu.Unlock()
	if err := s.deps.Firewall.Apply(ctx, Gate(cfg)); err != nil {
		return fmt.Errorf("server: apply firewall gate: %w", err)
	}
	if err := s.deps.Intake.SetFilter(Filter(cfg)); err != nil {
		return fmt.Errorf("server: set capture filter: %w", err)
	}
	s.log.Info("sesame server running", "doors", len(cfg.Doors), "protected", fmt.Sprint(Gate(cfg).Protected), "firewall", cfg.Server.Firewall)
	for _, d := range cfg.Doors {
		s.log.Info("door", "door", d.Name, "sequence", fmt.Sprint(d.Sequence), "tcp_flags", d.Flags.String(), "open", fmt.Sprint(d.Open), "open_for", d.OpenFor)
	}
	expire := time.NewTicker(time.Second)
	defer expire.Stop()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-expire.C:
				s.mu.Lock()
				s.machine.Expire(s.deps.Now())
				s.mu.Unlock()
				s.reportLogs()
			}
		}
	}()
	waitSPA := s.startSPA(ctx)
	err := s.deps.Intake.Run(ctx, s.handle)
	waitSPA()
	if errors.Is(err, context.Canceled) || ctx.Err() != nil {
		err = nil
	}
	// Stop commands run before the firewall closes: they may need it. The runner outlives
	// reloads, so stops scheduled under an older configuration run here too.
	drainCtx, cancelDrain := context.WithTimeout(context.Background(), commandDrain)
	if cerr := s.runner.Close(drainCtx); cerr != nil {
		err = errors.Join(err, cerr)
	}
	cancelDrain()
	s.mu.Lock()
	remove := s.cfg.Server.OnStop == config.OnStopRemove
	s.mu.Unlock()
	closeCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if cerr := s.deps.Firewall.Close(closeCtx, remove); cerr != nil {
		err = errors.Join(err, fmt.Errorf("server: close firewall: %w", cerr))
	}
	if remove {
		s.log.Info("sesame server stopped; its firewall table was removed (on_stop = remove)")
	} else {
		s.log.Info("sesame server stopped; protected ports stay closed, live grants expire on time")
	}
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	return nil
}

// Reload switches to cfg without dropping live grants. Knocks in progress are forgotten.
// Stop commands already pending keep the command and delay they were scheduled with: the
// runner outlives reloads, so they run on time, once.
func (s *Server) Reload(ctx context.Context, cfg *config.Config) error {
	if err := s.deps.Firewall.Apply(ctx, Gate(cfg)); err != nil {
		return fmt.Errorf("server: reload: apply firewall gate: %w", err)
	}
	if err := s.deps.Intake.SetFilter(Filter(cfg)); err != nil {
		return fmt.Errorf("server: reload: set capture filter: %w", err)
	}
	s.mu.Lock()
	s.install(cfg)
	s.mu.Unlock()
	s.log.Info("configuration reloaded", "source", cfg.Source, "doors", len(cfg.Doors))
	return nil
}

func (s *Server) handle(p *capture.Packet) {
	s.Counters.Packets.Add(1)
	if s.spaPacket(p) {
		return
	}
	el := knock.Element{Proto: p.Proto, Num: p.DstPort}
	if p.Proto == netport.ICMP {
		el.Num = 0
	}
	k := knock.Knock{Time: p.Time, Src: p.Src, Dst: p.Dst, Element: el, TCPFlags: p.TCPFlags}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.machine.Observe(k, func(e knock.Event) { s.event(e, k) })
}

// eventLog says how each knock event is logged: level, message, and the reason for refusals.
var eventLog = map[knock.EventKind]struct {
	level       slog.Level
	msg, reason string
}{
	knock.Stage:      {slog.LevelDebug, "knock", ""},
	knock.Timeout:    {slog.LevelInfo, "knock refused", "sequence timeout"},
	knock.Failed:     {slog.LevelInfo, "knock refused", "wrong knock"},
	knock.TooFast:    {slog.LevelInfo, "knock refused", "knock sooner than min_gap"},
	knock.NotAllowed: {slog.LevelInfo, "knock refused", "source not allowed"},
	knock.Guarded:    {slog.LevelWarn, "sweep guard: knocks from this source are ignored for a while", ""},
}

// event handles one state-machine event; s.mu is held. It is on the per-packet path: nothing is
// formatted or allocated unless a line will really be written.
func (s *Server) event(e knock.Event, k knock.Knock) {
	var door *config.Door
	if e.Door >= 0 {
		door = &s.cfg.Doors[e.Door]
	}
	switch e.Kind {
	case knock.Opened:
		s.Counters.Opened.Add(1)
		s.open(door, e.Src)
		return
	case knock.Ignored:
		return
	case knock.Failed, knock.TooFast, knock.NotAllowed:
		s.Counters.Refused.Add(1)
	case knock.Guarded:
		s.Counters.Guarded.Add(1)
	}
	knockd := s.deps.KnockdLog != nil && (e.Kind == knock.Stage || e.Kind == knock.Timeout)
	how, logged := eventLog[e.Kind]
	logged = logged && s.log.Enabled(context.Background(), how.level)
	if !knockd && !logged {
		return
	}
	// One decision per event, for its knockd-style line and its log line alike.
	ok, suppressed := s.limiter.Allow(e.Src)
	if !ok {
		return
	}
	if knockd {
		switch e.Kind {
		case knock.Stage:
			s.knockdLine("%s: %s: Stage %d", e.Src, door.Name, e.Stage)
		case knock.Timeout:
			s.knockdLine("%s: %s: sequence timeout", e.Src, door.Name)
		}
	}
	if !logged {
		return
	}
	args := make([]any, 0, 12)
	args = append(args, "src", e.Src)
	if door != nil {
		args = append(args, "door", door.Name)
	}
	if how.reason != "" {
		args = append(args, "reason", how.reason)
	}
	if e.Kind == knock.Stage {
		args = append(args, "stage", e.Stage)
	}
	if e.Kind != knock.Timeout && e.Kind != knock.NotAllowed {
		args = append(args, "knock", k.Element.String())
	}
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	s.log.Log(context.Background(), how.level, how.msg, args...)
}

func (s *Server) open(d *config.Door, src netip.Addr) {
	// The grant is never held back; its lines are, past the grant budget (one decision per
	// opening, for all its lines).
	logged := s.grantLogs.Allow()
	if logged {
		s.knockdLine("%s: %s: OPEN SESAME", src, d.Name)
	}
	ctx := s.ctx
	if ctx == nil || ctx.Err() != nil {
		ctx = context.Background()
	}
	if len(d.Open) > 0 {
		grants := make([]firewall.Grant, len(d.Open))
		for i, p := range d.Open {
			grants[i] = firewall.Grant{Src: src, Port: p, Timeout: d.OpenFor}
		}
		err := s.deps.Firewall.Grant(ctx, grants...)
		if err != nil {
			s.Counters.GrantErrors.Add(1)
		}
		switch {
		case !logged:
		case err != nil:
			s.log.Error("door opened but the grant failed", "door", d.Name, "src", src, "err", err)
		default:
			s.log.Info("door opened", "door", d.Name, "src", src, "open", fmt.Sprint(d.Open), "open_for", d.OpenFor)
		}
	} else if logged {
		s.log.Info("door opened", "door", d.Name, "src", src)
	}
	start, stop := d.StartCommand, d.StopCommand
	if src.Unmap().Is6() {
		start, stop = d.StartCommand6, d.StopCommand6
	}
	// Queued, never run here: the runner logs and counts a refusal, and the knockd-style line is
	// written only for a command that was queued.
	err := s.runner.Run(ctx, command.Job{Door: d.Name, Addr: src, Start: start, Stop: stop, Delay: d.CmdTimeout})
	if start != "" && logged && err == nil {
		s.knockdLine("%s: running command: %s", d.Name, command.Expand(start, src))
	}
	if d.OneTimeFile != "" && s.deps.OneTime != nil {
		s.nextOneTime(d)
	}
}

// nextOneTime moves a one-time door to its next sequence; s.mu is held.
func (s *Server) nextOneTime(d *config.Door) {
	next, err := s.deps.OneTime.Consume(d.OneTimeFile, d.Sequence)
	cfg := *s.cfg
	cfg.Doors = slices.Clone(s.cfg.Doors)
	i := slices.IndexFunc(cfg.Doors, func(x config.Door) bool { return x.Name == d.Name && x.OneTimeFile == d.OneTimeFile })
	switch {
	case err != nil:
		s.log.Error("one-time sequence file", "door", d.Name, "file", d.OneTimeFile, "err", err)
		return
	case len(next) == 0:
		s.knockdLine("no more sequences left in the one time sequences file for door %s --> disabling the door", d.Name)
		s.log.Warn("no more one-time sequences: door disabled", "door", d.Name)
		cfg.Doors = slices.Delete(cfg.Doors, i, i+1)
	default:
		cfg.Doors[i].Sequence = next
	}
	if err := s.deps.Intake.SetFilter(Filter(&cfg)); err != nil {
		s.log.Error("one-time sequence: set capture filter", "door", d.Name, "err", err)
	}
	s.install(&cfg)
}

func (s *Server) knockdLine(format string, args ...any) {
	if s.deps.KnockdLog != nil {
		s.deps.KnockdLog(fmt.Sprintf(format, args...))
	}
}

// CommandStats returns the door commands' counters.
func (s *Server) CommandStats() command.Stats { return s.runner.Stats() }

// Progress reports the stage of src on each door, for tests and status.
func (s *Server) Progress(src netip.Addr) []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.machine.Progress(src)
}
