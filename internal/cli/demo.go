package cli

import (
	"context"
	"io"
)

const demoUsage = `sesame demo [--open-for DURATION] [--firewall nftables|iptables]

Show sesame at work, self-contained (Linux, root). The demo builds two network namespaces, a
server and a client joined by a virtual cable, starts 'sesame server' in the server namespace
protecting a small TCP service on port 2222, and shows in plain words:
  1. the port is closed to the client;
  2. the client knocks (7000/tcp, 8000/udp, 9000/tcp);
  3. the port is open for this client, and still closed to another address;
  4. after open_for, the port is closed again.
It removes everything it made when it ends, also on Ctrl-C, and exits 0 when everything behaved.
No packet leaves the namespaces.

Examples:
  sudo sesame demo
  sudo sesame demo --open-for 3s --firewall iptables
`

func demoCommand() *command {
	c := &command{summary: "show a port closed, opened by a knock, closed again (Linux, root)", usage: demoUsage}
	c.run = func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
		return runDemo(ctx, c, args, stdout, stderr)
	}
	return c
}
