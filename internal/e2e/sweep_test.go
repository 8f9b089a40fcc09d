package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/netnsbed"
)

// TestIntegrationNonSYNSweeps: a knockd.conf door without TCPFlags (knockd's default: any
// segment counts) whose sequence lies inside a swept range is not walked by the real nmap's
// sequential FIN, NULL or ACK scans (-sF, -sN, -sA -r): the sweep guard counts those segments
// too. The real knock client still opens it. Open and closed are judged by data both ways.
func TestIntegrationNonSYNSweeps(t *testing.T) {
	bed := skipUnlessRoot(t)
	nmap, err := exec.LookPath("nmap")
	if err != nil {
		t.Fatal("nmap is not installed (.ci/deps.sh installs it)")
	}
	knockBin, err := exec.LookPath("knock")
	if err != nil {
		t.Fatal("knock is not installed (.ci/deps.sh installs knockd)")
	}
	dir := t.TempDir()
	conf := strings.ReplaceAll(`[options]
	LogFile = DIR/knockd.log

[openSSH]
	sequence    = 7000,8000,9000
	seq_timeout = 3
	open        = tcp/2222
	open_for    = 2
`, "DIR", dir)
	path := filepath.Join(dir, "knockd.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	echoes := map[string]*echo{}
	for _, fam := range families {
		echoes[fam.name] = sweepEchoService(t, bed, netip.AddrPortFrom(fam.server, 2222))
	}
	startDaemon(t, bed.Server, "sesame server running", sesameBin, "server", "--knockd-conf", path, "--firewall", "nftables")

	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			svc, e := netip.AddrPortFrom(fam.server, 2222), echoes[fam.name]
			if dataBothWays(bed, fam.client, svc, e) {
				t.Fatal("the service answers before any knock")
			}
			for _, scan := range []string{"-sF", "-sN", "-sA"} {
				args := []string{scan, "-r", "-p", "6990-9010", "-T4", "--max-retries", "0", "-n", "-Pn", fam.server.String()}
				if fam.server.Is6() {
					args = append([]string{"-6"}, args...)
				}
				ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
				start := time.Now()
				out, err := netnsbed.Command(ctx, bed.Client, nmap, args...).CombinedOutput()
				cancel()
				if err != nil {
					t.Fatalf("nmap %v: %v\n%s", args, err, out)
				}
				t.Logf("nmap %s over 2021 ports took %v", scan, time.Since(start).Round(time.Millisecond))
				if dataBothWays(bed, fam.client, svc, e) {
					t.Fatalf("nmap %s -r over the range walked the door open", scan)
				}
			}
			// The guard ignores the scanning source until seq_timeout after its last guard hit.
			time.Sleep(3500 * time.Millisecond)
			kargs := []string{fam.server.String(), "7000", "8000", "9000"}
			if fam.server.Is6() {
				kargs = append([]string{"-6"}, kargs...)
			}
			if out, err := netnsbed.Command(t.Context(), bed.Client, knockBin, kargs...).CombinedOutput(); err != nil {
				t.Fatalf("knock %v: %v\n%s", kargs, err, out)
			}
			if !waitFor(2*time.Second, func() bool { return dataBothWays(bed, fam.client, svc, e) }) {
				t.Fatal("a proper knock after the scans did not open the door")
			}
			// Let the grant lapse before the next family's scans.
			time.Sleep(2500 * time.Millisecond)
		})
	}
}

// echo is the service behind the gate: it greets each connection, reads one line back and
// records it, so that a test can see data go both ways.
type echo struct {
	got chan string
}

// sweepEchoService listens on addr in the bed's server namespace until the test ends.
func sweepEchoService(t *testing.T, bed *netnsbed.Bed, addr netip.AddrPort) *echo {
	t.Helper()
	var ln net.Listener
	err := netnsbed.Do(bed.Server, func() error {
		l, err := net.Listen("tcp", addr.String())
		ln = l
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	e := &echo{got: make(chan string, 16)}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(2 * time.Second))
				if _, err := c.Write([]byte("hello\n")); err != nil {
					return
				}
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil {
					return
				}
				select {
				case e.got <- strings.TrimSpace(line):
				default:
				}
			}()
		}
	}()
	return e
}

var echoSeq atomic.Uint64

// dataBothWays reports whether src reaches the echo service at dst: the greeting arrives and
// the client's reply reaches the service.
func dataBothWays(bed *netnsbed.Bed, src netip.Addr, dst netip.AddrPort, e *echo) bool {
	c, err := netnsbed.Dial(bed.Client, src, dst, 400*time.Millisecond)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	greeting, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || greeting != "hello\n" {
		return false
	}
	token := fmt.Sprintf("reply-%d", echoSeq.Add(1))
	if _, err := c.Write([]byte(token + "\n")); err != nil {
		return false
	}
	timeout := time.After(time.Second)
	for {
		select {
		case got := <-e.got:
			if got == token {
				return true
			}
		case <-timeout:
			return false
		}
	}
}
