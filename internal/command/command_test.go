package command

import (
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestExpand(t *testing.T) {
	tests := []struct{ tmpl, addr, want string }{
		{"iptables -A INPUT -s %IP% -j ACCEPT", "198.18.0.2", "iptables -A INPUT -s 198.18.0.2 -j ACCEPT"},
		{"%IP% %IP%", "fe80::1%eth0", "fe80::1 fe80::1"},
		{"x %IP%", "::ffff:198.18.0.2", "x 198.18.0.2"},
		{"no token", "198.18.0.2", "no token"},
	}
	for _, tc := range tests {
		if got := Expand(tc.tmpl, netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("Expand(%q, %s) = %q, want %q", tc.tmpl, tc.addr, got, tc.want)
		}
	}
}

func TestRunnerStartStop(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "events")
	r := NewRunner(slog.New(slog.NewTextHandler(io.Discard, nil)))
	r.Run(Job{Door: "d", Addr: netip.MustParseAddr("198.18.0.2"), Start: "echo start %IP% >> " + out, Stop: "echo stop %IP% >> " + out, Delay: 50 * time.Millisecond})
	r.Run(Job{Door: "d", Addr: netip.MustParseAddr("198.18.0.3"), Start: "echo start %IP% >> " + out, Stop: "echo stop %IP% >> " + out, Delay: time.Hour})
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(out)
		if strings.Count(string(b), "\n") >= 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Close runs the pending stop (the one an hour away) at once.
	r.Close()
	b, _ := os.ReadFile(out)
	for _, want := range []string{"start 198.18.0.2", "stop 198.18.0.2", "start 198.18.0.3", "stop 198.18.0.3"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("events %q lack %q", b, want)
		}
	}
}
