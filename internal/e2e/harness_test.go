package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/knockclient"
	"github.com/sesame-knock/sesame/internal/netnsbed"
	"github.com/sesame-knock/sesame/internal/netnsbed/netnstest"
	"github.com/sesame-knock/sesame/internal/netport"
)

// sesameBin is the binary under test, built once by TestMain when running as root.
var sesameBin string

func TestMain(m *testing.M) {
	code := func() int {
		if bin := os.Getenv("SESAME_BIN"); bin != "" && os.Geteuid() == 0 {
			// A prebuilt binary, for A/B benchmarks of two builds on one bed
			// (docs/BENCHMARKS.md); the tests themselves always build the tree's own.
			sesameBin = bin
		} else if os.Geteuid() == 0 {
			dir, err := os.MkdirTemp("", "sesame-e2e-")
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			defer os.RemoveAll(dir)
			sesameBin = filepath.Join(dir, "sesame")
			cmd := exec.Command("go", "build", "-o", sesameBin, "github.com/sesame-knock/sesame/cmd/sesame")
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "build sesame: %v\n%s", err, out)
				return 1
			}
		}
		return m.Run()
	}()
	os.Exit(code)
}

// daemon is a sesame server, knockd or fwknopd running in a bed's server namespace.
type daemon = netnsbed.Daemon

// startDaemon runs name args in ns, stops it when the test ends, and waits until its output
// contains ready. A sesame server (name or an argument is sesameBin, then "server") gets a
// control socket of its own in a temporary directory unless args name one: the default path is
// shared by every namespace, and a second daemon on it would refuse to start.
func startDaemon(t testing.TB, ns, ready string, name string, args ...string) *daemon {
	t.Helper()
	// (Not with SESAME_BIN: an A/B benchmark may run an older build without the flag, one daemon
	// at a time, so the default path serves.)
	if i := slices.Index(append([]string{name}, args...), sesameBin); sesameBin != "" && os.Getenv("SESAME_BIN") == "" && i >= 0 && i < len(args) && args[i] == "server" &&
		!slices.Contains(args, "--control-socket") && !slices.Contains(args, "--check") {
		args = append(slices.Clone(args), "--control-socket", filepath.Join(shortTempDir(t), "control.sock"))
	}
	d, err := netnsbed.StartDaemon(ns, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		d.Stop(syscall.SIGKILL)
		if t.Failed() {
			t.Logf("%s output:\n%s", name, d.Output())
		}
	})
	if ready != "" && !d.WaitOutput(ready, 10*time.Second) {
		t.Fatalf("%s did not become ready (%q) in 10s; output:\n%s", name, ready, d.Output())
	}
	return d
}

// startSesame writes cfg to a file and runs 'sesame server -c' in the bed's server namespace.
func startSesame(t *testing.T, bed *netnsbed.Bed, cfg string, extra ...string) (*daemon, string) {
	t.Helper()
	if sesameBin == "" {
		t.Fatal("sesame binary not built")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "sesame.toml")
	cfg = strings.ReplaceAll(cfg, "STATE_DIR", dir)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"server", "-c", path, "--log-level", "debug"}, extra...)
	return startDaemon(t, bed.Server, "sesame server running", sesameBin, args...), path
}

// waitFor polls cond until it holds or timeout passes.
var waitFor = netnsbed.WaitFor

// knockFrom sends a sequence from src (any client address when invalid) in the client namespace.
func knockFrom(t *testing.T, bed *netnsbed.Bed, src, dst netip.Addr, seq ...string) {
	t.Helper()
	for _, s := range seq {
		sendOne(t, bed, src, dst, s)
	}
}

// sendOne sends one knock like "7000/tcp".
func sendOne(t *testing.T, bed *netnsbed.Bed, src, dst netip.Addr, el string) {
	t.Helper()
	e := parseElement(t, el)
	err := netnsbed.Do(bed.Client, func() error {
		return knockclient.SendOne(context.Background(), src, dst, e)
	})
	if err != nil {
		t.Fatalf("knock %s from %s to %s: %v", el, src, dst, err)
	}
}

func parseElement(t *testing.T, s string) netport.Port {
	t.Helper()
	num, proto, _ := strings.Cut(s, "/")
	if num == "icmp" {
		return netport.Port{Proto: netport.ICMP}
	}
	p, err := netport.Parse(proto + "/" + num)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// canConnect reports whether the service at dst answers src with data both ways (its greeting,
// then the echo of a nonce: netnsbed.CanConnect), within a short timeout.
func canConnect(t *testing.T, bed *netnsbed.Bed, src netip.Addr, dst netip.AddrPort) bool {
	t.Helper()
	ok, err := netnsbed.CanConnect(bed.Client, src, dst, 400*time.Millisecond)
	if err != nil {
		t.Fatalf("connect %s -> %s: %v", src, dst, err)
	}
	return ok
}

// eventually waits up to 2 s for canConnect to give want.
func eventually(t *testing.T, bed *netnsbed.Bed, src netip.Addr, dst netip.AddrPort, want bool) bool {
	t.Helper()
	return waitFor(2*time.Second, func() bool { return canConnect(t, bed, src, dst) == want })
}

// nft runs nft in ns and returns its output.
func nft(t *testing.T, ns string, args ...string) string {
	t.Helper()
	out, err := netnsbed.Command(context.Background(), ns, "nft", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("nft %v: %v: %s", args, err, out)
	}
	return string(out)
}

// family is one address family of a bed.
type family struct {
	name           string
	server, client netip.Addr
}

var families = []family{
	{"ipv4", netnsbed.Server4, netnsbed.Client4},
	{"ipv6", netnsbed.Server6, netnsbed.Client6},
}

func skipUnlessRoot(t *testing.T) *netnsbed.Bed {
	t.Helper()
	netnstest.SkipUnlessRoot(t)
	return netnstest.NewT(t)
}

func mustAddr(t *testing.T, s string) netip.Addr {
	t.Helper()
	a, err := netip.ParseAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// shortTempDir is a temporary directory with a short path, removed when the test ends: a unix
// socket's path must fit in 108 bytes, which t.TempDir's (named after the test) may not.
func shortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "se")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
