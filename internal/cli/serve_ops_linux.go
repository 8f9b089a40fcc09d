package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/sesame-knock/sesame/internal/config"
	"github.com/sesame-knock/sesame/internal/control"
	"github.com/sesame-knock/sesame/internal/metrics"
	"github.com/sesame-knock/sesame/internal/server"
)

// The operator's surfaces of a running daemon: the control socket (sesame status, grant,
// revoke; /metrics) and the optional [metrics] listener.

func controlConfig(c config.Control) control.Config {
	return control.Config{Socket: c.Socket, Group: c.Group, AdminGroup: c.AdminGroup, MaxGrant: c.MaxGrant}
}

func metricsConfig(m config.Metrics) metrics.Config {
	return metrics.Config{Listen: m.Listen, AllowRemote: m.AllowRemote}
}

// checkOps checks what only the control and metrics packages can judge: that the groups exist
// and that the metrics address may be listened on.
func checkOps(cfg *config.Config) error {
	if err := controlConfig(cfg.Control).Check(); err != nil {
		return &config.Error{File: cfg.Source, Err: err}
	}
	if err := metricsConfig(cfg.Metrics).Check(); err != nil {
		return &config.Error{File: cfg.Source, Err: err}
	}
	return nil
}

// ops are the control socket and metrics listener, open and not yet served.
type ops struct {
	ctl     *control.Server
	metrics net.Listener // nil: [metrics] is off
	handler http.Handler
	log     *slog.Logger
}

// openOps opens the control socket for srv, with the metrics handler at /metrics, and binds
// [metrics] listen when set. A socket on which another daemon answers is an error.
func openOps(cfg *config.Config, srv *server.Server, log *slog.Logger) (*ops, error) {
	h, err := metrics.NewHandler(metrics.Options{
		Snapshot: srv.Stats,
		Build:    metrics.Build{Version: versionString(), Firewall: string(cfg.Server.Firewall)},
		Started:  time.Now(),
	})
	if err != nil {
		return nil, err
	}
	ctl, err := control.Open(controlConfig(cfg.Control), srv, control.Options{Metrics: h, Log: log})
	if err != nil {
		return nil, err
	}
	o := &ops{ctl: ctl, handler: h, log: log}
	if cfg.Metrics.Listen != "" {
		if o.metrics, err = metrics.Listen(metricsConfig(cfg.Metrics), log); err != nil {
			ctl.Close()
			return nil, err
		}
	}
	log.Info("control socket listening", "socket", ctl.Path())
	return o, nil
}

// serve serves the control socket and the metrics listener until ctx ends or the returned
// stop is called; stop waits for both to shut down (the socket is removed).
func (o *ops) serve(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := o.ctl.Serve(ctx); err != nil {
			o.log.Error("control socket stopped", "err", err)
		}
	})
	if o.metrics != nil {
		wg.Go(func() {
			if err := metrics.ServeListener(ctx, o.metrics, o.handler, o.log); err != nil {
				o.log.Error("metrics listener stopped", "err", err)
			}
		})
	}
	return func() {
		cancel()
		wg.Wait()
	}
}

// printOps is the --check summary of [control] and [metrics].
func printOps(w io.Writer, cfg *config.Config) {
	c := cfg.Control
	if c.Socket == "" {
		c.Socket = control.DefaultSocket
	}
	if c.MaxGrant == 0 {
		c.MaxGrant = control.DefaultMaxGrant
	}
	read, admin := "root", "root"
	if c.Group != "" {
		read = "root and group " + c.Group
	}
	if c.AdminGroup != "" {
		admin = "root and group " + c.AdminGroup
	}
	fmt.Fprintf(w, "  control: socket %s, read: %s, change: %s, max_grant %s\n", c.Socket, read, admin, c.MaxGrant)
	if m := cfg.Metrics; m.Listen != "" {
		fmt.Fprintf(w, "  metrics: http://%s/metrics (and on the control socket)\n", m.Listen)
	} else {
		fmt.Fprintln(w, "  metrics: on the control socket only ([metrics] listen is off)")
	}
}
