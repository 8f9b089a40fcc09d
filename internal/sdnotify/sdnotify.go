// Package sdnotify tells systemd about the daemon's state through $NOTIFY_SOCKET (sd_notify).
package sdnotify

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
)

// Notifier sends state lines to systemd's notification socket. A Notifier without a socket
// (the service manager did not ask for notifications) does nothing; a nil *Notifier too.
type Notifier struct {
	addr *net.UnixAddr // nil: no socket
	pid  int           // this process, for WATCHDOG_PID
	env  func(string) string
	now  func() (time.Duration, bool) // CLOCK_MONOTONIC
}

// FromEnv returns a Notifier for this process's environment: NOTIFY_SOCKET, WATCHDOG_USEC and
// WATCHDOG_PID, as systemd sets them for a Type=notify service.
func FromEnv() *Notifier { return New(os.Getenv, os.Getpid()) }

// New returns a Notifier for the environment getenv reads, in the process pid. NOTIFY_SOCKET is
// a path, or an abstract socket name starting with '@'; empty means no notifications.
func New(getenv func(string) string, pid int) *Notifier {
	n := &Notifier{pid: pid, env: getenv, now: monotonic}
	if name := getenv("NOTIFY_SOCKET"); name != "" {
		// The net package maps a leading '@' to the abstract namespace's NUL byte.
		n.addr = &net.UnixAddr{Name: name, Net: "unixgram"}
	}
	return n
}

// Enabled reports whether a notification socket is set.
func (n *Notifier) Enabled() bool { return n != nil && n.addr != nil }

// Ready says start-up (or a reload) is complete: READY=1.
func (n *Notifier) Ready() error { return n.Send("READY=1") }

// Stopping says the daemon is shutting down: STOPPING=1.
func (n *Notifier) Stopping() error { return n.Send("STOPPING=1") }

// Watchdog is the keep-alive ping: WATCHDOG=1.
func (n *Notifier) Watchdog() error { return n.Send("WATCHDOG=1") }

// Status sets the one-line status systemctl status shows: STATUS=text.
func (n *Notifier) Status(text string) error { return n.Send("STATUS=" + text) }

// Reloading says a reload has started: RELOADING=1 with MONOTONIC_USEC, the CLOCK_MONOTONIC
// time systemd 253 and later use to order it (earlier versions ignore the field). Send Ready
// when the reload is done, whether it succeeded or not.
func (n *Notifier) Reloading() error {
	if !n.Enabled() {
		return nil
	}
	state := "RELOADING=1"
	if t, ok := n.now(); ok {
		state += "\nMONOTONIC_USEC=" + strconv.FormatInt(t.Microseconds(), 10)
	}
	return n.Send(state)
}

// Send writes state (newline-separated KEY=VALUE lines) in one datagram.
func (n *Notifier) Send(state string) error {
	if !n.Enabled() {
		return nil
	}
	c, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("sdnotify: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("sdnotify: %w", err)
	}
	return nil
}

// WatchdogInterval is the watchdog timeout systemd set (WatchdogSec=, as WATCHDOG_USEC), or
// false when there is none, it is malformed, or WATCHDOG_PID names another process.
func (n *Notifier) WatchdogInterval() (time.Duration, bool) {
	if !n.Enabled() {
		return 0, false
	}
	usec, err := strconv.ParseUint(n.env("WATCHDOG_USEC"), 10, 63)
	if err != nil || usec == 0 || usec > uint64(time.Duration(1<<63-1)/time.Microsecond) {
		return 0, false
	}
	if p := n.env("WATCHDOG_PID"); p != "" && p != strconv.Itoa(n.pid) {
		return 0, false
	}
	return time.Duration(usec) * time.Microsecond, true
}

// RunWatchdog pings every half of WatchdogInterval until ctx ends; it returns at once when no
// watchdog is set. A failed ping goes to report (when not nil) and the pings go on.
func (n *Notifier) RunWatchdog(ctx context.Context, report func(error)) {
	d, ok := n.WatchdogInterval()
	if !ok {
		return
	}
	t := time.NewTicker(max(d/2, time.Millisecond))
	defer t.Stop()
	for {
		if err := n.Watchdog(); err != nil && report != nil {
			report(err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
