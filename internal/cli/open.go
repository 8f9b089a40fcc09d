package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/sesame-knock/sesame/internal/spaclient"
)

const openUsage = `sesame open HOST -A tcp/22[,udp/53] [-a ADDRESS | -s] [-f SECONDS] [-n PROFILE]
            [--id NAME --key-file FILE [--server-key FILE]] [--fwknop] [-p PORT] [--icmp]
            [--source-port PORT] [-4|-6] [-v] [-T]

Ask the server HOST to open ports for you with one Single Packet Authorization
datagram (UDP, port 62201 by default). Nothing comes back: check with a connect.

With --icmp (or -P icmp) the same packet goes in an ICMP echo request (a ping,
ICMPv6 to an IPv6 HOST) instead; the server needs [spa] icmp = true. It is sent
from an unprivileged ping socket where the system allows one (Linux: sysctl
net.ipv4.ping_group_range must hold your group), else from a raw socket (root).

By default the packet is in sesame's format (docs/PROTOCOL.md) with a shared key
or a key pair from 'sesame keygen'. With --fwknop (or a profile's format =
"fwknop", or a ~/.fwknoprc stanza) it is in fwknop's format, accepted by fwknopd.

The packet names the address to open for: with -a the one given, otherwise your
address on the route to HOST (the local address the system picks for it; no extra
packet is sent to find it). A copy of the packet seen on the way opens the ports
for that address only, not for whoever sends the copy.

-s asks instead for "the address the packet comes from", which works through a
NAT but is weaker: anyone who sees the packet on its way can send a copy first,
from their own address, and be let in instead of you (yours is then refused as a
replay). It prints a warning, and servers with require_address refuse it. Behind
a NAT prefer -a YOUR-PUBLIC-ADDRESS: with a private address on the way to a
public server, sesame open stops and says so. fwknop's -R (ask a web service for
your external address) is not supported.

Keys come from files that only their owner may read. fwknop's key flags
(--key-base64-rijndael, --key-base64-hmac, --key-rijndael, --key-hmac) are
accepted for migration, with a warning: a key on a command line leaks into ps(1)
and shell history.

Profiles: -n NAME uses [profile.NAME] of ~/.config/sesame/client.toml, or else
the [NAME] stanza of ~/.fwknoprc (merged over its [default], as fwknop does).
Flags override the profile.

  [profile.home]
  server = "192.0.2.7"
  id = "alice"
  key_file = "~/.config/sesame/alice"          # shared key, or private key of a pair
  server_key = "~/.config/sesame/server.pub"   # key pairs only
  access = ["tcp/22"]
  # allow = "203.0.113.4"                      # an address; "source" is -s; unset: the route's
  open_for = "60s"
  # format = "fwknop"; key_file then holds KEY_BASE64/HMAC_KEY_BASE64 lines;
  # hmac_key_file, hmac_digest = "sha256"; port = 62201

Options (before or after HOST):
  -A, --access LIST        ports to open, PROTO/PORT, comma separated or repeated
  -a, --allow-ip ADDRESS   open for ADDRESS (fwknop's format: IPv4 only);
                           default: your address on the route to HOST
  -s, --source-ip          open for the address the packet comes from (weaker, warns)
  -f, --open-for SECONDS   ask for this long (the server caps it); unset: server default
  -n, --profile NAME       use a profile or ~/.fwknoprc stanza
      --id NAME            client identity, the name in the server's [[spa.client]]
                           (fwknop's format: the username; -U, --spoof-user)
      --key-file FILE      shared key or private key; with --fwknop a file of
                           KEY_BASE64 / HMAC_KEY_BASE64 lines (-G, --get-key)
      --server-key FILE    the server's public key (key pairs); an inline
                           "sesame-pub-v1 ..." key is accepted too
      --fwknop             send fwknop's format
      --hmac-key-file FILE fwknop: HMAC key file (--get-hmac-key)
      --hmac-digest-type D fwknop: md5, sha1, sha256 (default), sha384, sha512, sha3_256, sha3_512
  -m, --digest-type D      fwknop: inner digest (default sha256)
  -p, --port PORT          server UDP port (default 62201)
      --icmp, -P icmp      send the packet in an ICMP echo request (-P udp: the default)
  -S, --source-port PORT   send from this local UDP port (for clients with source_ports;
                           a NAT on the way may rewrite it)
  -D, --destination HOST   the same as the HOST argument (fwknop's flag)
  -4, -6                   use IPv4 / IPv6 only
  -v, --verbose            describe the request sent (never the keys)
  -T, --test               build the packet, do not send it
      --config FILE        client profiles (default ~/.config/sesame/client.toml)
      --rc-file FILE       fwknop rc file (default ~/.fwknoprc)
  -h, --help               this help

Examples:
  sesame open 192.0.2.7 -A tcp/22 --id alice --key-file alice.key
  sesame open 192.0.2.7 -A tcp/22 --id alice --key-file alice --server-key server.pub
  sesame open server.example.org -A tcp/22,udp/53 -a 198.51.100.4 -f 60 --id alice --key-file alice.key
  sesame open -n home
  sesame open 192.0.2.7 -A tcp/22 --fwknop --key-file ~/.fwknop.keys -v
  sesame open 192.0.2.7 -A tcp/22 --id alice --key-file alice.key --icmp
`

func openCommand() *command {
	return &command{
		summary: "ask a server to open ports (Single Packet Authorization, also fwknop's)",
		usage:   openUsage,
		run: func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
			o, err := spaclient.ParseArgs(args)
			switch {
			case errors.Is(err, flag.ErrHelp):
				fmt.Fprint(stdout, openUsage)
				return flag.ErrHelp
			case err != nil:
				return usageError{err}
			}
			if err := spaclient.Open(ctx, o, stdout, stderr); err != nil {
				if isOpenUsage(err) {
					return usageError{err}
				}
				return err
			}
			return nil
		},
	}
}

// isOpenUsage reports whether a resolution error is about missing or
// conflicting flags.
func isOpenUsage(err error) bool {
	return errors.Is(err, spaclient.ErrUsage)
}
