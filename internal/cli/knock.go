package cli

import (
	"context"
	"fmt"
	"io"

	"github.com/sesame-knock/sesame/internal/knockclient"
)

const knockUsage = `sesame knock [-u] [-d DELAY_MS] [-4|-6] [-v] HOST PORT[:tcp|:udp|:icmp] ...

Send a knock sequence to HOST. It takes the arguments of knockd's 'knock' client and gets
them right: a protocol suffix in any case (7000:UDP), ports outside 1-65535 are an error, and
HOST is resolved once, so every knock goes to the same address.

A TCP knock is exactly one SYN (no retransmission), a UDP knock one 1-byte datagram, an ICMP
knock one echo request.

Options:
  -u, --udp          every knock without a suffix is UDP
  -d, --delay MS     wait MS milliseconds between knocks (default 0)
  -4, --ipv4         use IPv4 only
  -6, --ipv6         use IPv6 only
  -v, --verbose      print each knock
  -h, --help         this help

Examples:
  sesame knock server.example.org 7000 8000:udp 9000
  sesame knock -v -d 100 -6 server.example.org 7000 8000 9000
  sesame knock -u 192.0.2.7 7000 8000 9000:tcp
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
			return knockclient.Send(ctx, opts, func(s string) { fmt.Fprintln(stdout, s) })
		},
	}
}
