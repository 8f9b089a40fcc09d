package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/knockclient"
	"github.com/sesame-knock/sesame/internal/netnsbed"
	"github.com/sesame-knock/sesame/internal/netport"
)

// sesameBin is the binary under test, built once by TestMain when running as root.
var sesameBin string

func TestMain(m *testing.M) {
	code := func() int {
		if os.Geteuid() == 0 {
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

// syncBuffer collects a process's output safely.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// daemon is a sesame server (or knockd) running in a bed's server namespace.
type daemon struct {
	t      *testing.T
	cmd    *exec.Cmd
	out    *syncBuffer
	done   chan struct{}
	waited error
}

// startDaemon runs name args in ns and waits until its output contains ready.
func startDaemon(t *testing.T, ns, ready string, name string, args ...string) *daemon {
	t.Helper()
	d := &daemon{t: t, out: &syncBuffer{}, done: make(chan struct{})}
	d.cmd = netnsbed.Command(context.Background(), ns, name, args...)
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { d.waited = d.cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		d.stop(syscall.SIGKILL)
		if t.Failed() {
			t.Logf("%s output:\n%s", name, d.out.String())
		}
	})
	if ready != "" && !d.waitLog(ready, 10*time.Second) {
		t.Fatalf("%s did not become ready (%q) in 10s; output:\n%s", name, ready, d.out.String())
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

// stop sends sig and waits up to 10 s for the process to end.
func (d *daemon) stop(sig syscall.Signal) {
	select {
	case <-d.done:
		return
	default:
	}
	d.cmd.Process.Signal(sig)
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		d.cmd.Process.Kill()
		<-d.done
	}
}

// waitLog waits until the output contains s.
func (d *daemon) waitLog(s string, timeout time.Duration) bool {
	return waitFor(timeout, func() bool { return strings.Contains(d.out.String(), s) })
}

// waitFor polls cond every 20 ms until it holds or timeout passes.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

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

// canConnect reports whether a TCP connection from src to dst succeeds (short timeout).
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
	netnsbed.SkipUnlessRoot(t)
	return netnsbed.NewT(t)
}

func mustAddr(t *testing.T, s string) netip.Addr {
	t.Helper()
	a, err := netip.ParseAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
