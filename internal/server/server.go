// Package server runs the daemon: capture, knock recognition, SPA policy, grants, reloads and the operator API.
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
	"github.com/sesame-knock/sesame/internal/replay"
	"github.com/sesame-knock/sesame/internal/spa"
)

// Intake delivers kernel-filtered packets: knocks, guard ports and sniffed SPA packets
// (capture.AFPacket in production, capturetest.Source in tests).
type Intake interface {
	Run(ctx context.Context, handle func(*capture.Packet)) error
	SetFilter(capture.Filter) error
	Stats() capture.Stats
}

// Listener receives SPA datagrams on a UDP socket (udpintake.Listener in production). Run
// returns once ctx ends or the listener is closed.
type Listener interface {
	Run(ctx context.Context, handle func(*capture.Packet)) error
	Close() error
}

// OneTime reads and consumes knockd one-time sequence files (KnockdOneTime in production).
type OneTime interface {
	Consume(path string, used []knock.Element) (next []knock.Element, err error)
}

// Deps are the parts a server drives. Firewall and Intake are required; every other field has
// a default.
type Deps struct {
	Firewall firewall.Backend
	Intake   Intake
	Logger   *slog.Logger
	// KnockdLog receives knockd-style event lines. When nil, Run opens the configuration's
	// log_file and use_syslog (knockdlog) and closes them at its end.
	KnockdLog func(line string)
	// OneTime consumes one-time sequence files; KnockdOneTime when nil.
	OneTime OneTime
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Commands runs the doors' commands; one with the defaults when nil. Run closes it at
	// the end, running every pending stop command.
	Commands *command.Runner
	// Replay opens the SPA replay store the first time a configuration has an [spa] section;
	// OpenReplay (state_dir/replay.db) when nil. Run closes it at its end.
	Replay func(cfg *config.Config) (replay.Store, error)
	// ListenSPA opens the UDP socket of a non-sniffing [spa] section; udpintake.Listen when nil.
	ListenSPA func(port uint16) (Listener, error)
	// KillConns ends src's established connections to ports (conntrack), returning how many;
	// nil refuses Revoke with Kill.
	KillConns func(ctx context.Context, src netip.Addr, ports []netport.Port) (int, error)
	// MaxOperatorGrant bounds an operator's Grant ([control] max_grant); DefaultMaxOperatorGrant
	// when zero.
	MaxOperatorGrant time.Duration
	// Version is reported by Status.
	Version string
	// Fleet, when set, shares grants of grouped doors and clients, bans and revocations with
	// the fleet ([cluster]); nil: this server is alone.
	Fleet Fleet
	// Ready, when set, is called once Run has opened the SPA socket, put the gate in the
	// kernel and set the capture filter (sd_notify READY=1).
	Ready func()
}

// DefaultMaxOperatorGrant is the longest operator grant unless Deps.MaxOperatorGrant says.
const DefaultMaxOperatorGrant = 24 * time.Hour

// commandDrain is how long the end of Run waits for the pending stop commands.
const commandDrain = time.Minute

// Counters are running totals, for status and metrics.
type Counters struct {
	Packets, Opened, Refused, Guarded, GrantErrors atomic.Uint64
}

// Log budgets (docs/SECURITY.md). Every per-packet log entry about a source goes through one
// of two global budgets, whatever its source: refusals and knocks in progress (behind the
// per-source limit, and shared with the SPA policy's refusals), and opened doors with their
// commands, a larger budget of its own so that a flood of refusals never hides a grant. What
// they hold back is counted and summed up at most once per logReportEvery.
const (
	refusalLinesPerSecond = 20
	refusalLinesBurst     = 100
	grantLinesPerSecond   = 100
	grantLinesBurst       = 500
	logReportEvery        = 10 * time.Second
)

