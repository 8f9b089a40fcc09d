package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"

	"github.com/sesame-knock/sesame/internal/config"
	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/firewall/ipt"
	"github.com/sesame-knock/sesame/internal/firewall/nft"
	"github.com/sesame-knock/sesame/internal/firewall/none"
	"github.com/sesame-knock/sesame/internal/fwknopconf"
	"github.com/sesame-knock/sesame/internal/knockdconf"
	"github.com/sesame-knock/sesame/internal/logfmt"
)

func loadServerConfig(f serverFlags) (*config.Config, error) {
	if f.firewall != "" && !slices.Contains(firewall.Kinds(), firewall.Kind(f.firewall)) {
		return nil, usagef("--firewall %q: want %s", f.firewall, firewall.KindList())
	}
	ov := config.Overrides{Firewall: firewall.Kind(f.firewall), StateDir: f.stateDir, ControlSocket: f.ctlSocket}
	if f.iface != "" {
		ov.Interfaces = []string{f.iface}
	}
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
		cfg, err = fwknopconf.Load(f.fwknopConf, ov)
	case f.config != "":
		cfg, err = config.Load(f.config, ov)
	case f.knockdConf != "":
		cfg, err = knockdconf.Load(f.knockdConf, ov)
	default:
		return nil, usagef("a configuration is required: -c FILE, --knockd-conf FILE or --fwknop-conf DIR")
	}
	if err != nil {
		return nil, err
	}
	if f.knockdConf != "" && f.firewall == "" && len(cfg.OpenPorts()) > 0 {
		return nil, usagef("%s: doors name ports to open (Open = %v): choose sesame's gate with --firewall %s or --firewall %s", f.knockdConf, cfg.OpenPorts(), firewall.Nftables, firewall.Iptables)
	}
	if err := checkOps(cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

// newLogger builds the daemon's logger on w. When w is the journal stream systemd connected
// ($JOURNAL_STREAM names it), lines carry no timestamp and start with their priority.
func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, usagef("--log-level %q: want debug, info, warn or error", level)
	}
	if format != logfmt.Text && format != logfmt.JSON {
		return nil, usagef("--log-format %q: want text or json", format)
	}
	f, _ := w.(*os.File)
	h, err := logfmt.New(w, logfmt.Options{Format: format, Level: lvl, Journal: logfmt.OnJournal(os.Getenv("JOURNAL_STREAM"), f)})
	if err != nil {
		return nil, err
	}
	return slog.New(h), nil
}

func newFirewall(ctx context.Context, cfg *config.Config, log *slog.Logger) (firewall.Backend, error) {
	switch kind := cfg.Server.Firewall; kind {
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
	case config.FirewallAWSSG:
		return newAWSFirewall(ctx, cfg.AWS, log)
	}
	return nil, fmt.Errorf("unknown firewall backend %q", cfg.Server.Firewall)
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
	if s.ICMP {
		mode += ", and in pings (icmp)"
	}
	fmt.Fprintf(w, "  spa: udp/%d, %s, max_age %s, %d client(s)\n", s.Port, mode, s.MaxAge, len(s.Clients))
	for _, c := range s.Clients {
		open := fmt.Sprint(c.Open)
		if c.AnyPort {
			open = "any port"
		}
		for _, f := range c.Forward {
			open += ", forward " + f.String()
		}
		from := fmt.Sprint(c.Sources)
		if len(c.SourcePorts) > 0 {
			from += fmt.Sprintf(" source ports %v", c.SourcePorts)
		}
		fmt.Fprintf(w, "  spa client %q (%s): open %s from %s, for %s (at most %s)\n", c.Name, c.Format, open, from, c.DefaultOpenFor, c.MaxOpenFor)
	}
	for _, warn := range s.Warnings {
		fmt.Fprintf(w, "  warning: %s\n", warn)
	}
}

func printCheck(w io.Writer, cfg *config.Config) {
	fmt.Fprintf(w, "%s: ok: %d door(s), firewall %s\n", cfg.Source, len(cfg.Doors), cfg.Server.Firewall)
	for _, d := range cfg.Doors {
		if r := d.Rotate; r != nil {
			fmt.Fprintf(w, "  door %q: rotating every %s, %d knocks of %s/%d-%d, %d per window, key %s, timeout %s, open %v for %s\n",
				d.Name, r.Period, r.Length, r.Proto, r.Lo, r.Hi, r.Uses, r.SecretFile, d.Timeout, d.Open, d.OpenFor)
			continue
		}
		seq := make([]string, len(d.Sequence))
		for i, el := range d.Sequence {
			seq[i] = el.String()
			if p := d.Payload(i); p != nil {
				seq[i] += " " + config.FormatPayload(p)
			}
		}
		from := ""
		if len(d.SourcePorts) > 0 {
			from = fmt.Sprintf(", from source ports %v", d.SourcePorts)
		}
		fmt.Fprintf(w, "  door %q: sequence [%s]%s, timeout %s, open %v for %s\n", d.Name, strings.Join(seq, " "), from, d.Timeout, d.Open, d.OpenFor)
	}
	printSPA(w, cfg)
	printOps(w, cfg)
	for _, r := range cfg.Remarks() {
		fmt.Fprintf(w, "  warning: %s\n", r)
	}
}
