package server

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/sesame-knock/sesame/internal/capture"
	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/netport"
)

// The operator API (api.go's types): what the control socket and the metrics exporter ask of a
// running Server.

// OperatorName is the By of an operator's grants, and their name in Stats.Grants.
const OperatorName = "operator"

// Errors of the operator API, wrapped with detail.
var (
	ErrBadRequest = errors.New("bad request")
	ErrNoKill     = errors.New("cannot end connections: no connection tracking in this server")
)

// Status returns the server's state: configuration, doors, SPA clients and live grants.
func (s *Server) Status(ctx context.Context) (Status, error) {
	now := s.deps.Now()
	st := s.state()
	cfg := st.cfg
	out := Status{
		Version:  s.deps.Version,
		Started:  s.started,
		Uptime:   MillisOf(now.Sub(s.started)),
		Firewall: string(cfg.Server.Firewall),
		Config:   cfg.Source,
		Doors:    make([]DoorStatus, 0, len(cfg.Doors)),
	}
	for _, d := range cfg.Doors {
		ds := DoorStatus{Name: d.Name, OpenFor: MillisOf(d.OpenFor), Opened: s.grants.openings(d.Name),
			Commands: d.StartCommand != "" || d.StartCommand6 != "" || d.StopCommand != "" || d.StopCommand6 != ""}
		for _, e := range d.Sequence {
			ds.Sequence = append(ds.Sequence, e.String())
		}
		if r := d.Rotate; r != nil {
			ds.Rotate = fmt.Sprintf("%s/%d-%d x%d every %v", r.Proto, r.Lo, r.Hi, r.Length, r.Period)
		}
		for _, p := range d.Open {
			ds.Open = append(ds.Open, p.String())
		}
		out.Doors = append(out.Doors, ds)
	}
	if cfg.SPA != nil {
		sp := &SPAStatus{Listen: netport.Port{Proto: netport.UDP, Num: cfg.SPA.Port}.String(), Sniff: cfg.SPA.Sniff, ICMP: cfg.SPA.ICMP}
		var counts map[string]spaClientCounts
		if pol := s.spa.live.Load(); pol != nil {
			counts = map[string]spaClientCounts{}
			for name, c := range pol.Clients() {
				counts[name] = spaClientCounts{c.Accepted, c.Refused}
			}
		}
		for _, c := range cfg.SPA.Clients {
			n := counts[c.Name]
			sp.Clients = append(sp.Clients, SPAClientStatus{Name: c.Name, Format: c.Format, Accepted: n.accepted, Refused: n.refused})
		}
		out.SPA = sp
	}
	s.mu.Lock()
	out.InProgress = s.cur.machine.Stats().Sources
	s.mu.Unlock()
	grants, err := s.Grants(ctx)
	if err != nil {
		return out, err
	}
	out.Grants = grants
	if out.Bans, err = s.Bans(ctx); err != nil {
		return out, err
	}
	out.Fleet = s.fleetStatus(ctx)
	return out, nil
}

type spaClientCounts struct{ accepted, refused uint64 }

// Grants lists the live grants as the kernel holds them, each attributed to the door, SPA
// client or operator that made it; GrantKernel for those this server did not make.
func (s *Server) Grants(ctx context.Context) ([]GrantStatus, error) {
	live, err := s.deps.Firewall.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("server: list grants: %w", err)
	}
	now := s.deps.Now()
	out := make([]GrantStatus, 0, len(live))
	for _, g := range live {
		gs := GrantStatus{Src: g.Src, Port: g.Port, Remaining: MillisOf(g.Remaining), Kind: GrantKernel}
		if o, ok := s.grants.lookup(g.Src, g.Port, now); ok {
			gs.Kind, gs.By, gs.Note = o.kind, o.by, o.note
		}
		out = append(out, gs)
	}
	fwds, err := s.liveForwards(ctx)
	if err != nil {
		return nil, fmt.Errorf("server: list forwards: %w", err)
	}
	for _, f := range fwds {
		gs := GrantStatus{Src: f.Src, Port: f.Port, Remaining: MillisOf(f.Timeout), Kind: GrantKernel, To: forwardTo(f)}
		if o, ok := s.grants.lookup(f.Src, f.Port, now); ok {
			gs.Kind, gs.By, gs.Note = o.kind, o.by, o.note
		}
		out = append(out, gs)
	}
	return out, nil
}

// forwardTo is the status form of a forward's destination.
func forwardTo(f firewall.Grant) string {
	if f.To.Addr().IsUnspecified() {
		return fmt.Sprintf("local:%d", f.To.Port())
	}
	return f.To.String()
}

