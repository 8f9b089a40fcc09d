package cli

import (
	"context"
	"log/slog"

	"github.com/google/nftables"

	"github.com/sesame-knock/sesame/internal/config"
	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/firewall/hostcheck"
	"github.com/sesame-knock/sesame/internal/firewall/ipt"
	"github.com/sesame-knock/sesame/internal/firewall/nft"
)

// checkedFirewall is a backend that, after every Apply (start and reload), reads the host's
// nftables ruleset and warns about each rule that would drop a connection the gate admits.
type checkedFirewall struct {
	firewall.Backend
	gate hostcheck.Gate
	log  *slog.Logger
}

// withHostCheck wraps fw for the nftables and iptables backends; others are returned as they are.
func withHostCheck(fw firewall.Backend, kind firewall.Kind, log *slog.Logger) firewall.Backend {
	switch kind {
	case config.FirewallNftables:
		return checkedFirewall{fw, hostcheck.Gate{Table: nft.DefaultTable, Priority: nft.ChainPriority, Mark: firewall.ConnMark}, log}
	case config.FirewallIptables:
		return checkedFirewall{fw, hostcheck.Gate{Chain: ipt.DefaultChain, Priority: 0, Mark: firewall.ConnMark}, log}
	}
	return fw
}

func (c checkedFirewall) Apply(ctx context.Context, g firewall.Gate) error {
	if err := c.Backend.Apply(ctx, g); err != nil {
		return err
	}
	if len(g.Protected) == 0 {
		return nil
	}
	conn, err := nftables.New()
	if err != nil {
		c.log.Info("host firewall not checked: cannot talk to nf_tables", "err", err)
		return nil
	}
	rs, err := hostcheck.Read(conn)
	if err != nil {
		c.log.Info("host firewall not checked: cannot read the nftables ruleset", "err", err)
		return nil
	}
	fs := hostcheck.Check(rs, c.gate, g.Protected)
	for _, f := range fs {
		c.log.Warn("the host firewall drops connections sesame admits", "rule", f.String(), "port", f.Port.String(),
			"drops", f.Packets(), "fix", f.Fix())
	}
	c.log.Debug("host firewall checked", "findings", len(fs))
	return nil
}

// Unwrap returns the wrapped backend, so its other primitives (firewall.Banner) stay reachable.
func (c checkedFirewall) Unwrap() firewall.Backend { return c.Backend }
