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
	"path/filepath"
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
	"github.com/sesame-knock/sesame/internal/fwknopconf"
	"github.com/sesame-knock/sesame/internal/knock"
	"github.com/sesame-knock/sesame/internal/knockdconf"
	"github.com/sesame-knock/sesame/internal/replay"
	"github.com/sesame-knock/sesame/internal/server"
	"github.com/sesame-knock/sesame/internal/spapolicy"
	"github.com/sesame-knock/sesame/internal/udpintake"
)

type serverFlags struct {
	config, knockdConf  string
	fwknopConf          string
	stateDir            string
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
	fs.StringVar(&f.firewall, "firewall", "", "override the firewall backend: nftables, iptables or none")
	fs.StringVar(&f.stateDir, "state-dir", "", "override state_dir, the persistent `DIR` of the replay cache (default /var/lib/sesame)")
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
	startPprof()
	if f.check {
		fmt.Fprintf(stdout, "%s: ok: %d door(s), firewall %s\n", cfg.Source, len(cfg.Doors), cfg.Server.Firewall)
		for _, d := range cfg.Doors {
			fmt.Fprintf(stdout, "  door %q: sequence %v, timeout %s, open %v for %s\n", d.Name, d.Sequence, d.Timeout, d.Open, d.OpenFor)
		}
		printSPA(stdout, cfg)
		return nil
	}
	if os.Geteuid() != 0 {
		log.Warn("not running as root: the server needs CAP_NET_ADMIN and CAP_NET_RAW")
	}

	spaDeps, err := openSPA(cfg, log)
	if err != nil {
		return err
	}
	defer spaDeps.Close()
	fw, err := newFirewall(cfg.Server.Firewall)
	if err != nil {
		return err
	}
	fw = withHostCheck(fw, cfg.Server.Firewall, log)
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
		if err := writePidFile(cfg.Server.PidFile, os.Getpid()); err != nil {
			log.Warn("cannot write pid file", "file", cfg.Server.PidFile, "err", err)
		} else {
			defer os.Remove(cfg.Server.PidFile)
		}
	}
	var knockdLine func(string) // nil when there is no LogFile or syslog: nothing is formatted
	if kl.file != nil || kl.syslog != nil {
		knockdLine = kl.Line
	}
	srv, err := server.New(cfg, server.Deps{Firewall: fw, Intake: intake, Logger: log, KnockdLog: knockdLine, OneTime: oneTime{},
		SPA: spaDeps.handler, SPAIntake: spaDeps.intake})
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		running := cfg
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				log.Info("SIGHUP: reloading configuration", "source", running.Source)
				kl.Line("re-reading config file: " + running.Source)
				next, err := load()
				if err != nil {
					log.Error("reload failed; keeping the running configuration", "err", err)
					continue
				}
				if next.Server.Firewall != running.Server.Firewall {
					log.Error("reload: the firewall backend cannot change without a restart; keeping the running configuration", "running", running.Server.Firewall, "new", next.Server.Firewall)
					continue
				}
				if why := spaNeedsRestart(running, next); why != "" {
					log.Error("reload: "+why+" takes a restart; the running [spa] section stays as it is", "source", next.Source)
					next.SPA = running.SPA
				} else if next.SPA != nil {
					if err := spaDeps.handler.Reload(next.SPA); err != nil {
						log.Error("reload failed; keeping the running configuration", "err", err)
						continue
					}
				}
				if err := srv.Reload(ctx, next); err != nil {
					log.Error("reload failed; keeping the running configuration", "err", err)
					if running.SPA != nil && next.SPA != running.SPA {
						spaDeps.handler.Reload(running.SPA) // built from it once already: cannot fail
					}
					continue
				}
				if next.SPA != nil && next.SPA != running.SPA {
					log.Info("spa configuration reloaded", "clients", len(next.SPA.Clients), "max_age", next.SPA.MaxAge)
				}
				running = next
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
	n := 0
	for _, s := range []string{f.config, f.knockdConf, f.fwknopConf} {
		if s != "" {
			n++
		}
	}
	switch {
	case n > 1:
		return nil, usagef("use only one of -c, --knockd-conf and --fwknop-conf")
	case f.fwknopConf != "":
		cfg, err = fwknopconf.Load(f.fwknopConf)
	case f.config != "":
		cfg, err = config.Load(f.config)
	case f.knockdConf != "":
		cfg, err = knockdconf.Load(f.knockdConf)
	default:
		return nil, usagef("a configuration is required: -c FILE, --knockd-conf FILE or --fwknop-conf DIR")
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
		if f.firewall == config.FirewallNone && cfg.SPA != nil {
			return nil, usagef("--firewall none: SPA clients open ports; firewall none can only run commands")
		}
		if f.firewall == config.FirewallNone && len(server.OpenPorts(cfg)) > 0 {
			return nil, usagef("--firewall none: doors open ports %v; firewall none can only run commands", server.OpenPorts(cfg))
		}
		cfg.Server.Firewall = f.firewall
	}
	if f.iface != "" {
		cfg.Server.Interfaces = []string{f.iface}
	}
	if f.stateDir != "" {
		cfg.Server.StateDir = f.stateDir
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
		f, err := openNoFollow(cfg.Server.LogFile, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o640)
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

// openNoFollow opens a file the server writes (log_file, pid_file) without following a symbolic
// link in its place, so that whoever can write its directory cannot point root's writes at
// another file. It refuses what is not a regular file, and one owned by a user other than root
// and the one running sesame.
func openNoFollow(path string, flag int, perm os.FileMode) (*os.File, error) {
	f, err := os.OpenFile(path, flag|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, perm)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, fmt.Errorf("%s is a symbolic link: give the file itself", path)
		}
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	st, _ := fi.Sys().(*syscall.Stat_t)
	switch euid := os.Geteuid(); {
	case !fi.Mode().IsRegular():
		err = fmt.Errorf("%s is not a regular file", path)
	case st != nil && st.Uid != 0 && int(st.Uid) != euid:
		err = fmt.Errorf("%s is owned by uid %d, neither root nor the user running sesame (uid %d): remove it, or chown it", path, st.Uid, euid)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// writePidFile writes pid to path (mode 0644), with openNoFollow's checks.
func writePidFile(path string, pid int) error {
	f, err := openNoFollow(path, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	// Truncate only once the file is known to be a regular file of ours.
	if err := f.Truncate(0); err != nil {
		f.Close()
		return err
	}
	_, err = f.WriteString(strconv.Itoa(pid) + "\n")
	return errors.Join(err, f.Close())
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

// replayMaxLive caps the replay keys held in memory: only authenticated packets add keys, and
// each lives for 2 × max_age at most.
const replayMaxLive = 1 << 18

// spaNeedsRestart says what in next's [spa] section a reload cannot apply (the empty string
// when it can): turning SPA on or off, its listener, or the state directory of its replay store.
func spaNeedsRestart(running, next *config.Config) string {
	switch {
	case running.SPA == nil && next.SPA == nil:
		return ""
	case running.SPA == nil:
		return "adding a [spa] section"
	case next.SPA == nil:
		return "removing the [spa] section"
	case running.SPA.Port != next.SPA.Port || running.SPA.Sniff != next.SPA.Sniff:
		return "changing the SPA listener (listen, sniff)"
	case running.Server.StateDir != next.Server.StateDir:
		return "changing state_dir"
	}
	return ""
}

// spaDeps are the SPA handler, its replay store and its UDP socket (nil in sniff mode).
type spaDeps struct {
	handler *spapolicy.Policy
	store   replay.Store
	intake  server.Intake
	closers []func() error
}

// openSPA opens the replay store (state_dir/replay.db), builds the handler and, unless SPA
// sniffs, binds the UDP socket. It returns empty deps when SPA is off.
func openSPA(cfg *config.Config, log *slog.Logger) (*spaDeps, error) {
	d := &spaDeps{}
	if cfg.SPA == nil {
		return d, nil
	}
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
	d.store = store
	d.closers = append(d.closers, store.Close)
	d.handler, err = spapolicy.New(cfg.SPA, store, log, nil)
	if err != nil {
		d.Close()
		return nil, err
	}
	if !cfg.SPA.Sniff {
		l, err := udpintake.Listen(cfg.SPA.Port)
		if err != nil {
			d.Close()
			return nil, err
		}
		d.intake = l
		d.closers = append(d.closers, l.Close)
	}
	return d, nil
}

// Close releases the socket and the replay store.
func (d *spaDeps) Close() error {
	var errs []error
	for i := len(d.closers) - 1; i >= 0; i-- {
		errs = append(errs, d.closers[i]())
	}
	d.closers = nil
	return errors.Join(errs...)
}

func printSPA(w io.Writer, cfg *config.Config) {
	s := cfg.SPA
	if s == nil {
		return
	}
	mode := "udp socket"
	if s.Sniff {
		mode = "sniff (the port stays dropped)"
	}
	fmt.Fprintf(w, "  spa: udp/%d, %s, max_age %s, %d client(s)\n", s.Port, mode, s.MaxAge, len(s.Clients))
	for _, c := range s.Clients {
		open := fmt.Sprint(c.Open)
		if c.AnyPort {
			open = "any port"
		}
		fmt.Fprintf(w, "  spa client %q (%s): open %s from %v, for %s (at most %s)\n", c.Name, c.Format, open, c.Sources, c.DefaultOpenFor, c.MaxOpenFor)
	}
	for _, warn := range s.Warnings {
		fmt.Fprintf(w, "  warning: %s\n", warn)
	}
}
