package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sesame-knock/sesame/internal/control"
	"github.com/sesame-knock/sesame/internal/server"
	"github.com/sesame-knock/sesame/internal/spaclient"
)

const statusUsage = `sesame status [--json] [--socket PATH]

Show the running daemon's state, from its control socket: version, uptime,
firewall backend, doors and SPA clients with their counters, how many sources
are in the middle of a knock sequence, and every live grant with its source,
port, door or client, and time left.

--json prints the daemon's answer as it is (GET /v1/status, docs/CONTROL.md).
Reading needs root or membership of the socket's group ([control] group).

Examples:
  sesame status
  sesame status --json | jq '.grants[].src'
`

func statusCommand() *command {
	c := &command{summary: "show the running daemon's doors, clients and live grants", usage: statusUsage}
	c.run = func(ctx context.Context, args []string, stdout, _ io.Writer) error {
		fs := newFlagSet("status", c, stdout)
		socket := socketFlag(fs)
		asJSON := fs.Bool("json", false, "print the daemon's JSON answer")
		pos, err := parseArgs(fs, args)
		if err != nil {
			return err
		}
		if len(pos) > 0 {
			return usagef("unexpected argument %q", pos[0])
		}
		cl := control.NewClient(*socket)
		if *asJSON {
			raw, err := cl.Raw(ctx, "/v1/status")
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(stdout, "%s\n", raw)
			return err
		}
		st, err := cl.Status(ctx)
		if err != nil {
			return err
		}
		return writeStatus(stdout, st)
	}
	return c
}

// socketFlag adds --socket to fs.
func socketFlag(fs *flag.FlagSet) *string {
	return fs.String("socket", control.DefaultSocket, "the daemon's control socket `PATH`")
}

// parseArgs parses args with fs, flags before or after the arguments, and returns the
// arguments; -h prints help (once) and returns flag.ErrHelp.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	usage := fs.Usage
	fs.Usage = func() {} // fs.Parse calls it for -h and for every error
	pos, err := spaclient.ParseInterspersed(fs, args)
	fs.Usage = usage
	switch {
	case err == nil:
		return pos, nil
	case errors.Is(err, flag.ErrHelp):
		fs.Usage()
		return nil, flag.ErrHelp
	default:
		return nil, usageError{err}
	}
}

// writeStatus prints st as tables.
func writeStatus(w io.Writer, st server.Status) error {
	var b strings.Builder
	fmt.Fprintf(&b, "sesame %s, up %s, firewall %s", st.Version, human(st.Uptime.Duration()), st.Firewall)
	if st.Config != "" {
		fmt.Fprintf(&b, ", config %s", st.Config)
	}
	b.WriteString("\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	if len(st.Doors) > 0 {
		fmt.Fprintf(tw, "\nDOOR\tSEQUENCE\tOPENS\tFOR\tOPENED\n")
		for _, d := range st.Doors {
			opens := strings.Join(d.Open, ",")
			if d.Commands {
				opens = strings.TrimPrefix(opens+",commands", ",")
			}
			if opens == "" {
				opens = "-"
			}
			knocks := strings.Join(d.Sequence, " ")
			if d.Rotate != "" {
				knocks = "rotating " + d.Rotate
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", d.Name, knocks, opens, human(d.OpenFor.Duration()), d.Opened)
		}
		tw.Flush()
	}
	if st.SPA != nil {
		sniff := ""
		if st.SPA.Sniff {
			sniff = " (sniffed)"
		}
		if st.SPA.ICMP {
			sniff += ", and in pings"
		}
		fmt.Fprintf(&b, "\nSPA on %s%s\n", st.SPA.Listen, sniff)
		if len(st.SPA.Clients) > 0 {
			fmt.Fprintf(tw, "CLIENT\tFORMAT\tACCEPTED\tREFUSED\n")
			for _, c := range st.SPA.Clients {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\n", c.Name, c.Format, c.Accepted, c.Refused)
			}
			tw.Flush()
		}
	}
	fmt.Fprintf(&b, "\nSources in the middle of a sequence: %d\n", st.InProgress)
	if len(st.Grants) == 0 {
		b.WriteString("\nNo live grants.\n")
	} else {
		fmt.Fprintf(&b, "\nLive grants: %d\n", len(st.Grants))
		fmt.Fprintf(tw, "SOURCE\tPORT\tBY\tKIND\tLEFT\tNOTE\n")
		for _, g := range st.Grants {
			port := g.Port.String()
			if g.To != "" {
				port += " -> " + g.To // a forward
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", g.Src, port, orDash(g.By), g.Kind, human(g.Remaining.Duration()), g.Note)
		}
		tw.Flush()
	}
	if len(st.Bans) > 0 {
		fmt.Fprintf(&b, "\nBans: %d\n", len(st.Bans))
		fmt.Fprintf(tw, "SOURCE\tLEFT\tREASON\n")
		for _, x := range st.Bans {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", x.Src, human(x.Remaining.Duration()), x.Reason)
		}
		tw.Flush()
	}
	if st.Fleet != nil {
		writeFleet(&b, tw, st.Fleet)
	}
	// tabwriter pads the last column too; trim it.
	var out strings.Builder
	for line := range strings.Lines(b.String()) {
		out.WriteString(strings.TrimRight(line, " \n") + "\n")
	}
	_, err := io.WriteString(w, out.String())
	return err
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// human shows d in whole seconds, leaving out zero units: 1h, 59m58s, 25s; under a second
// is "<1s".
func human(d time.Duration) string {
	if d <= 0 {
		return "0s"
	}
	if d < time.Second {
		return "<1s"
	}
	d = d.Round(time.Second)
	var b strings.Builder
	if days := d / (24 * time.Hour); days > 0 {
		fmt.Fprintf(&b, "%dd", days)
		d -= days * 24 * time.Hour
	}
	for _, u := range []struct {
		unit time.Duration
		name string
	}{{time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"}} {
		if n := d / u.unit; n > 0 {
			fmt.Fprintf(&b, "%d%s", n, u.name)
			d -= n * u.unit
		}
	}
	return b.String()
}
