//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/netnsbed"
)

// scanConfig has a door whose sequence sits inside nmap's range 1000-1100, so the sweep guard
// band around it (the same evidence the guard uses) is what the capture sees of a scan.
const scanConfig = `[server]
state_dir = "STATE_DIR"
never_ban = [%q]

[[door]]
name = "ssh"
sequence = ["1050/tcp", "1060/tcp", "1070/tcp"]
sources = ["198.18.0.0/16", "fd5e:5a3e::/64"]
open = ["tcp/2222"]
open_for = "30s"

[scan]
window = "10s"
threshold = 10
ban_for = ["8s", "5m"]
`

// banOf returns the remaining time of src's ban in sesame status --json, 0 when none.
func banOf(t *testing.T, out string, src netip.Addr) time.Duration {
	t.Helper()
	var st struct {
		Bans []struct {
			Src         string `json:"src"`
			RemainingMS int64  `json:"remaining_ms"`
			Reason      string `json:"reason"`
		} `json:"bans"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	for _, b := range st.Bans {
		if b.Src == src.String() {
			return time.Duration(b.RemainingMS) * time.Millisecond
		}
	}
	return 0
}

// TestIntegrationScanBan: a real nmap connect scan (-sT -p 1000-1100) earns a timed ban shown
// by sesame status: the scanner's correct knock then opens nothing; sesame revoke --ban lifts it;
// a second scan gets the next, longer ban time; a never_ban scanner is not banned; a knocker
// elsewhere is unaffected.
func TestIntegrationScanBan(t *testing.T) {
	t.Parallel() // mostly waiting for timeouts: paired with another at the end of the run (doc.go)
	nmap, err := exec.LookPath("nmap")
	if err != nil {
		t.Fatal("nmap is not installed (.ci/deps.sh installs it)")
	}
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			bed := skipUnlessRoot(t)
			svc := listen(t, bed, fam)
			extra, err := bed.AddClientAddrs(context.Background(), 2, true)
			if err != nil {
				t.Fatal(err)
			}
			scanner, never, knocker := fam.client, pick(extra, 0, fam), pick(extra, 1, fam)
			sock := operatorSocket(t)
			d, _ := startSesame(t, bed, fmt.Sprintf(scanConfig, never), "--control-socket", sock)
			ctl := func(args ...string) string {
				t.Helper()
				out, err := sesameCtl(sock, nil, args...)
				if err != nil {
					t.Fatalf("sesame %v: %v\n%s\ndaemon:\n%s", args, err, out, d.Output())
				}
				return out
			}
			scan := func(src netip.Addr) {
				t.Helper()
				args := []string{"-sT", "-p", "1000-1100", "-T4", "--max-retries", "0", "-n", "-Pn", "-S", src.String(), "-e", bed.ClientIf}
				if fam.name == "ipv6" {
					args = append(args, "-6")
				}
				args = append(args, fam.server.String())
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				if out, err := netnsbed.Command(ctx, bed.Client, nmap, args...).CombinedOutput(); err != nil {
					t.Fatalf("nmap %v: %v\n%s", args, err, out)
				}
			}
			knockOpens := func(src netip.Addr) bool {
				t.Helper()
				knockFrom(t, bed, src, fam.server, "1050/tcp", "1060/tcp", "1070/tcp")
				return eventually(t, bed, src, svc, true)
			}

			scan(scanner)
			var left time.Duration
			if !waitFor(3*time.Second, func() bool { left = banOf(t, ctl("status", "--json"), scanner); return left > 0 }) {
				t.Fatalf("no ban of %s after nmap -sT; daemon:\n%s", scanner, d.Output())
			}
			if left > 8*time.Second {
				t.Errorf("first ban %v, want at most 8s", left)
			}
			if out := ctl("status"); !strings.Contains(out, scanner.String()) {
				t.Errorf("status text does not show the ban:\n%s", out)
			}
			if knockOpens(scanner) {
				t.Fatalf("banned scanner %s opened tcp/2222 with a correct knock", scanner)
			}
			if !knockOpens(knocker) {
				t.Fatalf("knocker %s, which did not scan, cannot open", knocker)
			}
			if out := ctl("revoke", "--ban", scanner.String()); !strings.Contains(out, "lifted the ban of "+scanner.String()) {
				t.Errorf("revoke --ban: %s", out)
			}
			if banOf(t, ctl("status", "--json"), scanner) != 0 {
				t.Fatal("ban still listed after revoke --ban")
			}
			if !knockOpens(scanner) {
				t.Fatalf("%s cannot open after its ban was lifted; daemon:\n%s", scanner, d.Output())
			}
			// A revoke forgives the offence, so the next scan is a first offence again (8s); once
			// that ban has expired in the kernel, a third scan gets the next time (5m).
			scan(scanner)
			if !waitFor(3*time.Second, func() bool { left = banOf(t, ctl("status", "--json"), scanner); return left > 0 }) {
				t.Fatalf("no ban after the second scan")
			}
			if left > 8*time.Second {
				t.Errorf("ban after a revoke %v, want at most 8s (the revoke forgave the offence)", left)
			}
			if !waitFor(12*time.Second, func() bool { return banOf(t, ctl("status", "--json"), scanner) == 0 }) {
				t.Fatalf("the 8s ban did not expire")
			}
			scan(scanner)
			if !waitFor(3*time.Second, func() bool { left = banOf(t, ctl("status", "--json"), scanner); return left > 0 }) {
				t.Fatalf("no ban after the third scan; daemon:\n%s", d.Output())
			}
			if left <= 8*time.Second || left > 5*time.Minute {
				t.Errorf("repeat ban %v, want more than 8s and at most 5m (escalation)", left)
			}
			scan(never)
			time.Sleep(300 * time.Millisecond)
			if banOf(t, ctl("status", "--json"), never) != 0 {
				t.Errorf("never_ban %s was banned", never)
			}
			// (Its knocks are still ignored for a while by the sweep guard, which never_ban does
			// not change: that is not a ban and ends on its own.)
			if !strings.Contains(d.Output(), `msg="scan from a never_ban source: not banned" src=`+never.String()) {
				t.Errorf("no never_ban line for %s", never)
			}
		})
	}
}
