//go:build linux

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/benchkit"
	"github.com/sesame-knock/sesame/internal/control"
	"github.com/sesame-knock/sesame/internal/netnsbed"
	"github.com/sesame-knock/sesame/internal/server"
)

// commandsConf has two doors: "fast" stops cmd_timeout = 2 s after it starts, "slow" an hour
// later, so its stops can only run when the daemon stops.
const commandsConf = `[options]
	LogFile = DIR/knockd.log

[fast]
	sequence      = 7000,8000:udp,9000
	seq_timeout   = 60
	tcpflags      = syn
	start_command = echo start-fast %IP% >> DIR/events
	cmd_timeout   = 2
	stop_command  = echo stop-fast %IP% >> DIR/events

[slow]
	sequence      = 7100,8100:udp,9100
	seq_timeout   = 60
	tcpflags      = syn
	start_command = echo start-slow %IP% >> DIR/events
	cmd_timeout   = 3600
	stop_command  = echo stop-slow %IP% >> DIR/events
`

// TestIntegrationThousandCommands: 1000 sources complete two knockd.conf doors at once. Every
// start command runs (none is refused for lack of workers), every fast stop runs after its
// cmd_timeout, and every slow stop (an hour away) runs when the daemon gets SIGTERM.
func TestIntegrationThousandCommands(t *testing.T) {
	bed := skipUnlessRoot(t)
	const n = 1000
	srcs, err := bed.AddClientAddrs(t.Context(), n, false)
	if err != nil {
		t.Fatal(err)
	}
	link, err := benchkit.LinkBetween(bed.Client, bed.ClientIf, bed.Server, bed.ServerIf)
	if err != nil {
		t.Fatal(err)
	}
	// Static neighbours: the server's replies to 1000 fresh addresses must not overflow the
	// shared ARP table (see bench/env.go).
	var neigh strings.Builder
	for _, a := range srcs {
		fmt.Fprintf(&neigh, "neigh replace %s lladdr %s dev %s nud permanent\n", a, link.Src, bed.ServerIf)
	}
	ip := netnsbed.Command(t.Context(), bed.Server, "ip", "-batch", "-")
	ip.Stdin = strings.NewReader(neigh.String())
	if out, err := ip.CombinedOutput(); err != nil {
		t.Fatalf("ip neigh: %v: %s", err, out)
	}

	dir := t.TempDir()
	path := filepath.Join(dir, "knockd.conf")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(commandsConf, "DIR", dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(shortTempDir(t), "control.sock")
	d := startDaemon(t, bed.Server, "sesame server running", sesameBin, "server", "--knockd-conf", path, "--control-socket", sock)

	// Door by door, interleaved: every source's first knock, then every second, then every
	// third, so each door's 1000 sequences complete within a few milliseconds. (A knock on the
	// other door while one is in progress would be a wrong knock: knockd's semantics.)
	var frames [][]byte
	for _, base := range []uint16{7000, 7100} {
		for stage := range 3 {
			port := base + 1000*uint16(stage)
			for i, src := range srcs {
				buf := make([]byte, 128)
				sport := uint16(20000 + i)
				if stage == 1 {
					frames = append(frames, buf[:benchkit.WriteUDP(buf, &link, src, netnsbed.Server4, sport, port, nil)])
				} else {
					frames = append(frames, buf[:benchkit.WriteTCPSYN(buf, &link, src, netnsbed.Server4, sport, port, uint32(i))])
				}
			}
		}
	}
	res, err := benchkit.Flood(t.Context(), benchkit.FloodConfig{
		NS: bed.Client, Ifname: bed.ClientIf, DstMAC: link.Dst, Rate: 50000, Count: uint64(len(frames)), Duration: time.Minute,
		Pattern: func(buf []byte, i uint64, _ *benchkit.Rand) int { return copy(buf, frames[i]) },
	})
	if err != nil || res.Sent != uint64(len(frames)) {
		t.Fatalf("inject: sent %d of %d frames: %v", res.Sent, len(frames), err)
	}

	events := filepath.Join(dir, "events")
	count := func() map[string]map[string]int {
		data, _ := os.ReadFile(events)
		out := map[string]map[string]int{}
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			what, addr, ok := strings.Cut(line, " ")
			if !ok {
				continue
			}
			if out[what] == nil {
				out[what] = map[string]int{}
			}
			out[what][addr]++
		}
		return out
	}
	// check reports whether every source appears exactly once under each of whats.
	check := func(c map[string]map[string]int, whats ...string) error {
		for _, what := range whats {
			if len(c[what]) != n {
				return fmt.Errorf("%s ran for %d distinct sources, want %d", what, len(c[what]), n)
			}
			for _, a := range srcs {
				if k := c[what][a.String()]; k != 1 {
					return fmt.Errorf("%s ran %d times for %s, want 1", what, k, a)
				}
			}
		}
		return nil
	}
	var last error
	if !waitFor(60*time.Second, func() bool {
		last = check(count(), "start-fast", "start-slow", "stop-fast")
		return last == nil
	}) {
		opened := strings.Count(d.Output(), "door opened")
		t.Fatalf("after 60 s: %v (the daemon logged %d doors opened)", last, opened)
	}
	if c := count(); len(c["stop-slow"]) != 0 {
		t.Fatalf("%d slow stops ran before their hour", len(c["stop-slow"]))
	}
	if strings.Contains(d.Output(), "command not run") {
		t.Error("the daemon refused commands")
	}

	// A start command's line is in the events file before its shell has exited and its stop is
	// scheduled: wait until the daemon holds all 1000 slow stops, so that SIGTERM finds them
	// pending (a start still running at SIGTERM also gets its stop, but not in the count logged).
	ctl := control.NewClient(sock)
	var cs server.CommandStats
	if !waitFor(30*time.Second, func() bool {
		st, err := ctl.Stats(t.Context())
		cs = st.Commands
		return err == nil && cs.PendingStops == n && cs.Running == 0 && cs.Queued == 0
	}) {
		t.Fatalf("the daemon's commands never settled at %d pending stops: %+v", n, cs)
	}

	// SIGTERM: the 1000 slow stops, an hour early, run before the daemon exits.
	if err := d.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.Done():
	case <-time.After(60 * time.Second):
		t.Fatal("the daemon did not exit within 60 s of SIGTERM")
	}
	if err := d.Err(); err != nil {
		t.Errorf("the daemon exited with %v", err)
	}
	if err := check(count(), "start-fast", "start-slow", "stop-fast", "stop-slow"); err != nil {
		t.Errorf("after SIGTERM: %v", err)
	}
	if !strings.Contains(d.Output(), "stops=1000") {
		t.Errorf("the daemon did not say it ran 1000 pending stops at shutdown")
	}
}
