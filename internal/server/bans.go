package server

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/sesame-knock/sesame/internal/alert"
	"github.com/sesame-knock/sesame/internal/capture"
	"github.com/sesame-knock/sesame/internal/cluster"
	"github.com/sesame-knock/sesame/internal/config"
	"github.com/sesame-knock/sesame/internal/decoy"
	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/netport"
	"github.com/sesame-knock/sesame/internal/scan"
)

// maxBanCache bounds the bans the server remembers for its packet path; the kernel holds them
// all regardless. Past it, new bans still go to the kernel, but their knocks are not ignored
// in user space (the kernel still drops their packets to protected ports).
const maxBanCache = 65536

// banParts are the decoys, scan detection and bans of a running server.
type banParts struct {
	mu      sync.Mutex
	banned  map[netip.Addr]banEntry
	scan    *scan.Detector
	alerter *alert.Alerter
	ignored uint64 // packets from banned sources ignored
}

type banEntry struct {
	until  time.Time
	reason string
}

// banner is the firewall's ban primitive, or nil when the backend has none (firewall none). A
// wrapping backend exposes the one it wraps with Unwrap.
func (s *Server) banner() firewall.Banner {
	fw := s.deps.Firewall
	for range 8 {
		if b, ok := fw.(firewall.Banner); ok {
			return b
		}
		u, ok := fw.(interface{ Unwrap() firewall.Backend })
		if !ok {
			return nil
		}
		fw = u.Unwrap()
	}
	return nil
}

// startBans loads the live bans from the kernel (they outlive the daemon), and starts the
// alerter and the decoys of cfg. It is called by Run after the gate is applied.
func (s *Server) startBans(ctx context.Context, wg *sync.WaitGroup, cfg *config.Config) error {
	s.bans.mu.Lock()
	s.bans.banned = map[netip.Addr]banEntry{}
	if sc := cfg.Scan; sc != nil {
		s.bans.scan = scan.New(scan.Config{Window: sc.Window, Threshold: sc.Threshold, BanFor: sc.BanFor, Forget: sc.Forget, MaxSources: cfg.Server.MaxSources})
	}
	s.bans.mu.Unlock()
	if b := s.banner(); b != nil {
		live, err := b.ListBans(ctx)
		if err != nil {
			return fmt.Errorf("list bans: %w", err)
		}
		now := s.deps.Now()
		s.bans.mu.Lock()
		for _, l := range live {
			s.bans.banned[l.Src] = banEntry{until: now.Add(l.Remaining), reason: "kept from before a restart"}
		}
		s.bans.mu.Unlock()
		if len(live) > 0 {
			s.log.Info("bans kept in the kernel", "bans", len(live))
		}
	} else if len(cfg.Decoys) > 0 || cfg.Scan != nil {
		s.log.Warn("firewall has no bans: decoys and scan detection only alert", "firewall", cfg.Server.Firewall)
	}
	if len(cfg.Decoys) > 0 || cfg.Scan != nil {
		a := alert.New(alert.Options{URL: cfg.Alert.URL, Secret: cfg.Alert.Secret, Interval: cfg.Alert.Interval, Log: s.log, Now: s.deps.Now})
		s.bans.mu.Lock()
		s.bans.alerter = a
		s.bans.mu.Unlock()
		wg.Go(func() { a.Run(ctx) })
	}
	if len(cfg.Decoys) == 0 {
		return nil
	}
	var ds []decoy.Decoy
	alerts := map[netport.Port]bool{}
	for _, d := range cfg.Decoys {
		ds = append(ds, decoy.Decoy{Ports: d.Ports, BanFor: d.BanFor, Banner: d.Banner})
		for _, p := range d.Ports {
			alerts[p] = d.Alert
		}
	}
	dsrv := decoy.New(decoy.Options{
		Decoys:   ds,
		Ban:      s.Ban,
		NeverBan: cfg.Server.NeverBanned,
		Alert: func(e alert.Event) {
			if p, err := netport.Parse(e.Port); err == nil && !alerts[p] {
				return
			}
			s.alert(e)
		},
		Log: s.log,
	})
	errc := make(chan error, 1)
	wg.Go(func() { errc <- dsrv.Run(ctx) })
	// A port that cannot be bound fails at once; give it that moment.
	select {
	case err := <-errc:
		if err != nil {
			return err
		}
	case <-time.After(50 * time.Millisecond):
	}
	for _, d := range cfg.Decoys {
		s.log.Info("decoy", "ports", fmt.Sprint(d.Ports), "ban_for", d.BanFor, "banner", d.Banner != "")
	}
	return nil
}

func (s *Server) alert(e alert.Event) {
	s.bans.mu.Lock()
	a := s.bans.alerter
	s.bans.mu.Unlock()
	if a != nil {
		a.Alert(e)
	}
}

