// Package control serves and calls the daemon's control socket: a small HTTP+JSON API on a
// unix socket for sesame status, grant and revoke (docs/CONTROL.md).
package control

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/user"
	"strconv"
	"time"

	"github.com/sesame-knock/sesame/internal/server"
)

// DefaultSocket is where the daemon listens and the client commands connect by default.
const DefaultSocket = "/run/sesame/control.sock"

// DefaultMaxGrant is the longest break-glass grant (sesame grant --for) by default.
const DefaultMaxGrant = 24 * time.Hour

// MaxBody is the largest request body the server reads.
const MaxBody = 64 << 10

// Config is the [control] section of the configuration.
type Config struct {
	// Socket is the unix socket's path; empty means DefaultSocket.
	Socket string
	// Group may read (status, grants, stats, metrics): a group name or a numeric gid. The
	// socket file is owned by it, mode 0660. Empty means the daemon's own group: gid 0 (only
	// root and its group) for a daemon running as root, its primary group otherwise.
	Group string
	// AdminGroup may also change (grant, revoke): a group name or a numeric gid. Empty means
	// only root. Its members must be able to open the socket too (be members of Group).
	AdminGroup string
	// MaxGrant bounds sesame grant --for; zero means DefaultMaxGrant.
	MaxGrant time.Duration
}

// withDefaults returns c with the empty fields filled in.
func (c Config) withDefaults() Config {
	if c.Socket == "" {
		c.Socket = DefaultSocket
	}
	if c.MaxGrant == 0 {
		c.MaxGrant = DefaultMaxGrant
	}
	return c
}

// Check reports the first problem of c: a negative max_grant, or a group that does not exist.
func (c Config) Check() error {
	_, err := c.resolve()
	return err
}

// group is a resolved group: its gid and the name to show.
type group struct {
	gid  int
	name string
}

func (g group) String() string { return g.name }

// rights are a Config resolved against the system's groups.
type rights struct {
	read  group
	admin *group // nil: only root may change
}

// resolve looks up the groups of c.
func (c Config) resolve() (rights, error) {
	c = c.withDefaults()
	if c.MaxGrant < 0 {
		return rights{}, fmt.Errorf("control: max_grant: %v is negative", c.MaxGrant)
	}
	var r rights
	switch {
	case c.Group == "" && os.Geteuid() == 0:
		r.read = group{gid: 0, name: "root"}
	case c.Group == "":
		// A daemon that is not root (the unit's User=sesame) owns the socket with its own
		// group: it could not give it to root's group.
		gid := os.Getegid()
		r.read = group{gid: gid, name: strconv.Itoa(gid)}
		if g, err := user.LookupGroupId(r.read.name); err == nil {
			r.read.name = g.Name
		}
	default:
		g, err := lookupGroup(c.Group)
		if err != nil {
			return rights{}, fmt.Errorf("control: group: %w", err)
		}
		r.read = g
	}
	if c.AdminGroup != "" {
		g, err := lookupGroup(c.AdminGroup)
		if err != nil {
			return rights{}, fmt.Errorf("control: admin_group: %w", err)
		}
		r.admin = &g
	}
	return r, nil
}

// lookupGroup resolves a group name (from /etc/group) or a numeric gid.
func lookupGroup(s string) (group, error) {
	if n, err := strconv.ParseUint(s, 10, 31); err == nil {
		name := s
		if g, err := user.LookupGroupId(s); err == nil {
			name = g.Name
		}
		return group{gid: int(n), name: name}, nil
	}
	g, err := user.LookupGroup(s)
	if err != nil {
		return group{}, fmt.Errorf("no group %q on this system", s)
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return group{}, fmt.Errorf("group %q has gid %q, not a number", s, g.Gid)
	}
	return group{gid: gid, name: g.Name}, nil
}

// Core is what the control socket asks of the running server; *server.Server implements it.
//
// Errors from Grant and Revoke are shown to the operator. An error with a method
// Invalid() bool returning true is the request's fault (a port the server does not protect,
// say) and is answered 400; others are 500.
type Core interface {
	Status(ctx context.Context) (server.Status, error)
	Grants(ctx context.Context) ([]server.GrantStatus, error)
	Grant(ctx context.Context, r server.GrantRequest) error
	Revoke(ctx context.Context, r server.RevokeRequest) (server.RevokeResult, error)
	Stats() server.Stats
}

// Options are the control server's optional parts.
type Options struct {
	// Metrics serves GET /metrics (Prometheus text); nil answers 404.
	Metrics http.Handler
	// Log receives one line per change (with the caller's uid and pid) and per refused
	// request; nil discards.
	Log *slog.Logger
}
