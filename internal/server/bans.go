package server

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sesame-knock/sesame/internal/alert"
	"github.com/sesame-knock/sesame/internal/capture"
	"github.com/sesame-knock/sesame/internal/cluster"
	"github.com/sesame-knock/sesame/internal/config"
	"github.com/sesame-knock/sesame/internal/decoy"
	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/knock"
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
	scanCfg scanKey // what scan was built from
	alerter *alert.Alerter
	decoys  *decoy.Server
	// decoyAlerts says which decoy ports alert; decoySYN holds the TCP decoy ports, true for
	// those that are no knock or guard port too (their SYNs go nowhere else).
	decoyAlerts map[netport.Port]bool
	decoySYN    map[uint16]bool
	ignored     uint64            // packets from banned sources ignored
	added       map[string]uint64 // bans added, by BanReason*
	lifted      map[string]uint64 // bans lifted, by Lift*
}

type banEntry struct {
	until  time.Time
	reason string
}

// scanKey is what a scan detector is built from: a reload keeps the detector (and the
// offences it remembers) unless it changes.
type scanKey struct {
	cfg        *config.Scan
	maxSources int
}

func (k scanKey) equal(o scanKey) bool {
	if (k.cfg == nil) != (o.cfg == nil) || k.maxSources != o.maxSources {
		return false
	}
	return k.cfg == nil || k.cfg.Window == o.cfg.Window && k.cfg.Threshold == o.cfg.Threshold &&
		k.cfg.Forget == o.cfg.Forget && slices.Equal(k.cfg.BanFor, o.cfg.BanFor)
}

// Reasons a ban is added or lifted, the label values of the ban metrics.
const (
	BanReasonDecoy = "decoy"
	BanReasonScan  = "scan"
	banReasonOther = "other"
	LiftSPA        = "spa"
	LiftRevoke     = "revoke"
	LiftExpired    = "expired"
)

// banKind classifies a ban's reason text.
func banKind(reason string) string {
	switch {
	case strings.HasPrefix(reason, "decoy"):
		return BanReasonDecoy
	case strings.HasPrefix(reason, "scan"):
		return BanReasonScan
	}
	return banReasonOther
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
	}
	a := alert.New(alert.Options{URL: cfg.Alert.URL, Secret: cfg.Alert.Secret, Interval: cfg.Alert.Interval, Log: s.log, Now: s.deps.Now})
	wg.Go(func() { a.Run(ctx) })
	dsrv := decoy.New(decoy.Options{
		Decoys:   decoysOf(cfg),
		Ban:      s.Ban,
		NeverBan: func(a netip.Addr) bool { return s.config().Server.NeverBanned(a) },
		Alert: func(e alert.Event) {
			s.bans.mu.Lock()
			p, err := netport.Parse(e.Port)
			off := err == nil && !s.bans.decoyAlerts[p]
			s.bans.mu.Unlock()
			if !off {
				s.alert(e)
			}
		},
		Log: s.log,
		Now: s.deps.Now,
	})
	s.bans.mu.Lock()
	s.bans.alerter, s.bans.decoys = a, dsrv
	s.setBans(cfg)
	s.bans.mu.Unlock()
	if err := dsrv.Start(ctx); err != nil {
		return err
	}
	wg.Go(dsrv.Wait)
	s.logBans(cfg, nil)
	return nil
}

// setBans makes the scan detector, the alert target and the decoy port sets those of cfg;
// bans.mu is held. Live bans are kept.
func (s *Server) setBans(cfg *config.Config) {
	b := &s.bans
	if k := (scanKey{cfg.Scan, cfg.Server.MaxSources}); !k.equal(b.scanCfg) || (b.scan == nil) != (cfg.Scan == nil) {
		b.scan, b.scanCfg = nil, k
		if sc := cfg.Scan; sc != nil {
			b.scan = scan.New(scan.Config{Window: sc.Window, Threshold: sc.Threshold, BanFor: sc.BanFor, Forget: sc.Forget, MaxSources: cfg.Server.MaxSources})
		}
	}
	b.alerter.Configure(cfg.Alert.URL, cfg.Alert.Secret, cfg.Alert.Interval)
	b.decoyAlerts, b.decoySYN = map[netport.Port]bool{}, map[uint16]bool{}
	other := filterWithoutDecoys(cfg)
	for _, d := range cfg.Decoys {
		for _, p := range d.Ports {
			b.decoyAlerts[p] = d.Alert
			if p.Proto == netport.TCP {
				b.decoySYN[p.Num] = !other(p.Num)
			}
		}
	}
}

// filterWithoutDecoys reports whether a TCP port is a knock or guard port of cfg.
func filterWithoutDecoys(cfg *config.Config) func(uint16) bool {
	f := Filter(cfg)
	return func(n uint16) bool {
		for _, k := range f.Knocks {
			if k.Port.Proto == netport.TCP && k.Port.Num == n {
				return true
			}
		}
		for _, g := range f.Guards {
			if g.Proto == netport.TCP && g.Lo <= n && n <= g.Hi {
				return true
			}
		}
		return false
	}
}

func decoysOf(cfg *config.Config) []decoy.Decoy {
	var ds []decoy.Decoy
	for _, d := range cfg.Decoys {
		ds = append(ds, decoy.Decoy{Ports: d.Ports, BanFor: d.BanFor, Banner: d.Banner})
	}
	return ds
}

