package sdnotify

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// listen opens a notification socket at name (a path, or '@' and an abstract name) and returns
// it with the environment that points a Notifier at it.
func listen(t *testing.T, name string) (*net.UnixConn, map[string]string) {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, map[string]string{"NOTIFY_SOCKET": name}
}

func getenv(env map[string]string) func(string) string {
	return func(k string) string { return env[k] }
}

// recv reads one datagram, waiting at most a second.
func recv(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no notification: %v", err)
	}
	return string(buf[:n])
}

func TestSend(t *testing.T) {
	sockets := map[string]func(t *testing.T) string{
		"path":     func(t *testing.T) string { return filepath.Join(t.TempDir(), "notify") },
		"abstract": func(t *testing.T) string { return fmt.Sprintf("@sesame-sdnotify-test-%d", time.Now().UnixNano()) },
	}
	cases := []struct {
		name string
		send func(*Notifier) error
		want string
	}{
		{"ready", (*Notifier).Ready, "READY=1"},
		{"stopping", (*Notifier).Stopping, "STOPPING=1"},
		{"watchdog", (*Notifier).Watchdog, "WATCHDOG=1"},
		{"status", func(n *Notifier) error { return n.Status("3 doors, 2 grants") }, "STATUS=3 doors, 2 grants"},
		{"send", func(n *Notifier) error { return n.Send("A=1\nB=2") }, "A=1\nB=2"},
	}
	for kind, name := range sockets {
		for _, tc := range cases {
			t.Run(kind+"/"+tc.name, func(t *testing.T) {
				c, env := listen(t, name(t))
				n := New(getenv(env), 1)
				if !n.Enabled() {
					t.Fatal("not enabled with NOTIFY_SOCKET set")
				}
				if err := tc.send(n); err != nil {
					t.Fatal(err)
				}
				if got := recv(t, c); got != tc.want {
					t.Errorf("got %q, want %q", got, tc.want)
				}
			})
		}
	}
}

func TestReloadingCarriesMonotonicTime(t *testing.T) {
	c, env := listen(t, filepath.Join(t.TempDir(), "notify"))
	n := New(getenv(env), 1)
	before, _ := monotonic()
	if err := n.Reloading(); err != nil {
		t.Fatal(err)
	}
	after, _ := monotonic()
	got := recv(t, c)
	first, rest, ok := strings.Cut(got, "\n")
	if !ok || first != "RELOADING=1" || !strings.HasPrefix(rest, "MONOTONIC_USEC=") {
		t.Fatalf("got %q, want RELOADING=1 then MONOTONIC_USEC=", got)
	}
	usec, err := strconv.ParseInt(strings.TrimPrefix(rest, "MONOTONIC_USEC="), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	if usec < before.Microseconds() || usec > after.Microseconds() {
		t.Errorf("MONOTONIC_USEC=%d, not within CLOCK_MONOTONIC [%d, %d]", usec, before.Microseconds(), after.Microseconds())
	}
}

// Without NOTIFY_SOCKET (not started by systemd), and on a nil Notifier, nothing is sent and
// nothing fails.
func TestNoSocketIsANoOp(t *testing.T) {
	for _, n := range []*Notifier{New(getenv(nil), 1), nil} {
		if n.Enabled() {
			t.Error("enabled without NOTIFY_SOCKET")
		}
		for _, f := range []func() error{n.Ready, n.Reloading, n.Stopping, n.Watchdog, func() error { return n.Status("x") }} {
			if err := f(); err != nil {
				t.Errorf("no socket: %v", err)
			}
		}
		if _, ok := n.WatchdogInterval(); ok {
			t.Error("watchdog interval without NOTIFY_SOCKET")
		}
	}
}

// A socket nobody listens on is an error, not a silent success.
func TestSendErrorWhenNobodyListens(t *testing.T) {
	n := New(getenv(map[string]string{"NOTIFY_SOCKET": filepath.Join(t.TempDir(), "gone")}), 1)
	if err := n.Ready(); err == nil || !strings.Contains(err.Error(), "sdnotify:") {
		t.Errorf("got %v, want an sdnotify error", err)
	}
}

func TestWatchdogInterval(t *testing.T) {
	cases := []struct {
		usec, pid string
		want      time.Duration
		ok        bool
	}{
		{"30000000", "", 30 * time.Second, true},
		{"30000000", "42", 30 * time.Second, true},
		{"30000000", "43", 0, false}, // meant for another process
		{"", "", 0, false},
		{"0", "", 0, false},
		{"-5", "", 0, false},
		{"1s", "", 0, false},
		{"99999999999999999999", "", 0, false},
	}
	for _, tc := range cases {
		env := map[string]string{"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": tc.usec, "WATCHDOG_PID": tc.pid}
		got, ok := New(getenv(env), 42).WatchdogInterval()
		if got != tc.want || ok != tc.ok {
			t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q: got %v, %v; want %v, %v", tc.usec, tc.pid, got, ok, tc.want, tc.ok)
		}
	}
}

// RunWatchdog pings at once and then every half interval: with WatchdogSec=200ms, about 5
// pings in 450 ms (bounds allow for a slow machine), and it returns when ctx ends.
func TestRunWatchdogPingsAtHalfTheInterval(t *testing.T) {
	c, env := listen(t, filepath.Join(t.TempDir(), "notify"))
	env["WATCHDOG_USEC"] = "200000"
	n := New(getenv(env), 1)
	ctx, cancel := context.WithTimeout(context.Background(), 450*time.Millisecond)
	defer cancel()
	done := make(chan struct{})
	go func() { n.RunWatchdog(ctx, func(err error) { t.Error(err) }); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("RunWatchdog did not return after ctx ended")
	}
	pings := 0
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	buf := make([]byte, 64)
	for range 100 {
		k, err := c.Read(buf)
		if err != nil {
			break
		}
		if string(buf[:k]) != "WATCHDOG=1" {
			t.Fatalf("got %q, want WATCHDOG=1", buf[:k])
		}
		pings++
	}
	// Pings at 0, 100, 200, 300, 400 ms: 5; a full-interval pinger would send 3.
	if pings < 4 || pings > 6 {
		t.Errorf("%d pings in 450 ms at WatchdogSec=200ms, want about 5", pings)
	}
}

// Without WATCHDOG_USEC RunWatchdog returns at once and sends nothing.
func TestRunWatchdogWithoutWatchdog(t *testing.T) {
	c, env := listen(t, filepath.Join(t.TempDir(), "notify"))
	n := New(getenv(env), 1)
	done := make(chan struct{})
	go func() { n.RunWatchdog(context.Background(), nil); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatal("RunWatchdog without WATCHDOG_USEC did not return")
	}
	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if k, err := c.Read(make([]byte, 64)); err == nil {
		t.Errorf("sent %d bytes without a watchdog", k)
	}
}
