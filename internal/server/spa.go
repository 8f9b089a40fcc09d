package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sesame-knock/sesame/internal/capture"
	"github.com/sesame-knock/sesame/internal/config"
	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/netport"
	"github.com/sesame-knock/sesame/internal/replay"
	"github.com/sesame-knock/sesame/internal/spapolicy"
	"github.com/sesame-knock/sesame/internal/udpintake"
)

// SPAPorts lists the UDP ports whose packets the capture hands whole to the SPA policy: the SPA
// port in sniff mode, none otherwise (a socket receives them).
func SPAPorts(cfg *config.Config) []uint16 {
	if cfg.SPA == nil || !cfg.SPA.Sniff {
		return nil
	}
	return []uint16{cfg.SPA.Port}
}

// spaProtected lists the ports the gate protects for SPA: every port a client may open and, in
// sniff mode, the SPA port itself, so that nothing answers on it.
func spaProtected(cfg *config.Config, have []netport.Port) []netport.Port {
	out := have
	for _, p := range cfg.SPA.Protected() {
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// spaParts are the SPA policy, its replay store and its socket; reloadMu guards them. The
// policy and the store, once opened, stay until Run ends, also while no [spa] section is
// configured: a section added back finds its replay keys.
type spaParts struct {
	store    replay.Store
	storeCfg string // the state_dir the store was opened in
	policy   *spapolicy.Policy
	ln       *spaListener
	// live is the policy packets are checked against; nil while [spa] is off. Read on the
	// packet path without reloadMu.
	live atomic.Pointer[spapolicy.Policy]
}

// spaListener is a running SPA socket.
type spaListener struct {
	port   uint16
	ln     Listener
	cancel context.CancelFunc
	done   chan struct{}
}

// stop closes the socket and waits until its last packet is handled.
func (l *spaListener) stop() {
	l.cancel()
	l.ln.Close()
	<-l.done
}

// replayMaxLive caps the replay keys held in memory: only authenticated packets add keys, and
// each lives for 2 × max_age at most.
const replayMaxLive = 1 << 18

// OpenReplay opens the replay store of cfg's SPA: state_dir/replay.db (the directory is created
// 0700 and refused when others could change it), decided in memory and written right behind.
func OpenReplay(cfg *config.Config) (replay.Store, error) {
	if err := os.MkdirAll(cfg.Server.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("spa: state directory: %w", err)
	}
	if err := config.CheckDir(cfg.Server.StateDir); err != nil {
		return nil, fmt.Errorf("spa: %w", err)
	}
	file, err := replay.OpenBolt(filepath.Join(cfg.Server.StateDir, "replay.db"), replay.WithSweepEvery(time.Minute),
		// No fsync per packet (it costs ~1 ms) but once a second (docs/SECURITY.md).
		replay.WithNoSync(), replay.WithSyncEvery(time.Second))
	if err != nil {
		return nil, err
	}
	// Decide in memory (2 µs) and write the file right behind the decision (a bbolt
	// transaction costs 40-80 µs even without fsync).
	store, err := replay.NewWriteBehind(file, replayMaxLive)
	if err != nil {
		file.Close()
		return nil, err
	}
	return store, nil
}

func listenUDP(port uint16) (Listener, error) {
	l, err := udpintake.Listen(port)
	if err != nil {
		return nil, err
	}
	return l, nil
}

// stageSPA builds the SPA policy for cfg without putting it in place: it opens the replay store
// the first time, and prepares the running policy's new rules after that. commit puts it in
// place and cannot fail; abort undoes what stageSPA opened. reloadMu is held.
func (s *Server) stageSPA(cfg *config.Config) (commit, abort func(), err error) {
	if cfg.SPA == nil {
		return func() { s.spa.live.Store(nil) }, func() {}, nil
	}
	if s.spa.policy != nil {
		st, err := s.spa.policy.Prepare(cfg.SPA)
		if err != nil {
			return nil, nil, err
		}
		p := s.spa.policy
		return func() { p.Commit(st); s.spa.live.Store(p) }, func() {}, nil
	}
	store, err := s.deps.Replay(cfg)
	if err != nil {
		return nil, nil, err
	}
	p, err := spapolicy.New(cfg.SPA, store, s.log, s.deps.Now)
	if err != nil {
		store.Close()
		return nil, nil, err
	}
	p.ShareLogBudget(s.refusals)
	commit = func() {
		s.spa.store, s.spa.storeCfg, s.spa.policy = store, cfg.Server.StateDir, p
		s.spa.live.Store(p)
	}
	return commit, func() { store.Close() }, nil
}

// openListener opens the socket cfg's SPA needs when the running one (if any) does not do:
// nil when none is needed or the running one stays. reloadMu is held.
func (s *Server) openListener(cfg *config.Config) (Listener, error) {
	if cfg.SPA == nil || cfg.SPA.Sniff || (s.spa.ln != nil && s.spa.ln.port == cfg.SPA.Port) {
		return nil, nil
	}
	ln, err := s.deps.ListenSPA(cfg.SPA.Port)
	if err != nil {
		return nil, fmt.Errorf("spa: listen on udp/%d: %w", cfg.SPA.Port, err)
	}
	return ln, nil
}

// swapListener starts ln (when not nil) and then stops the running socket if cfg no longer
// wants it: the new socket is open before the old one closes. reloadMu is held.
func (s *Server) swapListener(ctx context.Context, wg *sync.WaitGroup, cfg *config.Config, ln Listener) {
	old := s.spa.ln
	keep := cfg.SPA != nil && !cfg.SPA.Sniff && old != nil && old.port == cfg.SPA.Port
	if ln != nil {
		lctx, cancel := context.WithCancel(ctx)
		l := &spaListener{port: cfg.SPA.Port, ln: ln, cancel: cancel, done: make(chan struct{})}
		wg.Go(func() {
			defer close(l.done)
			err := ln.Run(lctx, func(p *capture.Packet) {
				s.Counters.Packets.Add(1)
				s.handleSPA(lctx, p)
			})
			if err != nil && !errors.Is(err, context.Canceled) && lctx.Err() == nil {
				s.log.Error("spa listener stopped", "err", err)
			}
		})
		s.spa.ln = l
	} else if !keep {
		s.spa.ln = nil
	}
	if old != nil && !keep {
		old.stop()
	}
}

// startSPA opens cfg's SPA parts at the start of Run; reloadMu is held.
func (s *Server) startSPA(ctx context.Context, wg *sync.WaitGroup, cfg *config.Config) error {
	commit, abort, err := s.stageSPA(cfg)
	if err != nil {
		return err
	}
	ln, err := s.openListener(cfg)
	if err != nil {
		abort()
		return err
	}
	commit()
	s.swapListener(ctx, wg, cfg, ln)
	return nil
}

// stopSPA closes the SPA socket and the replay store at the end of Run (twice is harmless).
func (s *Server) stopSPA() {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	if s.spa.ln != nil {
		s.spa.ln.stop()
		s.spa.ln = nil
	}
	s.spa.live.Store(nil)
	if s.spa.store != nil {
		if err := s.spa.store.Close(); err != nil {
			s.log.Error("spa: close replay store", "err", err)
		}
	}
	s.spa.store, s.spa.storeCfg, s.spa.policy = nil, "", nil
}

func (s *Server) logSPA(cfg *config.Config) {
	if cfg.SPA == nil {
		return
	}
	mode := "udp socket"
	if cfg.SPA.Sniff {
		mode = "sniff"
	}
	s.log.Info("spa enabled", "port", cfg.SPA.Port, "mode", mode, "icmp", cfg.SPA.ICMP, "clients", len(cfg.SPA.Clients), "max_age", cfg.SPA.MaxAge)
	for _, w := range cfg.SPA.Warnings {
		s.log.Warn("spa configuration: " + w)
	}
}

// handleSPA checks one SPA payload and applies the grants it earns. The grant runs to its end
// even when ctx ends meanwhile.
func (s *Server) handleSPA(ctx context.Context, p *capture.Packet) {
	pol := s.spa.live.Load()
	if pol == nil {
		return
	}
	ctx = context.WithoutCancel(ctx)
	grants, _ := pol.HandleFrom(ctx, p.Src, p.SrcPort, p.Payload, func(ctx context.Context, client string, grants []firewall.Grant) error {
		return s.grant(ctx, GrantSPA, client, "", grants, p.Time)
	})
	if len(grants) > 0 {
		s.Counters.Opened.Add(1) // a failed grant is logged by the policy, with the request
		s.spaProved(ctx, p.Src)
	}
}
