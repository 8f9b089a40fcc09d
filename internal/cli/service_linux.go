package cli

import (
	"log/slog"

	"golang.org/x/sys/unix"
)

// serverCaps are the capabilities the server needs: CAP_NET_ADMIN for the firewall (netlink),
// CAP_NET_RAW for the packet socket. dist/sesame.service grants exactly these.
var serverCaps = []struct {
	name string
	bit  uint
}{
	{"CAP_NET_ADMIN", unix.CAP_NET_ADMIN},
	{"CAP_NET_RAW", unix.CAP_NET_RAW},
}

// missingCaps names the server capabilities this process lacks in its effective set (root
// normally has them all; a service user gets them from AmbientCapabilities=).
func missingCaps() []string {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return nil // unknown: the sockets' own errors name what is missing
	}
	return missingFrom(uint64(data[1].Effective)<<32 | uint64(data[0].Effective))
}

// missingFrom names the server capabilities not in the effective mask eff.
func missingFrom(eff uint64) []string {
	var out []string
	for _, c := range serverCaps {
		if eff&(1<<c.bit) == 0 {
			out = append(out, c.name)
		}
	}
	return out
}

// notifyLog logs a failed notification to systemd; the daemon goes on.
func notifyLog(log *slog.Logger, err error) {
	if err != nil {
		log.Warn("systemd notification failed", "err", err)
	}
}
