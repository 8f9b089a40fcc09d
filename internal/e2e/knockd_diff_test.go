//go:build linux

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/netnsbed"
)

// The knockd.conf both daemons run (knockd's own test config, BEHAVIOUR.md), with the events
// file and log file filled in per daemon.
const diffConf = `[options]
	LogFile = DIR/daemon.log

[openA]
	sequence    = 7000,8000,9000
	seq_timeout = 2
	tcpflags    = syn
	command     = echo "A %IP%" >> DIR/events

[openB]
	sequence    = 7100,8100:udp,9100
	seq_timeout = 2
	command     = echo "B %IP%" >> DIR/events
`

// hit is one packet of a differential case: a port with protocol and TCP flags.
type hit struct {
	port  uint16
	udp   bool
	flags uint8
}

const (
	synF = 0x02
	finF = 0x01
	ackF = 0x10
)

func S(p uint16) hit  { return hit{port: p, flags: synF} }
func U(p uint16) hit  { return hit{port: p, udp: true} }
func SA(p uint16) hit { return hit{port: p, flags: synF | ackF} }
func F(p uint16) hit  { return hit{port: p, flags: finF} }

// TestIntegrationKnockdDifferential runs the same knockd.conf under the real Debian knockd and
// under 'sesame server --knockd-conf', sends the same packets to both, and compares which doors
// opened for which source. They agree except where sesame is documented to be better
// (docs/MIGRATING-FROM-KNOCKD.md): duplicates and retransmissions, and restarting a knock.
func TestIntegrationKnockdDifferential(t *testing.T) {
	bed := skipUnlessRoot(t)
	knockd, err := exec.LookPath("knockd")
	if err != nil {
		t.Fatal("knockd is not installed (.ci/deps.sh installs it): the differential test needs the real knockd")
	}
	cases := []struct {
		name           string
		hits           []hit
		knockd, sesame string // doors opened ("" none)
	}{
		{"b0 correct sequence", []hit{S(7000), S(8000), S(9000)}, "A", "A"},
		{"door B with a udp knock", []hit{S(7100), U(8100), S(9100)}, "B", "B"},
		{"b1 unrelated port in between", []hit{S(7000), S(1234), S(8000), S(9000)}, "A", "A"},
		{"b2 other door's port resets", []hit{S(7000), S(9100), S(8000), S(9000)}, "", ""},
		{"b6 other door's udp port resets", []hit{S(7000), U(8100), S(8000), S(9000)}, "", ""},
		{"b12 wrong order", []hit{S(7000), S(9000), S(8000), S(9000)}, "", ""},
		{"b4 restart after a failure", []hit{S(7000), S(9100), S(7000), S(8000), S(9000)}, "A", "A"},
		{"b9 stray later port first", []hit{S(8000), S(7000), S(8000), S(9000)}, "A", "A"},
		{"b10 FIN knocks do not match tcpflags=syn", []hit{F(7000), F(8000), F(9000)}, "", ""},
		{"b10b SYN+ACK matches tcpflags=syn", []hit{SA(7000), SA(8000), SA(9000)}, "A", "A"},
		{"b14 extra knock after opening", []hit{S(7000), S(8000), S(9000), S(9000)}, "A", "A"},
		{"reverse order", []hit{S(9000), S(8000), S(7000)}, "", ""},
		// Documented improvements: a duplicate (a retransmitted SYN) never breaks a sequence.
		{"b3 first knock duplicated", []hit{S(7000), S(7000), S(8000), S(9000)}, "", "A"},
		{"b7 middle knock duplicated", []hit{S(7000), S(8000), S(8000), S(9000)}, "", "A"},
		{"b11 knock restarted mid-way", []hit{S(7000), S(8000), S(7000), S(8000), S(9000)}, "", "A"},
	}
	extra, err := bed.AddClientAddrs(context.Background(), len(cases)+2, false)
	if err != nil {
		t.Fatal(err)
	}

	kdir, sdir := t.TempDir(), t.TempDir()
	for _, dir := range []string{kdir, sdir} {
		if err := os.WriteFile(filepath.Join(dir, "knockd.conf"), []byte(strings.ReplaceAll(diffConf, "DIR", dir)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	startDaemon(t, bed.Server, "", knockd, "-i", bed.ServerIf, "-c", filepath.Join(kdir, "knockd.conf"))
	if !waitFor(10*time.Second, func() bool {
		b, _ := os.ReadFile(filepath.Join(kdir, "daemon.log"))
		return strings.Contains(string(b), "listening on")
	}) {
		t.Fatal("knockd did not start")
	}
	startDaemon(t, bed.Server, "sesame server running", sesameBin, "server", "--knockd-conf", filepath.Join(sdir, "knockd.conf"), "--log-level", "debug")

	for i, tc := range cases {
		src := extra[i]
		for _, h := range tc.hits {
			if h.udp {
				sendOne(t, bed, src, netnsbed.Server4, strconv.Itoa(int(h.port))+"/udp")
			} else {
				sendRawTCP(t, bed, src, netnsbed.Server4, h.port, h.flags)
			}
			time.Sleep(2 * time.Millisecond)
		}
		// knockd forgets a failed or stale attempt lazily and, doing so, wipes every other
		// source's attempt (BEHAVIOUR.md §F): let every case's leftovers expire first.
		time.Sleep(2100 * time.Millisecond)
	}
	// Interleaved knockers: knockd opens only one of them (its global-wipe bug); sesame both.
	a, b := extra[len(cases)], extra[len(cases)+1]
	for _, p := range []uint16{7000, 8000, 9000} {
		sendRawTCP(t, bed, a, netnsbed.Server4, p, synF)
		time.Sleep(5 * time.Millisecond)
		sendRawTCP(t, bed, b, netnsbed.Server4, p, synF)
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)

	kev, sev := readEvents(t, kdir), readEvents(t, sdir)
	for i, tc := range cases {
		src := extra[i].String()
		if got := kev[src]; got != tc.knockd {
			t.Errorf("%s: knockd opened %q, want %q", tc.name, got, tc.knockd)
		}
		if got := sev[src]; got != tc.sesame {
			t.Errorf("%s: sesame opened %q, want %q", tc.name, got, tc.sesame)
		}
		t.Logf("%-45s knockd %-2q sesame %-2q", tc.name, kev[src], sev[src])
	}
	if n := len(kev[a.String()] + kev[b.String()]); n != 1 {
		t.Errorf("interleaved pair: knockd opened %d of 2 (its documented defect is 1 of 2)", n)
	}
	if got := sev[a.String()] + sev[b.String()]; got != "AA" {
		t.Errorf("interleaved pair: sesame opened %q, want both", got)
	}
}

// readEvents returns, per source, the doors opened (sorted letters) from an events file.
func readEvents(t *testing.T, dir string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "events"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	m := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 {
			m[f[1]] = append(m[f[1]], f[0])
		}
	}
	out := map[string]string{}
	for k, v := range m {
		sort.Strings(v)
		out[k] = strings.Join(v, "")
	}
	return out
}

var _ = fmt.Sprintf
var _ = netip.Addr{}
