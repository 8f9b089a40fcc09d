package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"log/syslog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sesame-knock/sesame/internal/capture"
	"github.com/sesame-knock/sesame/internal/config"
	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/firewall/ipt"
	"github.com/sesame-knock/sesame/internal/firewall/nft"
	"github.com/sesame-knock/sesame/internal/firewall/none"
	"github.com/sesame-knock/sesame/internal/knock"
	"github.com/sesame-knock/sesame/internal/knockdconf"
	"github.com/sesame-knock/sesame/internal/server"
)

type serverFlags struct {
	config, knockdConf  string
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
	fs.StringVar(&f.firewall, "firewall", "", "override the firewall backend: nftables, iptables or none")
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
	load := func() (*config.Config, error) { return loadServerConfig(f) }
	cfg, err := load()
	if err != nil {
		return err
	}
	log, err := newLogger(stderr, f.logFormat, f.logLevel)
	if err != nil {
		return err
	}
	if f.check {
		fmt.Fprintf(stdout, "%s: ok: %d door(s), firewall %s\n", cfg.Source, len(cfg.Doors), cfg.Server.Firewall)
		for _, d := range cfg.Doors {
			fmt.Fprintf(stdout, "  door %q: sequence %v, timeout %s, open %v for %s\n", d.Name, d.Sequence, d.Timeout, d.Open, d.OpenFor)
		}
		return nil
	}
	if os.Geteuid() != 0 {
		log.Warn("not running as root: the server needs CAP_NET_ADMIN and CAP_NET_RAW")
	}

	fw, err := newFirewall(cfg.Server.Firewall)
	if err != nil {
		return err
	}
	intake, err := capture.Open(capture.Config{Interfaces: cfg.Server.Interfaces, Filter: server.Filter(cfg), Logger: log})
	if err != nil {
		fw.Close(ctx, false)
		return fmt.Errorf("open packet capture: %w (run as root or grant CAP_NET_RAW)", err)
	}
	defer intake.Close()

	kl, err := newKnockdLog(cfg)
	if err != nil {
		fw.Close(ctx, false)
		return err
	}
	defer kl.Close()
	if cfg.Server.PidFile != "" {
		if err := os.WriteFile(cfg.Server.PidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			log.Warn("cannot write pid file", "file", cfg.Server.PidFile, "err", err)
		} else {
			defer os.Remove(cfg.Server.PidFile)
		}
	}
	srv, err := server.New(cfg, server.Deps{Firewall: fw, Intake: intake, Logger: log, KnockdLog: kl.Line, OneTime: oneTime{}})
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				log.Info("SIGHUP: reloading configuration", "source", cfg.Source)
				kl.Line("re-reading config file: " + cfg.Source)
				next, err := load()
				if err != nil {
					log.Error("reload failed; keeping the running configuration", "err", err)
					continue
				}
				if next.Server.Firewall != cfg.Server.Firewall {
					log.Error("reload: the firewall backend cannot change without a restart; keeping the running configuration", "running", cfg.Server.Firewall, "new", next.Server.Firewall)
					continue
				}
				if err := srv.Reload(ctx, next); err != nil {
					log.Error("reload failed", "err", err)
				}
			}
		}
	}()
	kl.Line("starting up, listening on " + ifaceList(cfg.Server.Interfaces))
	err = srv.Run(ctx)
	kl.Line("shutting down")
	return err
}

func ifaceList(ifs []string) string {
	if len(ifs) == 0 {
		return "all interfaces"
	}
	return strings.Join(ifs, ",")
}

func loadServerConfig(f serverFlags) (*config.Config, error) {
	var cfg *config.Config
	var err error
	switch {
	case f.config != "" && f.knockdConf != "":
		return nil, usagef("-c and --knockd-conf cannot be used together")
	case f.config != "":
		cfg, err = config.Load(f.config)
	case f.knockdConf != "":
		cfg, err = knockdconf.Load(f.knockdConf)
	default:
		return nil, usagef("a configuration is required: -c FILE or --knockd-conf FILE")
	}
	if err != nil {
		return nil, err
	}
	if f.knockdConf != "" && f.firewall == "" && len(server.OpenPorts(cfg)) > 0 {
		return nil, usagef("%s: doors name ports to open (Open = %v): choose sesame's gate with --firewall nftables or --firewall iptables", f.knockdConf, server.OpenPorts(cfg))
	}
	if f.firewall != "" {
		switch f.firewall {
		case config.FirewallNftables, config.FirewallIptables, config.FirewallNone:
		default:
			return nil, usagef("--firewall %q: want nftables, iptables or none", f.firewall)
		}
		if f.firewall == config.FirewallNone && len(server.OpenPorts(cfg)) > 0 {
			return nil, usagef("--firewall none: doors open ports %v; firewall none can only run commands", server.OpenPorts(cfg))
		}
		cfg.Server.Firewall = f.firewall
	}
	if f.iface != "" {
		cfg.Server.Interfaces = []string{f.iface}
	}
	return cfg, nil
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, usagef("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usagef("--log-format %q: want text or json", format)
}

func newFirewall(kind string) (firewall.Backend, error) {
	switch kind {
	case config.FirewallNftables:
		b, err := nft.New(nft.Options{})
		if err != nil {
			return nil, fmt.Errorf("nftables firewall: %w", err)
		}
		return b, nil
	case config.FirewallIptables:
		b, err := ipt.New(ipt.Options{})
		if err != nil {
			return nil, fmt.Errorf("iptables firewall: %w", err)
		}
		return b, nil
	case config.FirewallNone:
		return none.New(), nil
	}
	return nil, fmt.Errorf("unknown firewall backend %q", kind)
}

// knockdLog writes knockd-style lines to the LogFile and to syslog, as knockd does.
type knockdLog struct {
	mu     sync.Mutex
	file   *os.File
	syslog *syslog.Writer
}

func newKnockdLog(cfg *config.Config) (*knockdLog, error) {
	k := &knockdLog{}
	if cfg.Server.LogFile != "" {
		f, err := os.OpenFile(cfg.Server.LogFile, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o640)
		if err != nil {
			return nil, fmt.Errorf("log file: %w", err)
		}
		k.file = f
	}
	if cfg.Server.UseSyslog {
		w, err := syslog.New(syslog.LOG_NOTICE|syslog.LOG_USER, "sesame")
		if err == nil {
			k.syslog = w
		}
	}
	return k, nil
}

// Line writes one event line.
func (k *knockdLog) Line(s string) {
	if k == nil {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.file != nil {
		fmt.Fprintf(k.file, "[%s] %s\n", time.Now().Format("2006-01-02 15:04"), s)
	}
	if k.syslog != nil {
		k.syslog.Notice(s)
	}
}

func (k *knockdLog) Close() error {
	var errs []error
	if k.file != nil {
		errs = append(errs, k.file.Close())
	}
	if k.syslog != nil {
		errs = append(errs, k.syslog.Close())
	}
	return errors.Join(errs...)
}

// oneTime consumes knockd one-time sequence files.
type oneTime struct{}

func (oneTime) Consume(path string, used []knock.Element) ([]knock.Element, error) {
	if err := knockdconf.ConsumeOneTime(path, used); err != nil {
		return nil, err
	}
	next, err := knockdconf.NextOneTime(path)
	if err != nil {
		// No valid line left: the door is disabled.
		return nil, nil
	}
	return next, nil
}
