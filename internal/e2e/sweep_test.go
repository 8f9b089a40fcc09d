package e2e

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
	for _, fam := range families {
		if _, err := netnsbed.Listen(t.Context(), bed.Server, netip.AddrPortFrom(fam.server, 2222)); err != nil {
			t.Fatal(err)
		}
	}
	startDaemon(t, bed.Server, "sesame server running", sesameBin, "server", "--knockd-conf", path, "--firewall", "nftables")

	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			svc := netip.AddrPortFrom(fam.server, 2222)
			if canConnect(t, bed, fam.client, svc) {
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
				if canConnect(t, bed, fam.client, svc) {
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
			if !waitFor(2*time.Second, func() bool { return canConnect(t, bed, fam.client, svc) }) {
				t.Fatal("a proper knock after the scans did not open the door")
			}
			// Let the grant lapse before the next family's scans.
			time.Sleep(2500 * time.Millisecond)
		})
	}
}