// Server is the knock and SPA daemon. Its methods are safe for concurrent use.
type Server struct {
	deps      Deps
	log       *slog.Logger
	limiter   *lograte.Limiter // per source, behind refusals
	refusals  *lograte.Budget  // refusals, knocks in progress, sweep guard hits (knock and SPA)
	grantLogs *lograte.Budget  // opened doors, their knockd-style lines and commands
	runner    *command.Runner
	knockd    atomic.Pointer[func(string)] // nil: no knockd-style lines
	// forwarding is set once the forwarding rules were applied: forwards may be live.
	forwarding atomic.Bool
	Counters   Counters
	stats      stats
	grants     *attribution
	started    time.Time

	mu  sync.Mutex // guards cur
	cur *state
	// oneTimeMu serializes one-time sequence file updates.
	oneTimeMu sync.Mutex

	// reloadMu serializes Run's start and end, reloads and the SPA parts they change.
	reloadMu sync.Mutex
	spa      spaParts
	run      *runScope // nil unless Run is running
	bans     banParts
	// burns are the rotating doors' used sequences (under mu); they outlive reloads.
	burns burns
}

// state is one configuration and the knock machine built for it; a reload or a one-time
// sequence replaces it whole.
type state struct {
	cfg     *config.Config
	machine *knock.Machine
	// rot are the rotating doors, whose sequences the machine holds after cfg's doors; the
	// capture filter passes the sequences of rot's generation filterGen. Both under mu.
	rot       *rotation
	filterGen uint64
	payloads  map[knock.Element][]byte             // knockPayloads(cfg)
	srcPorts  map[knock.Element][]config.PortRange // knockSourcePorts(cfg)
}

// runScope is the lifetime of Run, for goroutines a reload starts (a new SPA listener).
type runScope struct {
	ctx context.Context
	wg  *sync.WaitGroup
}