// Grant applies an operator's break-glass grant: one protected port for one source, for at
// most Deps.MaxOperatorGrant. It is logged with the caller's uid and note.
func (s *Server) Grant(ctx context.Context, req GrantRequest) error {
	d := req.For.Duration()
	switch why := capture.SourceProblem(req.Src); {
	case !req.Src.IsValid():
		return fmt.Errorf("server: grant: %w: no source address", ErrBadRequest)
	case why != "":
		return fmt.Errorf("server: grant: %w: source %s: %s", ErrBadRequest, req.Src, why)
	case d < time.Millisecond:
		return fmt.Errorf("server: grant: %w: a duration of at least 1ms is required", ErrBadRequest)
	case d > s.deps.MaxOperatorGrant:
		return fmt.Errorf("server: grant: %w: %v is longer than the maximum operator grant, %v ([control] max_grant)", ErrBadRequest, d, s.deps.MaxOperatorGrant)
	case !slices.Contains(Gate(s.config()).Protected, req.Port):
		return fmt.Errorf("server: grant: %w: %s is not a protected port", ErrBadRequest, req.Port)
	}
	g := firewall.Grant{Src: req.Src, Port: req.Port, Timeout: d}
	if err := s.grant(ctx, GrantOperator, OperatorName, req.Note, []firewall.Grant{g}, time.Time{}); err != nil {
		s.log.Error("operator grant failed", "src", req.Src, "port", req.Port.String(), "for", d, "uid", req.UID, "note", req.Note, "err", err)
		return fmt.Errorf("server: grant: %w", err)
	}
	s.log.Warn("operator grant", "src", req.Src, "port", req.Port.String(), "for", d, "uid", req.UID, "note", req.Note)
	return nil
}

// Revoke removes grants from the kernel at once: one source's grant on one port, all of one
// source's (Port zero), or every grant (All). With Kill it also ends the matching sources'
// established connections to the protected ports (to Port alone when given) through
// Deps.KillConns; without that hook Kill is refused before anything is removed.
func (s *Server) Revoke(ctx context.Context, req RevokeRequest) (RevokeResult, error) {
	const op = "server: revoke"
	var res RevokeResult
	if req.Ban {
		if !req.Src.IsValid() || req.All || !req.Port.IsZero() || req.Kill {
			return res, fmt.Errorf("%s: %w: a ban is lifted for one source, without all, port or kill", op, ErrBadRequest)
		}
		was, err := s.Unban(ctx, req.Src, fmt.Sprintf("operator (uid %d)", req.UID))
		if err != nil {
			return res, fmt.Errorf("%s: %w", op, err)
		}
		if was {
			res.Bans = 1
		}
		s.fanOutRevoke(ctx, req)
		return res, nil
	}
	switch {
	case req.All && (req.Src.IsValid() || !req.Port.IsZero()):
		return res, fmt.Errorf("%s: %w: all excludes a source and a port", op, ErrBadRequest)
	case !req.All && !req.Src.IsValid():
		return res, fmt.Errorf("%s: %w: a source, or all", op, ErrBadRequest)
	case req.Kill && s.deps.KillConns == nil:
		return res, fmt.Errorf("%s: %w", op, ErrNoKill)
	}
	live, err := s.deps.Firewall.List(ctx)
	if err != nil {
		return res, fmt.Errorf("%s: list grants: %w", op, err)
	}
	var gone []firewall.Grant
	for _, g := range live {
		if req.All || (g.Src == req.Src && (req.Port.IsZero() || g.Port == req.Port)) {
			gone = append(gone, firewall.Grant{Src: g.Src, Port: g.Port})
		}
	}
	fwds, err := s.liveForwards(ctx)
	if err != nil {
		return res, fmt.Errorf("%s: list forwards: %w", op, err)
	}
	var fgone []firewall.Grant
	for _, f := range fwds {
		if req.All || (f.Src == req.Src && (req.Port.IsZero() || f.Port == req.Port)) {
			fgone = append(fgone, f)
		}
	}
	if len(gone) > 0 {
		if err := s.deps.Firewall.Revoke(ctx, gone...); err != nil {
			s.log.Error("operator revoke failed", "src", req.Src, "all", req.All, "uid", req.UID, "err", err)
			return res, fmt.Errorf("%s: %w", op, err)
		}
		s.grants.forget(gone)
	}
	if len(fgone) > 0 {
		if err := s.forwarder().Unforward(ctx, fgone...); err != nil {
			s.log.Error("operator revoke failed: forwards", "src", req.Src, "all", req.All, "uid", req.UID, "err", err)
			return res, fmt.Errorf("%s: forwards: %w", op, err)
		}
		s.grants.forget(fgone)
		for _, f := range fgone {
			gone = append(gone, firewall.Grant{Src: f.Src, Port: f.Port})
		}
	}
	res.Grants = len(gone)
	if req.Kill {
		ports := Gate(s.config()).Protected
		if !req.Port.IsZero() {
			ports = []netport.Port{req.Port}
		}
		var srcs []netip.Addr
		if req.All {
			for _, g := range gone {
				if !slices.Contains(srcs, g.Src) {
					srcs = append(srcs, g.Src)
				}
			}
		} else {
			srcs = []netip.Addr{req.Src}
		}
		for _, src := range srcs {
			n, kerr := s.deps.KillConns(ctx, src, ports)
			res.Killed += n
			if kerr != nil {
				err = errors.Join(err, fmt.Errorf("end connections of %s: %w", src, kerr))
			}
		}
	}
	args := []any{"grants", res.Grants, "uid", req.UID}
	if req.All {
		args = append(args, "all", true)
	} else {
		args = append(args, "src", req.Src)
	}
	if !req.Port.IsZero() {
		args = append(args, "port", req.Port.String())
	}
	if req.Kill {
		args = append(args, "killed", res.Killed)
	}
	if err != nil {
		s.log.Error("operator revoke: grants removed, connections not all ended", append(args, "err", err)...)
		return res, fmt.Errorf("%s: %w", op, err)
	}
	s.log.Warn("operator revoke", args...)
	s.fanOutRevoke(ctx, req)
	return res, nil
}
