package cli

import (
	"context"
	"io"
)

const serverUsage = `sesame server -c FILE | --knockd-conf FILE [OPTIONS]

Run the sesame daemon in the foreground (Linux, as root or with CAP_NET_ADMIN and CAP_NET_RAW).
It keeps its own firewall table that drops new connections to every port a door opens, watches
for knocks with a kernel-filtered packet socket, and grants a knocking source access for a
limited time. Grants expire in the kernel, even if the daemon dies.

Signals: SIGTERM and SIGINT stop it cleanly (pending stop commands run; protected ports stay
closed unless on_stop = "remove"); SIGHUP reloads the configuration without dropping grants.

Examples:
  sesame server -c /etc/sesame/sesame.toml
  sesame server -c sesame.toml --check
  sesame server --knockd-conf /etc/knockd.conf
  sesame server --knockd-conf /etc/knockd.conf -i eth1 --log-format json
`

func serverCommand() *command {
	c := &command{summary: "run the knock/SPA daemon (Linux)", usage: serverUsage}
	c.run = func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
		return runServer(ctx, c, args, stdout, stderr)
	}
	return c
}
