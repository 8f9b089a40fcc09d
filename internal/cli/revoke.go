package cli

import (
	"context"
	"fmt"
	"io"
	"net/netip"

	"github.com/sesame-knock/sesame/internal/control"
	"github.com/sesame-knock/sesame/internal/netport"
	"github.com/sesame-knock/sesame/internal/server"
)

const revokeUsage = `sesame revoke [--kill] ADDR [PROTO/PORT]
sesame revoke --all [--kill]
sesame revoke --ban ADDR

Remove live grants from the running daemon's firewall: ADDR's grant on one port,
all of ADDR's grants, or (--all) every grant. Connections already open stay up
unless --kill also ends them (their conntrack entries are deleted, so the gate
drops their next packet). With --ban, lift ADDR's ban (a decoy's or scan
detection's) instead.

Changing needs root or membership of [control] admin_group; every revoke is
logged with the caller's uid.

Options go before or after the arguments.

Examples:
  sesame revoke 198.51.100.7 tcp/22
  sesame revoke --kill 2001:db8::7
  sesame revoke --all
  sesame revoke --ban 198.51.100.9
`

func revokeCommand() *command {
	c := &command{summary: "remove live grants (and with --kill their connections)", usage: revokeUsage}
	c.run = func(ctx context.Context, args []string, stdout, _ io.Writer) error {
		fs := newFlagSet("revoke", c, stdout)
		socket := socketFlag(fs)
		all := fs.Bool("all", false, "revoke every grant")
		kill := fs.Bool("kill", false, "also end the revoked grants' established connections")
		ban := fs.Bool("ban", false, "lift ADDR's ban instead of revoking grants")
		pos, err := parseArgs(fs, args)
		if err != nil {
			return err
		}
		if *ban {
			return revokeBan(ctx, *socket, pos, *all || *kill, stdout)
		}
		req := server.RevokeRequest{All: *all, Kill: *kill}
		switch {
		case *all && len(pos) > 0:
			return usagef("--all revokes every grant; it takes no address or port (got %q)", pos[0])
		case !*all && len(pos) == 0:
			return usagef("missing ADDR (or --all)")
		case len(pos) > 2:
			return usagef("unexpected argument %q", pos[2])
		}
		if !*all {
			if req.Src, err = parseAddr(pos[0]); err != nil {
				return err
			}
			if len(pos) == 2 {
				if req.Port, err = netport.Parse(pos[1]); err != nil {
					return usagef("%v", err)
				}
			}
		}
		res, err := control.NewClient(*socket).Revoke(ctx, req)
		if err != nil {
			return err
		}
		what := "every grant"
		switch {
		case req.All:
		case req.Port.IsZero():
			what = "the grants of " + req.Src.String()
		default:
			what = fmt.Sprintf("the grant of %s on %s", req.Src, req.Port)
		}
		if res.Grants == 0 {
			fmt.Fprintf(stdout, "nothing to revoke: no live grant matches %s\n", what)
		} else {
			fmt.Fprintf(stdout, "revoked %s: %s\n", what, plural(res.Grants, "grant"))
		}
		if req.Kill {
			fmt.Fprintf(stdout, "ended %s\n", plural(res.Killed, "connection"))
		}
		return nil
	}
	return c
}

// parseAddr parses an IP address argument (no host names: the grant is for an address).
func parseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, usagef("%q is not an IP address", s)
	}
	return a.Unmap(), nil
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// revokeBan lifts one address's ban.
func revokeBan(ctx context.Context, socket string, pos []string, other bool, stdout io.Writer) error {
	switch {
	case other:
		return usagef("--ban lifts one address's ban; it goes without --all and --kill")
	case len(pos) == 0:
		return usagef("missing ADDR")
	case len(pos) > 1:
		return usagef("unexpected argument %q", pos[1])
	}
	src, err := parseAddr(pos[0])
	if err != nil {
		return err
	}
	res, err := control.NewClient(socket).Revoke(ctx, server.RevokeRequest{Src: src, Ban: true})
	if err != nil {
		return err
	}
	if res.Bans == 0 {
		fmt.Fprintf(stdout, "nothing to lift: %s is not banned\n", src)
	} else {
		fmt.Fprintf(stdout, "lifted the ban of %s\n", src)
	}
	return nil
}
