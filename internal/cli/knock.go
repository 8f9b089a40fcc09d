package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/sesame-knock/sesame/internal/knockclient"
	"github.com/sesame-knock/sesame/internal/spa"
	"github.com/sesame-knock/sesame/internal/spaclient"
)

// readDoorKey reads a rotating door's key: a `sesame keygen` shared key, in a file only its
// owner may read. The error never holds the file's contents.
func readDoorKey(path string) (spa.SharedKey, error) {
	data, err := spaclient.ReadSecretFile(path)
	if err != nil {
		return spa.SharedKey{}, fmt.Errorf("knock: %w", err)
	}
	var text []string
	for l := range strings.SplitSeq(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			text = append(text, l)
		}
	}
	k, err := spa.ParseSharedKey(strings.Join(text, "\n"))
	if err != nil {
		return spa.SharedKey{}, fmt.Errorf("knock: %s: not a sesame shared key (want the file 'sesame keygen' writes)", path)
	}
	return k, nil
}

const knockUsage = `sesame knock [-u] [-d DELAY_MS] [-4|-6] [-v] HOST PORT[:tcp|:udp|:icmp] ...
sesame knock HOST --door NAME --secret-file FILE [--rotate 30s] [--rotate-ports LO-HI]
             [--rotate-length N] [--rotate-uses N] [--state-file FILE] [-u] [-d MS] [-4|-6] [-v]

Send a knock sequence to HOST. It takes the arguments of knockd's 'knock' client and gets
them right: a protocol suffix in any case (7000:UDP), ports outside 1-65535 are an error, and
HOST is resolved once, so every knock goes to the same address.

A TCP knock is exactly one SYN (no retransmission), a UDP knock one 1-byte datagram, an ICMP
knock one echo request.

With --door, HOST has a rotating door (a [[door]] with secret_file and rotate): the
sequence is derived from the door's key for the current time window (docs/PROTOCOL.md,
"Rotating knock sequences"), so no ports are given. The --rotate options must match the
server's door (their defaults are the server's). Each sequence opens once: a second knock in the same
window takes the next counter, remembered in --state-file (default: your cache directory,
sesame/rotate/HOST_DOOR); when the window's --rotate-uses sequences are used, it waits for
the next window. Knock one at a time per door: two knocks at once may take the same counter,
and the second then opens nothing. The key is read from a file only you may read, never from
a flag.

Options:
  -u, --udp          every knock without a suffix is UDP (rotating: the door's are UDP)
  -d, --delay MS     wait MS milliseconds between knocks (default 0)
  -4, --ipv4         use IPv4 only
  -6, --ipv6         use IPv6 only
  -v, --verbose      print each knock
      --door NAME          knock the rotating door NAME
      --secret-file FILE   the door's key (the server's secret_file), mode 0600
      --rotate D           window length (default 30s)
      --rotate-ports LO-HI port range (default 10000-60000)
      --rotate-length N    knocks per sequence (default 4)
      --rotate-uses N      sequences per window (default 3)
      --state-file FILE    where the last window and counter used are kept
  -h, --help         this help

Examples:
  sesame knock server.example.org 7000 8000:udp 9000
  sesame knock -v -d 100 -6 server.example.org 7000 8000 9000
  sesame knock -u 192.0.2.7 7000 8000 9000:tcp
  sesame knock server.example.org --door ssh --secret-file ~/.config/sesame/ssh-door.key
`

func knockCommand() *command {
	return &command{
		summary: "send a knock sequence (takes knock's arguments)",
		usage:   knockUsage,
		run: func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
			for _, a := range args {
				if a == "-h" || a == "--help" || a == "-help" {
					fmt.Fprint(stdout, knockUsage)
					return nil
				}
			}
			opts, err := knockclient.ParseArgs(args)
			if err != nil {
				return usageError{err}
			}
			log := func(s string) { fmt.Fprintln(stdout, s) }
			if opts.Rotate != nil {
				key, err := readDoorKey(opts.Rotate.SecretFile)
				if err != nil {
					return err
				}
				return knockclient.SendRotating(ctx, opts, key, time.Now, log)
			}
			return knockclient.Send(ctx, opts, log)
		},
	}
}
