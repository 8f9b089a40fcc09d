package cli

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/sesame-knock/sesame/internal/cluster"
	"github.com/sesame-knock/sesame/internal/config"
	"github.com/sesame-knock/sesame/internal/replay"
	"github.com/sesame-knock/sesame/internal/server"
)

// fleet is a server's membership of a [cluster] fleet: the node, started once the server's gate
// is in place, and stopped when the server ends.
type fleet struct {
	node *cluster.Node
	srv  *server.Server
	wg   sync.WaitGroup
	stop context.CancelFunc
}

// joinFleet sets deps up for cfg's [cluster] (nothing without one): the replay store claims
// keys in Redis, grants, bans and revocations fan out, and deps.Ready starts the node. attach
// must be called with the server before Run; close after Run.
func joinFleet(cfg *config.Config, deps *server.Deps, log *slog.Logger) (*fleet, error) {
	c := cfg.Cluster
	if c == nil {
		return nil, nil
	}
	b, err := cluster.NewRedis(cluster.RedisOptions{URL: c.Redis, User: c.User, Password: c.Password, Timeout: c.Timeout,
		TLSCAFile: c.TLSCAFile, TLSServerName: c.TLSServerName})
	if err != nil {
		return nil, err
	}
	f := &fleet{}
	f.node = cluster.New(b, cluster.Options{
		Member: c.Member, Groups: config.FleetGroups(cfg), Prefix: c.Prefix, Mode: c.OnRedisDown, Timeout: c.Timeout,
		MaxLen: c.StreamMaxLen, StateDir: cfg.Server.StateDir, Redis: config.RedactURL(c.Redis), Log: log,
		Apply: func(ctx context.Context, ev cluster.Event) error { return f.srv.ApplyFleet(ctx, ev) },
	})
	open := deps.Replay
	if open == nil {
		open = server.OpenReplay
	}
	deps.Replay = func(cfg *config.Config) (replay.Store, error) {
		local, err := open(cfg)
		if err != nil {
			return nil, err
		}
		return f.node.Replay(local), nil
	}
	deps.Fleet = f.node
	ready := deps.Ready
	ctx, cancel := context.WithCancel(context.Background())
	f.stop = cancel
	var once sync.Once
	deps.Ready = func() {
		once.Do(func() { f.wg.Go(func() { f.node.Run(ctx) }) })
		if ready != nil {
			ready()
		}
	}
	log.Info("fleet member", "member", c.Member, "groups", fmt.Sprint(config.FleetGroups(cfg)), "redis", config.RedactURL(c.Redis), "on_redis_down", c.OnRedisDown)
	return f, nil
}

// attach gives the fleet its server.
func (f *fleet) attach(srv *server.Server) {
	if f != nil {
		f.srv = srv
	}
}

// close stops the node and its Redis connections.
func (f *fleet) close() {
	if f == nil {
		return
	}
	f.stop()
	f.wg.Wait()
}

// writeFleet is the fleet part of sesame status.
func writeFleet(b *strings.Builder, tw *tabwriter.Writer, f *cluster.Status) {
	state := "up"
	if !f.Up {
		state = "DOWN (on_redis_down = " + f.Mode + ")"
	}
	fmt.Fprintf(b, "\nFleet: member %s, groups %s, redis %s %s\n", f.Member, strings.Join(f.Groups, ","), f.Redis, state)
	if f.Err != "" {
		fmt.Fprintf(b, "  (members and grants unknown: %s)\n", f.Err)
		return
	}
	fmt.Fprintf(b, "Members: %d\n", len(f.Members))
	fmt.Fprintf(tw, "MEMBER\tGROUPS\tSEEN\n")
	for _, m := range f.Members {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", m.Name, strings.Join(m.Groups, ","), m.Seen.UTC().Format(time.RFC3339))
	}
	tw.Flush()
	if len(f.Grants) > 0 {
		fmt.Fprintf(b, "Fleet grants: %d\n", len(f.Grants))
		fmt.Fprintf(tw, "GROUP\tORIGIN\tBY\tGRANTS\tLEFT\tHELD BY\n")
		for _, g := range f.Grants {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", g.Group, g.Origin, g.By, strings.Join(g.Grants, ","),
				human(time.Until(g.Expires)), strings.Join(g.HeldBy, ","))
		}
		tw.Flush()
	}
}
