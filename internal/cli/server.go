package cli

import (
	"context"
	"io"
)

const serverUsage = `sesame server -c FILE | --knockd-conf FILE | --fwknop-conf DIR [OPTIONS]

Run the sesame daemon in the foreground (Linux, as root or with CAP_NET_ADMIN and CAP_NET_RAW).
It keeps its own firewall table that drops new connections to every port a door opens, watches
for knocks with a kernel-filtered packet socket, and grants a knocking source access for a
limited time. Grants expire in the kernel, even if the daemon dies.

With an [spa] section (or --fwknop-conf) it also accepts single packet authorization: one
encrypted, authenticated UDP packet, in sesame's own format or fwknop's, that names the ports to
open. The packet is read from a UDP socket, or in sniff mode from the packet capture while the
gate keeps the port dropped. Each packet is accepted once (the replay cache, state_dir/replay.db,
survives restarts), and every decision is logged with its source, client and reason.

--fwknop-conf DIR runs an existing fwknopd setup: DIR/fwknopd.conf and DIR/access.conf (mode
0600, else a warning), as fwknopd would: the iptables backend (chain SESAME jumped to from the
top of INPUT), sniffing unless ENABLE_UDP_SERVER is Y. Unsupported options are errors or startup
warnings. --firewall nftables switches to sesame's own gate. The replay cache stays in
/var/lib/sesame (--state-dir DIR), not in FWKNOP_RUN_DIR.

It serves the control socket, /run/sesame/control.sock unless [control] socket or
--control-socket PATH says otherwise, for sesame status, grant and revoke and a /metrics scrape
(docs/CONTROL.md); with [metrics] listen also an HTTP metrics listener. A live socket of another
daemon stops the start before the firewall is touched.

Configuration files, key files and the state directory that others could change are refused.

Signals: SIGTERM and SIGINT stop it cleanly (pending stop commands run; protected ports stay
closed unless on_stop = "remove"); SIGHUP reloads the configuration without dropping grants.

Examples:
  sesame server -c /etc/sesame/sesame.toml
  sesame server -c sesame.toml --check
  sesame server --knockd-conf /etc/knockd.conf
  sesame server --knockd-conf /etc/knockd.conf -i eth1 --log-format json
  sesame server --fwknop-conf /etc/fwknop
  sesame server --fwknop-conf /etc/fwknop --firewall nftables
`

func serverCommand() *command {
	c := &command{summary: "run the knock/SPA daemon (Linux)", usage: serverUsage}
	c.run = func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
		return runServer(ctx, c, args, stdout, stderr)
	}
	return c
}