// Ban bans src in the kernel for dur and makes the packet path ignore its knocks and SPA
// garbage. never_ban sources are refused.
func (s *Server) Ban(ctx context.Context, src netip.Addr, dur time.Duration, reason string) error {
	src = src.Unmap()
	if s.config().Server.NeverBanned(src) {
		return fmt.Errorf("server: ban %s: in never_ban", src)
	}
	b := s.banner()
	if b == nil {
		return fmt.Errorf("server: ban %s: firewall %s has no bans", src, s.config().Server.Firewall)
	}
	if err := b.Ban(ctx, src, dur); err != nil {
		return fmt.Errorf("server: ban %s: %w", src, err)
	}
	s.bans.mu.Lock()
	if s.bans.banned != nil && (len(s.bans.banned) < maxBanCache || s.bans.has(src, s.deps.Now())) {
		s.bans.banned[src] = banEntry{until: s.deps.Now().Add(dur), reason: reason}
	}
	s.bans.mu.Unlock()
	s.log.Warn("banned", "src", src, "for", dur, "reason", reason)
	s.fanOut(ctx, cluster.Event{Kind: cluster.KindBan, Src: src, Until: s.deps.Now().Add(dur), Reason: reason})
	return nil
}

// has reports whether src is banned at now; mu is held.
func (b *banParts) has(src netip.Addr, now time.Time) bool {
	e, ok := b.banned[src]
	if ok && !now.Before(e.until) {
		delete(b.banned, src)
		return false
	}
	return ok
}

// Unban lifts src's ban; reason is logged.
func (s *Server) Unban(ctx context.Context, src netip.Addr, reason string) (bool, error) {
	src = src.Unmap()
	b := s.banner()
	if b == nil {
		return false, fmt.Errorf("server: unban %s: firewall has no bans", src)
	}
	live, err := b.ListBans(ctx)
	if err != nil {
		return false, fmt.Errorf("server: unban %s: %w", src, err)
	}
	was := slices.ContainsFunc(live, func(l firewall.LiveBan) bool { return l.Src == src })
	if err := b.Unban(ctx, src); err != nil {
		return false, fmt.Errorf("server: unban %s: %w", src, err)
	}
	s.bans.mu.Lock()
	delete(s.bans.banned, src)
	if s.bans.scan != nil {
		s.bans.scan.Forgive(src)
	}
	s.bans.mu.Unlock()
	s.mu.Lock()
	s.cur.machine.Forget(src)
	s.mu.Unlock()
	if was {
		s.log.Warn("ban lifted", "src", src, "reason", reason)
	}
	return was, nil
}

// screen is the packet path's first step: it reports whether p is to be ignored because its
// source is banned (every packet but an SPA one, which may prove a key and lift the ban), and
// feeds scan detection with the rest.
func (s *Server) screen(ctx context.Context, cfg *config.Config, p *capture.Packet, isSPA bool) bool {
	src := p.Src.Unmap()
	now := s.deps.Now()
	s.bans.mu.Lock()
	if s.bans.banned == nil {
		s.bans.mu.Unlock()
		return false
	}
	if !isSPA && s.bans.has(src, now) {
		s.bans.ignored++
		s.bans.mu.Unlock()
		return true
	}
	var v scan.Verdict
	if s.bans.scan != nil && !isSPA && p.Proto != netport.ICMP {
		v = s.bans.scan.Observe(src, netport.Port{Proto: p.Proto, Num: p.DstPort}, p.Time)
	}
	s.bans.mu.Unlock()
	if !v.Ban {
		return false
	}
	reason := fmt.Sprintf("scan: %d ports in %s (offence %d)", v.Ports, cfg.Scan.Window, v.Offences)
	banned := false
	if cfg.Server.NeverBanned(src) {
		s.log.Info("scan from a never_ban source: not banned", "src", src, "ports", v.Ports)
	} else if err := s.Ban(context.WithoutCancel(ctx), src, v.For, reason); err != nil {
		s.log.Error("scan ban failed", "src", src, "err", err)
	} else {
		banned = true
	}
	s.alert(alert.Event{Kind: "scan", Src: src, Ports: v.Ports, Banned: banned, BanFor: v.For.Milliseconds(), Reason: reason})
	return banned
}

// spaProved lifts the ban of a source whose SPA packet proved a key.
func (s *Server) spaProved(ctx context.Context, src netip.Addr) {
	src = src.Unmap()
	s.bans.mu.Lock()
	banned := s.bans.banned != nil && s.bans.has(src, s.deps.Now())
	s.bans.mu.Unlock()
	if !banned {
		return
	}
	if _, err := s.Unban(ctx, src, "valid SPA packet"); err != nil {
		s.log.Error("lifting the ban after a valid SPA packet failed", "src", src, "err", err)
	}
}

// Bans lists the live bans as the kernel holds them, with the reason the server knows.
func (s *Server) Bans(ctx context.Context) ([]BanStatus, error) {
	b := s.banner()
	if b == nil {
		return nil, nil
	}
	live, err := b.ListBans(ctx)
	if err != nil {
		return nil, fmt.Errorf("server: list bans: %w", err)
	}
	out := make([]BanStatus, 0, len(live))
	s.bans.mu.Lock()
	for _, l := range live {
		bs := BanStatus{Src: l.Src, Remaining: MillisOf(l.Remaining)}
		if e, ok := s.bans.banned[l.Src]; ok {
			bs.Reason = e.reason
		}
		out = append(out, bs)
	}
	s.bans.mu.Unlock()
	slices.SortFunc(out, func(x, y BanStatus) int { return x.Src.Compare(y.Src) })
	return out, nil
}
