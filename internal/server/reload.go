package server

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/sesame-knock/sesame/internal/config"
)

// NeedsRestart names what in next a reload cannot apply over running (nil when it can all be
// applied): the firewall backend, the capture interfaces, the knockd-style log, the pid file, the
// control socket and the metrics listener are opened once, and the replay store stays in the
// state_dir it was opened in (storeDir, "" when no store is open).
func NeedsRestart(running, next *config.Config, storeDir string) []string {
	var out []string
	r, n := running.Server, next.Server
	if r.Firewall != n.Firewall {
		out = append(out, fmt.Sprintf("changing the firewall backend (%s to %s)", r.Firewall, n.Firewall))
	}
	if !slices.Equal(r.Interfaces, n.Interfaces) {
		out = append(out, "changing the interfaces")
	}
	if r.LogFile != n.LogFile || r.UseSyslog != n.UseSyslog {
		out = append(out, "changing log_file or use_syslog")
	}
	if r.PidFile != n.PidFile {
		out = append(out, "changing pid_file")
	}
	if storeDir != "" && next.SPA != nil && n.StateDir != storeDir {
		out = append(out, "changing state_dir (the replay cache's)")
	}
	if running.Control != next.Control {
		out = append(out, "changing [control]")
	}
	if running.Metrics != next.Metrics {
		out = append(out, "changing [metrics]")
	}
	if !reflect.DeepEqual(running.AWS, next.AWS) {
		out = append(out, "changing [firewall.aws]")
	}
	if !reflect.DeepEqual(running.Cluster, next.Cluster) || !slices.Equal(config.FleetGroups(running), config.FleetGroups(next)) {
		out = append(out, "changing [cluster] or the fleet groups")
	}
	return out
}

// ErrNeedsRestart is wrapped by Reload's error when the new configuration changes something
// only a restart applies.
var ErrNeedsRestart = errors.New("takes a restart")

// Reload switches to cfg, all of it or none of it: knock doors, backend-independent settings
// (max_sources, sweep_guard, on_stop, never_ban), [[decoy]] (new ports listen, removed ones
// close), [scan] (a changed section starts a new detector: offences counted so far are
// forgotten), [alert] (queued webhooks go to the new target), the [spa] section (its clients,
// keys and limits; adding or removing it; its listener: a new UDP socket opens before the old
// one closes, and in sniff mode the capture filter changes). On any error (a bad SPA part, a
// socket or decoy port that cannot be bound, a gate or filter the kernel refuses, or something
// NeedsRestart names) the running configuration stays as it was and the error says why. Live
// grants and bans survive; knocks in progress are forgotten. Stop commands already pending keep
// the command and delay they were scheduled with: the runner outlives reloads, so they run on
// time, once.
func (s *Server) Reload(ctx context.Context, cfg *config.Config) error {
	if cfg == nil {
		return errors.New("server: reload: no configuration")
	}
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	if s.run == nil {
		return errors.New("server: reload: the server is not running")
	}
	running := s.config()
	s.knockdLine("re-reading config file: %s", cfg.Source)
	storeDir := ""
	if s.spa.store != nil {
		storeDir = s.spa.storeCfg
	}
	if why := NeedsRestart(running, cfg, storeDir); len(why) > 0 {
		return fmt.Errorf("server: reload: %s %w", strings.Join(why, ", "), ErrNeedsRestart)
	}
	commitSPA, abortSPA, err := s.stageSPA(cfg)
	if err != nil {
		return fmt.Errorf("server: reload: %w", err)
	}
	ln, err := s.openListener(cfg)
	if err != nil {
		abortSPA()
		return fmt.Errorf("server: reload: %w", err)
	}
	undo := func() {
		if ln != nil {
			ln.Close()
		}
		abortSPA()
	}
	if err := s.deps.Firewall.Apply(ctx, Gate(cfg)); err != nil {
		undo()
		return fmt.Errorf("server: reload: apply firewall gate: %w", err)
	}
	if err := s.applyForwarding(ctx, cfg, running); err != nil { // forward.go
		undo()
		if rerr := s.deps.Firewall.Apply(ctx, Gate(running)); rerr != nil {
			err = errors.Join(err, fmt.Errorf("restore the running gate: %w", rerr))
		}
		return fmt.Errorf("server: reload: %w", err)
	}
	// Decoys, scan rules and alerts, before mu is taken: they read the running configuration.
	if err := s.reloadBans(cfg, running); err != nil {
		undo()
		if rerr := s.deps.Firewall.Apply(ctx, Gate(running)); rerr != nil {
			err = errors.Join(err, fmt.Errorf("restore the running gate: %w", rerr))
		}
		return fmt.Errorf("server: reload: %w", err)
	}
	// The filter is set under mu, so that the rotating doors' tick cannot set the running
	// state's over it before the new state is in place.
	st := newState(cfg, s.deps.Now())
	s.mu.Lock()
	if err := s.deps.Intake.SetFilter(st.filter()); err != nil {
		s.mu.Unlock()
		undo()
		if rerr := s.reloadBans(running, cfg); rerr != nil {
			err = errors.Join(err, fmt.Errorf("restore the running decoys: %w", rerr))
		}
		if rerr := s.deps.Firewall.Apply(ctx, Gate(running)); rerr != nil {
			err = errors.Join(err, fmt.Errorf("restore the running gate: %w", rerr))
		}
		return fmt.Errorf("server: reload: set capture filter: %w", err)
	}
	// Nothing below can fail.
	st.filterGen = st.rot.gen
	s.cur = st
	s.mu.Unlock()
	commitSPA()
	s.swapListener(s.run.ctx, s.run.wg, cfg, ln)
	s.log.Info("configuration reloaded", "source", cfg.Source, "doors", len(cfg.Doors))
	switch {
	case cfg.SPA != nil && running.SPA == nil:
		s.logSPA(cfg)
	case cfg.SPA == nil && running.SPA != nil:
		s.log.Info("spa disabled", "port", running.SPA.Port)
	case cfg.SPA != nil:
		s.log.Info("spa configuration reloaded", "clients", len(cfg.SPA.Clients), "max_age", cfg.SPA.MaxAge)
	}
	return nil
}
