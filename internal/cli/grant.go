package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/sesame-knock/sesame/internal/control"
	"github.com/sesame-knock/sesame/internal/netport"
	"github.com/sesame-knock/sesame/internal/server"
)

const grantUsage = `sesame grant ADDR PROTO/PORT --for DURATION [--note TEXT]

Break glass: open PROTO/PORT to ADDR for DURATION on the running daemon, with no
knock or SPA packet, as a knock would. The daemon refuses a DURATION above its
[control] max_grant (24h by default) and names the limit. The grant is logged
with the caller's uid and the note.

Changing needs root or membership of [control] admin_group.

Options go before or after the arguments.

Examples:
  sesame grant 198.51.100.7 tcp/22 --for 30m --note "INC-42, key lost"
  sesame grant 2001:db8::7 tcp/443 --for 2h
`

func grantCommand() *command {
	c := &command{summary: "open a port to an address now, for a while (break glass)", usage: grantUsage}
	c.run = func(ctx context.Context, args []string, stdout, _ io.Writer) error {
		fs := newFlagSet("grant", c, stdout)
		socket := socketFlag(fs)
		dur := fs.Duration("for", 0, "how long, as 90s, 30m or 2h (required)")
		note := fs.String("note", "", "why, for the log and sesame status")
		pos, err := parseArgs(fs, args)
		if err != nil {
			return err
		}
		switch {
		case len(pos) < 2:
			return usagef("want ADDR and PROTO/PORT, as in: sesame grant 198.51.100.7 tcp/22 --for 30m")
		case len(pos) > 2:
			return usagef("unexpected argument %q", pos[2])
		case *dur == 0:
			return usagef("--for DURATION is required (as in --for 30m)")
		case *dur < time.Millisecond:
			return usagef("--for %v: must be at least 1ms", *dur)
		case len(*note) > control.MaxNote:
			return usagef("--note: longer than %d bytes", control.MaxNote)
		}
		src, err := parseAddr(pos[0])
		if err != nil {
			return err
		}
		port, err := netport.Parse(pos[1])
		if err != nil {
			return usagef("%v", err)
		}
		req := server.GrantRequest{Src: src, Port: port, For: server.MillisOf(*dur), Note: *note}
		if err := control.NewClient(*socket).Grant(ctx, req); err != nil {
			var e *control.Error
			if errors.As(err, &e) && strings.HasPrefix(e.Message, "for_ms: ") {
				return fmt.Errorf("--for: %s", strings.TrimPrefix(e.Message, "for_ms: "))
			}
			return err
		}
		fmt.Fprintf(stdout, "granted %s %s for %s", src, port, human(req.For.Duration()))
		if *note != "" {
			fmt.Fprintf(stdout, " (note: %s)", *note)
		}
		fmt.Fprintln(stdout)
		return nil
	}
	return c
}