// logBans logs the decoys and scan detection of cfg (at start, or on a reload what changed
// from running).
func (s *Server) logBans(cfg, running *config.Config) {
	if s.banner() == nil && (len(cfg.Decoys) > 0 || cfg.Scan != nil) {
		s.log.Warn("firewall has no bans: decoys and scan detection only alert", "firewall", cfg.Server.Firewall)
	}
	if running != nil && slices.EqualFunc(cfg.Decoys, running.Decoys, func(a, b config.Decoy) bool {
		return slices.Equal(a.Ports, b.Ports) && a.BanFor == b.BanFor && a.Banner == b.Banner && a.Alert == b.Alert
	}) && (scanKey{cfg.Scan, 0}).equal(scanKey{running.Scan, 0}) && cfg.Alert.URL == running.Alert.URL &&
		cfg.Alert.Interval == running.Alert.Interval && string(cfg.Alert.Secret) == string(running.Alert.Secret) {
		return
	}
	for _, d := range cfg.Decoys {
		s.log.Info("decoy", "ports", fmt.Sprint(d.Ports), "ban_for", d.BanFor, "banner", d.Banner != "")
	}
	if sc := cfg.Scan; sc != nil {
		s.log.Info("scan detection", "window", sc.Window, "threshold", sc.Threshold, "ban_for", fmt.Sprint(sc.BanFor))
	}
	if running != nil {
		s.log.Info("decoys, scan detection and alerts reloaded", "decoys", len(cfg.Decoys), "scan", cfg.Scan != nil, "webhook", cfg.Alert.URL != "")
	}
}

// reloadBans switches the decoys, scan detection and alert target to cfg. Only the decoy
// listeners can fail (a new port that cannot be bound); then nothing changes.
func (s *Server) reloadBans(cfg, running *config.Config) error {
	s.bans.mu.Lock()
	d := s.bans.decoys
	s.bans.mu.Unlock()
	if d == nil {
		return errors.New("decoys: not running")
	}
	if err := d.Set(decoysOf(cfg)); err != nil {
		return err
	}
	s.bans.mu.Lock()
	s.setBans(cfg)
	s.bans.mu.Unlock()
	s.logBans(cfg, running)
	return nil
}

// decoyTouch hands a SYN to a TCP decoy port to the decoys, which alert when its handshake
// does not complete. It reports whether the packet is done with: a decoy port that is no
// knock or guard port, or a banned source.
func (s *Server) decoyTouch(p *capture.Packet) bool {
	if p.Proto != netport.TCP || p.TCPFlags&(knock.SYN|knock.ACK) != knock.SYN {
		return false
	}
	src := p.Src.Unmap()
	s.bans.mu.Lock()
	only, ok := s.bans.decoySYN[p.DstPort]
	if !ok {
		s.bans.mu.Unlock()
		return false
	}
	if s.bans.banned != nil && s.bans.has(src, s.deps.Now()) {
		s.bans.ignored++
		s.bans.mu.Unlock()
		return true
	}
	d := s.bans.decoys
	s.bans.mu.Unlock()
	if d != nil {
		d.Touch(src, netport.Port{Proto: netport.TCP, Num: p.DstPort}, p.Time)
	}
	return only
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
	kind := banKind(reason)
	count(&s.bans.added, kind)
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
		count(&b.lifted, LiftExpired)
		return false
	}
	return ok
}

// expireBans forgets the bans that ran out at now, counting them; bans.mu is not held.
func (s *Server) expireBans(now time.Time) {
	s.bans.mu.Lock()
	defer s.bans.mu.Unlock()
	for src := range s.bans.banned {
		s.bans.has(src, now)
	}
}

// Unban lifts src's ban; reason is logged. A reason that starts with "valid SPA" is counted as
// lifted by SPA, any other as revoked.
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
	if was {
		lift := LiftRevoke
		if strings.HasPrefix(reason, "valid SPA") {
			lift = LiftSPA
		}
		count(&s.bans.lifted, lift)
	}
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

// BanStats are the bans' and alerts' counters, for metrics. Added and Lifted are by reason
// (BanReason*, Lift*); Active counts the bans the server knows to be live now.
type BanStats struct {
	Added   map[string]uint64 `json:"added"`
	Lifted  map[string]uint64 `json:"lifted"`
	Active  int               `json:"active"`
	Ignored uint64            `json:"ignored"` // packets from banned sources ignored
	Alerts  alert.Stats       `json:"alerts"`
	Touches decoy.Stats       `json:"decoy_touches"`
}

// banStats returns a snapshot of the ban counters.
func (s *Server) banStats() BanStats {
	s.expireBans(s.deps.Now())
	s.bans.mu.Lock()
	out := BanStats{Added: map[string]uint64{}, Lifted: map[string]uint64{}, Active: len(s.bans.banned), Ignored: s.bans.ignored}
	for _, k := range []string{BanReasonDecoy, BanReasonScan} {
		out.Added[k] = s.bans.added[k]
	}
	for _, k := range []string{LiftSPA, LiftRevoke, LiftExpired} {
		out.Lifted[k] = s.bans.lifted[k]
	}
	a, d := s.bans.alerter, s.bans.decoys
	s.bans.mu.Unlock()
	if a != nil {
		out.Alerts = a.Stats()
	}
	if d != nil {
		out.Touches = d.Stats()
	}
	return out
}

func count(m *map[string]uint64, k string) {
	if *m == nil {
		*m = map[string]uint64{}
	}
	(*m)[k]++
}
