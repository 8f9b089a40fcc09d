package cli

import (
	"context"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/sesame-knock/sesame/internal/config"
	"github.com/sesame-knock/sesame/internal/doctor"
	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/fwknopconf"
	"github.com/sesame-knock/sesame/internal/knockdconf"
)

const doctorUsage = `sesame doctor -c FILE | --knockd-conf FILE | --fwknop-conf DIR [OPTIONS]

Diagnose the host's firewall for a configuration (Linux, as root). The doctor copies the live
ruleset (nftables, iptables-nft, iptables-legacy) into a scratch network namespace of its own,
adds sesame's gate with a test grant, and traces test packets through it: for every protected
port it says whether a granted client's connection reaches the service (and keeps working after
the grant ends) and whether an ungranted client is refused, naming the table, chain and rule
that decided. It also checks that a service listens on each protected port, that door commands
do not append an ACCEPT behind a DROP, and that knock ports answer like other closed ports.
Nothing is changed on the host; the scratch namespace is gone when the doctor ends.

One line per check: ok, warn or FAIL, with a fix on the line after a problem. Exit status 0
when every check is ok, 1 when one warns or fails, 2 for a usage error. See docs/DOCTOR.md.

Examples:
  sesame doctor -c /etc/sesame/sesame.toml
  sesame doctor --knockd-conf /etc/knockd.conf --firewall nftables
  sesame doctor --fwknop-conf /etc/fwknop
`

func doctorCommand() *command {
	c := &command{summary: "diagnose the host firewall for a configuration (Linux)", usage: doctorUsage}
	c.run = func(ctx context.Context, args []string, stdout, _ io.Writer) error {
		fs := newFlagSet("doctor", c, stdout)
		var cfgFile, knockdFile, fwknopDir, fw, iface string
		fs.StringVar(&cfgFile, "c", "", "native TOML configuration `FILE`")
		fs.StringVar(&cfgFile, "config", "", "same as -c")
		fs.StringVar(&knockdFile, "knockd-conf", "", "a knockd.conf `FILE`")
		fs.StringVar(&fwknopDir, "fwknop-conf", "", "a fwknopd configuration `DIR` (fwknopd.conf and access.conf)")
		fs.StringVar(&fw, "firewall", "", "override the firewall backend: nftables, iptables or none")
		fs.StringVar(&iface, "i", "", "the `INTERFACE` clients come in on (overrides the config)")
		timeout := fs.Duration("timeout", 2*time.Minute, "bound on the whole diagnosis")
		probe := fs.Duration("probe-timeout", time.Second, "bound on each test connection")
		if err := parseFlags(fs, args); err != nil {
			return err
		}
		if fs.NArg() > 0 {
			return usagef("unexpected argument %q", fs.Arg(0))
		}
		if *timeout <= 0 || *probe <= 0 {
			return usagef("--timeout and --probe-timeout must be positive")
		}
		cfg, err := loadDoctorConfig(cfgFile, knockdFile, fwknopDir, fw)
		if err != nil {
			return err
		}
		if iface != "" {
			cfg.Server.Interfaces = []string{iface}
		}
		rep, err := doctor.Run(ctx, doctor.Options{Config: cfg, Timeout: *timeout, ProbeTimeout: *probe})
		if err != nil {
			return err
		}
		if err := rep.Write(stdout); err != nil {
			return err
		}
		if n := problems(rep); n > 0 {
			return fmt.Errorf("%d problem(s) found", n)
		}
		return nil
	}
	return c
}

func problems(r *doctor.Report) int {
	n := 0
	for _, c := range r.Checks {
		if c.Status != doctor.OK {
			n++
		}
	}
	return n
}

// loadDoctorConfig loads exactly one configuration, with --firewall applied before validation.
func loadDoctorConfig(cfgFile, knockdFile, fwknopDir, fw string) (*config.Config, error) {
	if fw != "" && !slices.Contains(firewall.Kinds(), firewall.Kind(fw)) {
		return nil, usagef("--firewall %q: want %s", fw, firewall.KindList())
	}
	ov := config.Overrides{Firewall: firewall.Kind(fw)}
	n := 0
	for _, s := range []string{cfgFile, knockdFile, fwknopDir} {
		if s != "" {
			n++
		}
	}
	var cfg *config.Config
	var err error
	switch {
	case n > 1:
		return nil, usagef("use only one of -c, --knockd-conf and --fwknop-conf")
	case cfgFile != "":
		cfg, err = config.Load(cfgFile, ov)
	case knockdFile != "":
		cfg, err = knockdconf.Load(knockdFile, ov)
	case fwknopDir != "":
		cfg, err = fwknopconf.Load(fwknopDir, ov)
	default:
		return nil, usagef("a configuration is required: -c FILE, --knockd-conf FILE or --fwknop-conf DIR")
	}
	if err != nil {
		return nil, err
	}
	if fw == "" && knockdFile != "" && len(cfg.OpenPorts()) > 0 {
		return nil, usagef("%s: doors name ports to open (Open = %v): say which gate to check with --firewall %s or --firewall %s", knockdFile, cfg.OpenPorts(), firewall.Nftables, firewall.Iptables)
	}
	if cfg.Server.Firewall == firewall.AWSSG {
		return nil, usagef("firewall %s keeps no rules on this host, so there is nothing for the doctor to simulate: see the checklist in docs/CLOUD.md", firewall.AWSSG)
	}
	return cfg, nil
}
