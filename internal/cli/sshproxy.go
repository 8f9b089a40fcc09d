package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/sesame-knock/sesame/internal/knockclient"
	"github.com/sesame-knock/sesame/internal/netport"
	"github.com/sesame-knock/sesame/internal/spaclient"
	"github.com/sesame-knock/sesame/internal/sshproxy"
)

const sshProxyUsage = `sesame ssh-proxy [sesame open's options | --knock PORTS] [--wait 10s] HOST PORT

For OpenSSH's ProxyCommand: ssh in one step. It sends the SPA packet (as 'sesame
open' does; with no -A and no profile it asks for tcp/PORT) or, with --knock, the
knock sequence, then connects to HOST PORT as soon as the port opens (a fresh
attempt every 0.2-1 s, for at most --wait), then copies its standard input to the
connection and the connection to its standard output until the server closes.
Nothing but the connection's bytes is written to standard output; messages go to
standard error.

  # ~/.ssh/config
  Host server.example.org
      ProxyCommand sesame ssh-proxy --id alice --key-file ~/.config/sesame/alice.key %h %p
  Host knocked.example.org
      ProxyCommand sesame ssh-proxy --knock 7000,8000:udp,9000 %h %p

Options (besides sesame open's, see 'sesame open -h'):
      --knock PORTS      knock PORT[:tcp|:udp|:icmp],... instead of sending SPA
      --knock-delay MS   with --knock: wait MS milliseconds between knocks
      --wait DURATION    how long the port may take to open (default 10s, at most 5m)
  -h, --help             this help

Examples:
  ssh -o ProxyCommand='sesame ssh-proxy --id alice --key-file alice.key %h %p' server.example.org
  ssh -o ProxyCommand='sesame ssh-proxy -n home %h %p' home
  ssh -o ProxyCommand='sesame ssh-proxy --knock 7000,8000:udp,9000 --wait 5s %h %p' 192.0.2.7
`

// maxWait bounds --wait.
const maxWait = 5 * time.Minute

// sshProxyArgs is a parsed ssh-proxy command line.
type sshProxyArgs struct {
	open       spaclient.Options
	knock      []string
	knockDelay uint
	wait       time.Duration
	port       uint16
}

func parseSSHProxy(args []string) (sshProxyArgs, error) {
	a := sshProxyArgs{wait: 10 * time.Second}
	fs := spaclient.FlagSet(&a.open)
	fs.Var((*stringList)(&a.knock), "knock", "knock these ports instead of SPA")
	fs.UintVar(&a.knockDelay, "knock-delay", 0, "milliseconds between knocks")
	fs.DurationVar(&a.wait, "wait", a.wait, "how long the port may take to open")
	pos, err := spaclient.ParseInterspersed(fs, args)
	if err != nil {
		return a, err
	}
	if len(pos) != 2 {
		return a, fmt.Errorf("want HOST PORT (ssh's %%h %%p), got %q", pos)
	}
	if a.open.Host != "" && a.open.Host != pos[0] {
		return a, fmt.Errorf("HOST %q and -D %q disagree", pos[0], a.open.Host)
	}
	a.open.Host = pos[0]
	n, err := strconv.ParseUint(pos[1], 10, 16)
	if err != nil || n == 0 {
		return a, fmt.Errorf("PORT %q: want a number 1-65535", pos[1])
	}
	a.port = uint16(n)
	if a.wait <= 0 || a.wait > maxWait {
		return a, fmt.Errorf("--wait %v: want more than 0 and at most %v", a.wait, maxWait)
	}
	if a.open.Test {
		return a, errors.New("-T (test mode) sends nothing: use 'sesame open -T'")
	}
	if len(a.knock) > 0 {
		o := a.open
		if len(o.Access) > 0 || o.ID != "" || o.KeyFile != "" || o.Profile != "" || o.Fwknop || o.CommandLineKeys() || o.Port != 0 {
			return a, errors.New("--knock sends a knock sequence: SPA options (-A, --id, --key-file, -n, --fwknop, -p, keys) do not apply")
		}
		return a, nil
	}
	if a.knockDelay != 0 {
		return a, errors.New("--knock-delay needs --knock")
	}
	if len(a.open.Access) == 0 && a.open.Profile == "" {
		a.open.Access = []string{netport.Port{Proto: netport.TCP, Num: a.port}.String()}
	}
	return a, a.open.Check()
}

func sshProxyCommand() *command {
	return &command{
		summary: "SPA or knock, then connect and pipe: OpenSSH's ProxyCommand in one step",
		usage:   sshProxyUsage,
		run: func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
			a, err := parseSSHProxy(args)
			switch {
			case errors.Is(err, flag.ErrHelp):
				io.WriteString(stdout, sshProxyUsage)
				return flag.ErrHelp
			case err != nil:
				return usageError{err}
			}
			return runSSHProxy(ctx, a, os.Stdin, stdout, stderr)
		},
	}
}

func runSSHProxy(ctx context.Context, a sshProxyArgs, in io.Reader, out, stderr io.Writer) error {
	// Resolve once: the SPA packet or knock and the connection go to the same address.
	addr, err := knockclient.Resolve(ctx, a.open.Host, a.open.Family, netip.Addr{})
	if err != nil {
		return err
	}
	addr = addr.WithZone("")
	var sent, advice string
	if len(a.knock) > 0 {
		kargs := []string{"-d", strconv.FormatUint(uint64(a.knockDelay), 10)}
		if a.open.Verbose {
			kargs = append(kargs, "-v")
		}
		ko, err := knockclient.ParseArgs(append(append(kargs, "--", addr.String()), a.knock...))
		if err != nil {
			return usageError{err}
		}
		if err := knockclient.Send(ctx, ko, func(s string) { fmt.Fprintln(stderr, "sesame ssh-proxy:", s) }); err != nil {
			return err
		}
		sent = "the knock sequence " + strings.Join(a.knock, ",") + " was sent"
		advice = fmt.Sprintf("check the sequence and its protocols, the delay between knocks (--knock-delay), and that the door opens tcp/%d", a.port)
	} else {
		o := a.open
		o.Host = addr.String()
		// sesame open's verbose lines go to stderr: stdout is ssh's connection.
		if err := spaclient.Open(ctx, o, stderr, stderr); err != nil {
			if errors.Is(err, spaclient.ErrUsage) {
				return usageError{err}
			}
			return err
		}
		sent = "the SPA packet was sent"
		advice = fmt.Sprintf("check the key and --id, the server's SPA port (-p), that the server grants %s to this client, "+
			"and that the address the server sees is the one the packet names (-a; behind a NAT, -a YOUR-PUBLIC-ADDRESS)", strings.Join(o.Access, ","))
	}
	dst := netip.AddrPortFrom(addr, a.port)
	c, err := sshproxy.Connect(ctx, dst, a.wait, nil)
	if err != nil {
		return fmt.Errorf("%w: %s; %s", err, sent, advice)
	}
	if a.open.Verbose {
		fmt.Fprintf(stderr, "sesame ssh-proxy: connected to %s\n", dst)
	}
	return sshproxy.Pipe(ctx, c, in, out)
}
