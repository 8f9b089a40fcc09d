package cli

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/sesame-knock/sesame/internal/sdnotify"
	"github.com/sesame-knock/sesame/internal/server"

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

// reloadOnHUP reloads the configuration on every SIGHUP until ctx ends, telling systemd
// RELOADING=1 before and READY=1 after (also after a failed reload: the old one runs on). The
// returned function stops listening for the signal.
func reloadOnHUP(ctx context.Context, f serverFlags, source string, srv *server.Server, log *slog.Logger, notify *sdnotify.Notifier) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				notifyLog(log, notify.Reloading())
				log.Info("SIGHUP: reloading configuration", "source", source)
				next, err := loadServerConfig(f)
				if err == nil {
					err = srv.Reload(ctx, next)
				}
				if err != nil && !errors.Is(err, context.Canceled) {
					log.Error("reload failed; keeping the running configuration", "err", err)
				}
				notifyLog(log, notify.Ready()) // after a failed reload too
			}
		}
	}()
	return func() { signal.Stop(hup) }
}