// New returns a server for cfg. It changes nothing until Run.
func New(cfg *config.Config, deps Deps) (*Server, error) {
	if deps.Firewall == nil || deps.Intake == nil {
		return nil, errors.New("server: new: firewall and intake are required")
	}
	if cfg == nil {
		return nil, errors.New("server: new: no configuration")
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	if deps.OneTime == nil {
		deps.OneTime = KnockdOneTime{}
	}
	if deps.Replay == nil {
		deps.Replay = OpenReplay
	}
	if deps.ListenSPA == nil {
		deps.ListenSPA = listenUDP
	}
	if deps.MaxOperatorGrant <= 0 {
		deps.MaxOperatorGrant = DefaultMaxOperatorGrant
	}
	s := &Server{
		deps:      deps,
		log:       deps.Logger,
		limiter:   lograte.New(10, time.Second, 4096, deps.Now),
		refusals:  lograte.NewBudget(refusalLinesPerSecond, refusalLinesBurst, logReportEvery, deps.Now),
		grantLogs: lograte.NewBudget(grantLinesPerSecond, grantLinesBurst, logReportEvery, deps.Now),
		grants:    newAttribution(maxAttributions),
		started:   deps.Now(),
	}
	s.limiter.SetBudget(s.refusals)
	if deps.KnockdLog != nil {
		s.knockd.Store(&deps.KnockdLog)
	}
	// The runner's lines ("running command", "command not run", ...) follow grants.
	if deps.Commands == nil {
		s.deps.Commands = command.New(command.Options{Log: slog.New(s.grantLogs.Handler(deps.Logger.Handler()))})
	}
	s.runner = s.deps.Commands
	s.cur = newState(cfg, deps.Now())
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

// newState builds the knock machine of cfg, its rotating doors armed for the windows of now.
func newState(cfg *config.Config, now time.Time) *state {
	doors := doorsOf(cfg)
	rot, extra := newRotation(cfg, len(doors))
	st := &state{cfg: cfg, rot: rot, payloads: knockPayloads(cfg), srcPorts: knockSourcePorts(cfg), machine: knock.New(append(doors, extra...), knock.Options{
		MaxSources: cfg.Server.MaxSources,
		GuardWidth: cfg.Server.SweepGuard,
		Exclude:    guardExclude(cfg),
	})}
	rot.arm(st.machine, now)
	return st
}

// guardExclude lists the ports the static doors' guard bands leave out: the protected ports,
// and the rotating doors' ranges (which those doors guard themselves).
func guardExclude(cfg *config.Config) []netport.Port {
	return append(slices.Clone(Gate(cfg).Protected), rotationExclude(cfg)...)
}

// filter is the capture filter st needs: Filter's, and the rotating doors' armed sequences.
func (st *state) filter() capture.Filter {
	f := Filter(st.cfg)
	st.rot.addFilter(&f)
	return f
}

func (s *Server) state() *state {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

// config returns the running configuration.
func (s *Server) config() *config.Config { return s.state().cfg }

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

// Gate is the firewall gate cfg needs: every port a door opens is protected, refused as
// [server] stealth says, and a dark gate lets in what [server] allow lists.
func Gate(cfg *config.Config) firewall.Gate {
	return firewall.Gate{Protected: spaProtected(cfg, OpenPorts(cfg)), Stealth: cfg.Server.Stealth, Allow: cfg.Server.Allow}
}

// Filter is the kernel capture filter cfg needs: the doors' knocks, the sweep guard ports, the
// SPA port (and pings, with [spa] icmp) and connection attempts to TCP decoy ports. The rotating
// doors' knocks depend on the time: the running server adds them (state.filter).
func Filter(cfg *config.Config) capture.Filter {
	var f capture.Filter
	for _, d := range cfg.Doors {
		for i, e := range d.Sequence {
			k := capture.Knock{Port: e, Payload: string(d.Payload(i))}
			if e.Proto == netport.TCP {
				k.Flags = d.Flags
			}
			if !slices.Contains(f.Knocks, k) {
				f.Knocks = append(f.Knocks, k)
			}
		}
	}
	// Protected ports are never guard ports: a granted client connecting must not be guarded.
	for _, r := range knock.GuardRanges(doorsOf(cfg), cfg.Server.SweepGuard, guardExclude(cfg)) {
		f.Guards = append(f.Guards, capture.PortRange{Proto: r.Proto, Lo: r.Lo, Hi: r.Hi})
	}
	// The guard counts every TCP segment a door would count: the kernel must pass them all.
	f.GuardFlags = knock.GuardFlags(doorsOf(cfg))
	f.SPA = SPAPorts(cfg)
	f.SPAICMP = cfg.SPA != nil && cfg.SPA.ICMP
	for _, d := range cfg.Decoys {
		for _, p := range d.Ports {
			if p.Proto == netport.TCP {
				f.Decoys = append(f.Decoys, p.Num)
			}
		}
	}
	return f
}

// Run opens what the configuration needs (the knockd-style log, the SPA replay store and
// socket), applies the gate, then handles packets until ctx ends. At the end pending stop
// commands run and the firewall is closed as the configuration's on_stop says.
func (s *Server) Run(ctx context.Context) (err error) {
	s.reloadMu.Lock()
	if s.run != nil {
		s.reloadMu.Unlock()
		return errors.New("server: run: already running")
	}
	cfg := s.config()
	closeLog, err := s.openKnockdLog(cfg)
	if err != nil {
		s.reloadMu.Unlock()
		return fmt.Errorf("server: %w", err)
	}
	defer closeLog()
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := s.startSPA(ctx, &wg, cfg); err != nil {
		s.reloadMu.Unlock()
		return fmt.Errorf("server: %w", err)
	}
	defer s.stopSPA()
	if err := s.deps.Firewall.Apply(ctx, Gate(cfg)); err != nil {
		s.reloadMu.Unlock()
		return fmt.Errorf("server: apply firewall gate: %w", err)
	}
	if err := s.applyForwarding(ctx, cfg, nil); err != nil {
		s.reloadMu.Unlock()
		s.closeFirewall(cfg)
		return fmt.Errorf("server: %w", err)
	}
	s.mu.Lock()
	st := s.cur
	st.rot.arm(st.machine, s.deps.Now())
	err = s.deps.Intake.SetFilter(st.filter())
	st.filterGen = st.rot.gen
	s.mu.Unlock()
	if err != nil {
		s.reloadMu.Unlock()
		s.closeFirewall(cfg)
		return fmt.Errorf("server: set capture filter: %w", err)
	}
	if err := s.startBans(ctx, &wg, cfg); err != nil {
		s.reloadMu.Unlock()
		cancel()
		s.closeFirewall(cfg)
		return fmt.Errorf("server: %w", err)
	}
	s.run = &runScope{ctx: ctx, wg: &wg}
	s.reloadMu.Unlock()

	s.knockdLine("starting up, listening on %s", ifaceList(cfg.Server.Interfaces))
	if s.deps.Ready != nil {
		s.deps.Ready()
	}
	s.log.Info("sesame server running", "doors", len(cfg.Doors), "protected", fmt.Sprint(Gate(cfg).Protected), "firewall", cfg.Server.Firewall)
	for _, d := range cfg.Doors {
		if r := d.Rotate; r != nil {
			s.log.Info("door", "door", d.Name, "rotate", r.Period, "rotate_ports", fmt.Sprintf("%s/%d-%d", r.Proto, r.Lo, r.Hi), "rotate_length", r.Length, "rotate_uses", r.Uses,
				"tcp_flags", d.Flags.String(), "open", fmt.Sprint(d.Open), "open_for", d.OpenFor)
			continue
		}
		s.log.Info("door", "door", d.Name, "sequence", fmt.Sprint(d.Sequence), "tcp_flags", d.Flags.String(), "open", fmt.Sprint(d.Open), "open_for", d.OpenFor)
	}
	s.logSPA(cfg)
	for _, r := range cfg.Remarks() {
		s.log.Warn("configuration: " + r)
	}
	wg.Go(func() { s.tick(ctx) })
	err = s.deps.Intake.Run(ctx, func(p *capture.Packet) { s.handle(ctx, p) })
	if errors.Is(err, context.Canceled) || ctx.Err() != nil {
		err = nil
	}
	cancel()
	// No reload from here on: none may apply a gate after the firewall closes.
	s.reloadMu.Lock()
	s.run = nil
	s.reloadMu.Unlock()
	s.stopSPA() // no SPA packet is handled past this point
	// Stop commands run before the firewall closes: they may need it. The runner outlives
	// reloads, so stops scheduled under an older configuration run here too.
	drainCtx, cancelDrain := context.WithTimeout(context.Background(), commandDrain)
	if cerr := s.runner.Close(drainCtx); cerr != nil {
		err = errors.Join(err, cerr)
	}
	cancelDrain()
	err = errors.Join(err, s.closeFirewall(s.config()))
	s.knockdLine("shutting down")
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	return nil
}

// closeFirewall closes the firewall as cfg's on_stop says.
func (s *Server) closeFirewall(cfg *config.Config) error {
	remove := cfg.Server.OnStop == config.OnStopRemove
	closeCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.deps.Firewall.Close(closeCtx, remove); err != nil {
		return fmt.Errorf("close firewall: %w", err)
	}
	if remove {
		s.log.Info("sesame server stopped; its firewall table was removed (on_stop = remove)")
	} else {
		s.log.Info("sesame server stopped; protected ports stay closed, live grants expire on time")
	}
	return nil
}

// tick forgets expired knocks, sweeps the attribution table and reports held-back log lines,
// once a second until ctx ends.
func (s *Server) tick(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			now := s.deps.Now()
			st := s.state()
			s.mu.Lock()
			st.machine.Expire(now)
			s.mu.Unlock()
			s.grants.sweep(now)
			s.rotateNow(now)
			s.expireBans(now)
			s.reportLogs()
		}
	}
}

// sniffedSPA reports whether the capture's packet p is one for the SPA policy: a UDP datagram
// to the sniffed SPA port or, with [spa] icmp, an ICMP echo payload long enough to be an SPA
// packet of either format. Shorter echo requests (an ordinary ping carries 56 bytes or fewer)
// stay ICMP knocks, and are never logged as SPA refusals.
func sniffedSPA(cfg *config.Config, p *capture.Packet) bool {
	switch c := cfg.SPA; {
	case c == nil:
		return false
	case p.Proto == netport.UDP:
		return c.Sniff && p.DstPort == c.Port
	case p.Proto == netport.ICMP:
		return c.ICMP && len(p.Payload) >= minSPALen
	}
	return false
}

// minSPALen is the shortest SPA payload of either format: sesame's (spa.MinPacketLen); fwknop's
// are longer.
const minSPALen = spa.MinPacketLen

// handle is the per-packet path of the capture: a sniffed SPA packet goes to the SPA policy,
// anything else to the knock machine. The machine runs under s.mu; what its events do (grants,
// commands, log lines) runs after the lock is released.
func (s *Server) handle(ctx context.Context, p *capture.Packet) {
	s.Counters.Packets.Add(1)
	s.mu.Lock()
	st := s.cur
	isSPA := sniffedSPA(st.cfg, p)
	s.mu.Unlock()
	if s.decoyTouch(p) || s.screen(ctx, st.cfg, p, isSPA) {
		return
	}
	s.mu.Lock()
	st = s.cur
	if sniffedSPA(st.cfg, p) {
		s.mu.Unlock()
		s.handleSPA(ctx, p)
		return
	}
	if p.Proto == netport.ICMP && p.ICMPType == capture.ICMPEchoReply {
		s.mu.Unlock()
		return // passed for SPA only, too short to be one: never a knock
	}
	s.stats.knockPackets.Add(1)
	el := knock.Element{Proto: p.Proto, Num: p.DstPort}
	if p.Proto == netport.ICMP {
		el.Num = 0
	}
	if !st.payloadOK(el, p.Payload) || !st.sourcePortOK(el, p.SrcPort) {
		s.mu.Unlock()
		return // without its payload, or from another source port: not a knock
	}
	k := knock.Knock{Time: p.Time, Src: p.Src, Dst: p.Dst, Element: el, TCPFlags: p.TCPFlags}
	var buf [4]knock.Event
	evs := buf[:0]
	st.machine.Observe(k, func(e knock.Event) { evs = append(evs, e) })
	var refusals []rotRefusal
	if len(st.rot.doors) > 0 {
		evs, refusals = s.settleRotated(st, k.Time, evs, refusals)
	}
	s.mu.Unlock()
	for _, e := range evs {
		s.event(ctx, st, e, k)
	}
	for _, r := range refusals {
		s.refuseRotated(ctx, r)
	}
}

// eventLog says how each knock event is logged: level, message, and the reason for refusals.
var eventLog = [...]struct {
	level  slog.Level
	msg    string
	reason KnockReason
	logged bool
}{
	knock.Stage:      {slog.LevelDebug, "knock", 0, true},
	knock.Timeout:    {slog.LevelInfo, "knock refused", KnockTimeout, true},
	knock.Failed:     {slog.LevelInfo, "knock refused", KnockWrong, true},
	knock.TooFast:    {slog.LevelInfo, "knock refused", KnockTooFast, true},
	knock.NotAllowed: {slog.LevelInfo, "knock refused", KnockNotAllowed, true},
	knock.Guarded:    {slog.LevelWarn, "sweep guard: knocks from this source are ignored for a while", 0, true},
	knock.Ignored:    {},
}

// event handles one state-machine event of st's machine. It is on the per-packet path:
// nothing is formatted or allocated unless a line will really be written.
func (s *Server) event(ctx context.Context, st *state, e knock.Event, k knock.Knock) {
	var door *config.Door
	if e.Door >= 0 {
		door = &st.cfg.Doors[e.Door]
	}
	switch e.Kind {
	case knock.Opened:
		s.Counters.Opened.Add(1)
		s.stats.knockOpened.Add(1)
		s.open(ctx, st, door, e.Src, k.Time)
		return
	case knock.Ignored:
		return
	case knock.Failed, knock.TooFast, knock.NotAllowed:
		s.Counters.Refused.Add(1)
	case knock.Guarded:
		s.Counters.Guarded.Add(1)
	}
	if int(e.Kind) >= len(eventLog) {
		return
	}
	how := eventLog[e.Kind]
	if how.reason != 0 {
		s.stats.knockRefused[how.reason].Add(1)
	}
	knockd := s.knockd.Load() != nil && (e.Kind == knock.Stage || e.Kind == knock.Timeout)
	logged := how.logged && s.log.Enabled(ctx, how.level)
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
	if how.reason != 0 {
		args = append(args, "reason", how.reason.String())
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
	s.log.Log(ctx, how.level, how.msg, args...)
}

// open grants what door d opens to src, queues its commands and moves a one-time door on.
// A grant earned is never held back: it runs to its end even when ctx ends meanwhile.
func (s *Server) open(ctx context.Context, st *state, d *config.Door, src netip.Addr, seen time.Time) {
	ctx = context.WithoutCancel(ctx)
	s.grants.opened(d.Name)
	// Its lines are held back past the grant budget (one decision per opening, for all its
	// lines).
	logged := s.grantLogs.Allow()
	if logged {
		s.knockdLine("%s: %s: OPEN SESAME", src, d.Name)
	}
	if len(d.Open) > 0 {
		grants := make([]firewall.Grant, len(d.Open))
		for i, p := range d.Open {
			grants[i] = firewall.Grant{Src: src, Port: p, Timeout: d.OpenFor}
		}
		err := s.grant(ctx, GrantDoor, d.Name, "", grants, seen)
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
	if d.OneTimeFile != "" {
		s.nextOneTime(st, d)
	}
}

// grant applies grants made by (kind, by), records them for attribution and counts them; seen,
// when known, is when the packet that earned them arrived (for the latency histogram).
func (s *Server) grant(ctx context.Context, kind GrantKind, by, note string, grants []firewall.Grant, seen time.Time) error {
	err := s.grantAll(ctx, grants) // forward.go
	now := s.deps.Now()
	s.grants.record(kind, by, note, grants, now, err)
	if err != nil {
		s.Counters.GrantErrors.Add(1)
		return err
	}
	if !seen.IsZero() {
		s.stats.latency.observe(now.Sub(seen))
	}
	s.fanOutGrant(ctx, kind, by, grants, now)
	return nil
}

// nextOneTime moves a one-time door of st to its next sequence, or disables it when the file
// has none left. A reload since st was current reads the file anew: st is then left alone.
func (s *Server) nextOneTime(st *state, d *config.Door) {
	s.oneTimeMu.Lock()
	defer s.oneTimeMu.Unlock()
	next, err := s.deps.OneTime.Consume(d.OneTimeFile, d.Sequence)
	if err != nil {
		s.log.Error("one-time sequence file", "door", d.Name, "file", d.OneTimeFile, "err", err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != st {
		return
	}
	cfg := *st.cfg
	cfg.Doors = slices.Clone(st.cfg.Doors)
	i := slices.IndexFunc(cfg.Doors, func(x config.Door) bool { return x.Name == d.Name && x.OneTimeFile == d.OneTimeFile })
	if i < 0 {
		return
	}
	if len(next) == 0 {
		s.knockdLine("no more sequences left in the one time sequences file for door %s --> disabling the door", d.Name)
		s.log.Warn("no more one-time sequences: door disabled", "door", d.Name)
		cfg.Doors = slices.Delete(cfg.Doors, i, i+1)
	} else {
		cfg.Doors[i].Sequence = next
	}
	ns := newState(&cfg, s.deps.Now())
	if err := s.deps.Intake.SetFilter(ns.filter()); err != nil {
		s.log.Error("one-time sequence: set capture filter", "door", d.Name, "err", err)
	}
	ns.filterGen = ns.rot.gen
	s.cur = ns
}

func (s *Server) knockdLine(format string, args ...any) {
	if f := s.knockd.Load(); f != nil {
		(*f)(fmt.Sprintf(format, args...))
	}
}

// CommandStats returns the door commands' counters.
func (s *Server) CommandStats() command.Stats { return s.runner.Stats() }

// Progress reports the stage of src on each door, for tests and status.
func (s *Server) Progress(src netip.Addr) []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	all := s.cur.machine.Progress(src)
	out := all[:len(s.cur.cfg.Doors)]
	for i, stage := range all[len(out):] {
		if rd, _, _, ok := s.cur.rot.lookup(len(out) + i); ok {
			out[rd.cfg] = max(out[rd.cfg], stage)
		}
	}
	return out
}
