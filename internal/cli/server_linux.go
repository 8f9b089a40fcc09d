package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/sesame-knock/sesame/internal/capture"
	"github.com/sesame-knock/sesame/internal/conntrack"
	"github.com/sesame-knock/sesame/internal/control"
	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/safefile"
	"github.com/sesame-knock/sesame/internal/sdnotify"
	"github.com/sesame-knock/sesame/internal/server"
)

type serverFlags struct {
	config, knockdConf  string
	fwknopConf          string
	stateDir, ctlSocket string
	firewall            string
	iface               string
	logFormat, logLevel string
	check               bool
}

func runServer(ctx context.Context, c *command, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("server", c, stdout)
	var f serverFlags
	fs.StringVar(&f.config, "c", "", "native TOML configuration `FILE`")
	fs.StringVar(&f.config, "config", "", "same as -c")
	fs.StringVar(&f.knockdConf, "knockd-conf", "", "run an existing knockd.conf `FILE` unchanged")
	fs.StringVar(&f.fwknopConf, "fwknop-conf", "", "run an existing fwknopd configuration: `DIR` holding fwknopd.conf and access.conf")
	fs.StringVar(&f.firewall, "firewall", "", "override the firewall backend: "+firewall.KindList())
	fs.StringVar(&f.stateDir, "state-dir", "", "override state_dir, the persistent `DIR` of the replay cache (default /var/lib/sesame)")
	fs.StringVar(&f.ctlSocket, "control-socket", "", "override [control] socket, the `PATH` of the control socket (default "+control.DefaultSocket+")")
	fs.StringVar(&f.iface, "i", "", "watch only this `INTERFACE` (overrides the config, as knockd's -i)")
	fs.StringVar(&f.logFormat, "log-format", "text", "log format on stderr: text or json")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.BoolVar(&f.check, "check", false, "check the configuration, print a summary and exit")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	cfg, err := loadServerConfig(f)
	if err != nil {
		return err
	}
	log, err := newLogger(stderr, f.logFormat, f.logLevel)
	if err != nil {
		return err
	}
	startPprof()
	if f.check {
		printCheck(stdout, cfg)
		return nil
	}
	if missing := missingCaps(); len(missing) > 0 {
		log.Warn("the server needs CAP_NET_ADMIN and CAP_NET_RAW", "missing", strings.Join(missing, " "))
	}
	fw, err := newFirewall(ctx, cfg, log)
	if err != nil {
		return err
	}
	fw = withHostCheck(fw, cfg.Server.Firewall, log)
	intake, err := capture.Open(capture.Config{Interfaces: cfg.Server.Interfaces, Filter: server.Filter(cfg), Logger: log})
	if err != nil {
		fw.Close(ctx, false)
		return fmt.Errorf("open packet capture: %w", err)
	}
	defer intake.Close()
	if cfg.Server.PidFile != "" {
		if err := safefile.WritePid(cfg.Server.PidFile, os.Getpid()); err != nil {
			log.Warn("cannot write pid file", "file", cfg.Server.PidFile, "err", err)
		} else {
			defer os.Remove(cfg.Server.PidFile)
		}
	}
	notify := sdnotify.FromEnv() // systemd's Type=notify (dist/sesame.service); no-op without it
	deps := server.Deps{Firewall: fw, Intake: intake, Logger: log, Version: versionString(),
		KillConns: conntrack.Kill, MaxOperatorGrant: cfg.Control.MaxGrant,
		Ready: func() { notifyLog(log, notify.Ready()) }}
	fl, err := joinFleet(cfg, &deps, log)
	if err != nil {
		return err
	}
	defer fl.close()
	srv, err := server.New(cfg, deps)
	if err != nil {
		return err
	}
	fl.attach(srv)
	ops, err := openOps(cfg, srv, log)
	if err != nil {
		fw.Close(ctx, false)
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	defer ops.serve(ctx)() // serves now; stops when Run returns
	go notify.RunWatchdog(ctx, func(err error) { notifyLog(log, err) })
	go func() { <-ctx.Done(); notifyLog(log, notify.Stopping()) }()
	stopHUP := reloadOnHUP(ctx, f, cfg.Source, srv, log, notify)
	defer stopHUP()
	return srv.Run(ctx)
}
