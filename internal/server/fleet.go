package server

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/sesame-knock/sesame/internal/capture"
	"github.com/sesame-knock/sesame/internal/cluster"
	"github.com/sesame-knock/sesame/internal/firewall"
)

// Fleet shares grants, bans and revocations with the other members of this server's groups
// (cluster.Node in production).
type Fleet interface {
	// Publish queues ev for the fleet without waiting.
	Publish(ev cluster.Event)
	// Status is the fleet as Redis knows it.
	Status(ctx context.Context) cluster.Status
	// Totals are this member's own counters and whether it sees Redis, without asking Redis.
	Totals() cluster.Totals
}

// GrantFleet is a grant another member of a group made and this one applied.
const GrantFleet GrantKind = "fleet"

// fromFleet marks a context whose work applies another member's event: it is not published
// again.
type fromFleet struct{}

func isFromFleet(ctx context.Context) bool { return ctx.Value(fromFleet{}) != nil }

// groupOf is the fleet group of the door or SPA client by (kind says which), "" for none.
func (s *Server) groupOf(kind GrantKind, by string) string {
	cfg := s.config()
	switch kind {
	case GrantDoor:
		for _, d := range cfg.Doors {
			if d.Name == by {
				return d.Group
			}
		}
	case GrantSPA:
		if cfg.SPA == nil {
			return ""
		}
		for _, c := range cfg.SPA.Clients {
			if c.Name == by {
				return c.Group
			}
		}
	}
	return ""
}

// fanOutGrant publishes grants a door or client of a group made here, with their absolute
// expiry.
func (s *Server) fanOutGrant(ctx context.Context, kind GrantKind, by string, grants []firewall.Grant, now time.Time) {
	if s.deps.Fleet == nil || isFromFleet(ctx) {
		return
	}
	group := s.groupOf(kind, by)
	if group == "" {
		return
	}
	ev := cluster.Event{Kind: cluster.KindGrant, Group: group, By: by}
	for _, g := range grants {
		ev.Grants = append(ev.Grants, cluster.Grant{Src: g.Src, Port: g.Port, Expires: now.Add(g.Timeout)})
	}
	s.deps.Fleet.Publish(ev)
}

// fanOut publishes a ban, unban or revocation made here to this member's groups.
func (s *Server) fanOut(ctx context.Context, ev cluster.Event) {
	if s.deps.Fleet == nil || isFromFleet(ctx) {
		return
	}
	s.deps.Fleet.Publish(ev)
}

// errNotRunning refuses fleet events before Run applied the gate (they are read again).
var errNotRunning = fmt.Errorf("server not running: %w", cluster.ErrNotReady)

// ApplyFleet applies another member's event here: a grant for the time it has left (only on
// ports this member protects, at most Deps.MaxOperatorGrant), a ban, an unban or a
// revocation. What it applies is not published again.
func (s *Server) ApplyFleet(ctx context.Context, ev cluster.Event) error {
	s.reloadMu.Lock()
	running := s.run != nil
	s.reloadMu.Unlock()
	if !running {
		return errNotRunning
	}
	ctx = context.WithValue(ctx, fromFleet{}, true)
	now := s.deps.Now()
	switch ev.Kind {
	case cluster.KindGrant:
		protected := Gate(s.config()).Protected
		var grants []firewall.Grant
		for _, g := range ev.Grants {
			left := g.Expires.Sub(now)
			switch why := capture.SourceProblem(g.Src); {
			case left <= 0:
				continue
			case why != "":
				return fmt.Errorf("server: fleet grant: source %s: %s", g.Src, why)
			case !slices.Contains(protected, g.Port):
				return fmt.Errorf("server: fleet grant: %s is not a protected port here", g.Port)
			}
			grants = append(grants, firewall.Grant{Src: g.Src, Port: g.Port, Timeout: min(left, s.deps.MaxOperatorGrant)})
		}
		if len(grants) == 0 {
			return nil
		}
		by := ev.By + "@" + ev.Origin
		if err := s.grant(ctx, GrantFleet, by, "group "+ev.Group, grants, time.Time{}); err != nil {
			return fmt.Errorf("server: fleet grant: %w", err)
		}
		if s.grantLogs.Allow() {
			s.log.Info("fleet grant applied", "by", ev.By, "origin", ev.Origin, "group", ev.Group, "grants", fmt.Sprint(grants))
		}
		return nil
	case cluster.KindBan:
		return s.Ban(ctx, ev.Src, ev.Until.Sub(now), "fleet: "+ev.Origin+": "+ev.Reason)
	case cluster.KindUnban:
		_, err := s.Unban(ctx, ev.Src, "fleet: "+ev.Origin)
		return err
	case cluster.KindRevoke:
		req := RevokeRequest{Src: ev.Src, Port: ev.Port, All: ev.All, Kill: ev.Kill && s.deps.KillConns != nil}
		_, err := s.Revoke(ctx, req)
		return err
	}
	return fmt.Errorf("server: fleet: unknown event %q", ev.Kind)
}

// fanOutRevoke publishes an operator's revocation.
func (s *Server) fanOutRevoke(ctx context.Context, req RevokeRequest) {
	ev := cluster.Event{Kind: cluster.KindRevoke, Src: req.Src, Port: req.Port, All: req.All, Kill: req.Kill}
	if req.Ban {
		ev = cluster.Event{Kind: cluster.KindUnban, Src: req.Src}
	}
	s.fanOut(ctx, ev)
}

// fleetStatus is the fleet part of Status (nil when alone).
func (s *Server) fleetStatus(ctx context.Context) *cluster.Status {
	if s.deps.Fleet == nil {
		return nil
	}
	st := s.deps.Fleet.Status(ctx)
	return &st
}
