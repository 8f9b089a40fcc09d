//go:build linux

package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/netnsbed"
)

// debianKnockdConf is /etc/knockd.conf as Debian's knockd 0.8-2+b4 package installs it, and its
// SHA-256: the test refuses an edited copy.
const (
	debianKnockdConf    = "testdata/debian/knockd.conf"
	debianKnockdConfSum = "b49e1c1843b9eb879d3e09b829233ab9068cf131213a008c9a59c6277cd539ee"
)

// pristine reads a committed copy of a file shipped by a Debian package and checks that it is
// byte for byte the shipped file.
func pristine(t *testing.T, path, sum string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := sha256.Sum256(b); hex.EncodeToString(got[:]) != sum {
		t.Fatalf("%s is not the file the Debian package ships (sha256 %x, want %s)", path, got, sum)
	}
	return b
}

// knockReal runs the real knock client in the bed's client namespace.
func knockReal(t *testing.T, bed *netnsbed.Bed, host netip.Addr, ports ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := netnsbed.Command(ctx, bed.Client, "knock", append([]string{"-v", host.String()}, ports...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("knock %v: %v\n%s", ports, err, out)
	}
}

// TestIntegrationDebianKnockdConf runs Debian's shipped knockd.conf, unchanged, with 'sesame
// server --knockd-conf', knocked by the real knock client, in front of a service on tcp/22 (the
// netnsbed greeting-and-echo service; OpenSSH is not needed to show the gate). Its openSSH door
// runs '/sbin/iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT' and closeSSH the same
// with -D. What that does depends on how the admin closed port 22:
//
//   - INPUT policy DROP: the appended ACCEPT is reached, so openSSH opens (data both ways) and
//     closeSSH closes again. Each openSSH adds one more copy of the rule and each closeSSH
//     deletes one, so two opens need two closes.
//   - an appended '-A INPUT -p tcp --dport 22 -j DROP' rule: the ACCEPT lands after the DROP
//     and is never reached: the knock runs the command and the port stays closed.
func TestIntegrationDebianKnockdConf(t *testing.T) {
	if _, err := exec.LookPath("knock"); err != nil {
		t.Fatal("the knock client is not installed (.ci/deps.sh installs knockd, which ships it)")
	}
	conf := pristine(t, debianKnockdConf, debianKnockdConfSum)
	rule := "-A INPUT -s " + netnsbed.Client4.String() + "/32 -p tcp -m tcp --dport 22 -j ACCEPT"
	drop := "-A INPUT -p tcp -m tcp --dport 22 -j DROP"
	tests := []struct {
		name  string
		setup [][]string // iptables commands in the server namespace
		opens bool
	}{
		{"INPUT policy DROP", [][]string{
			{"-A", "INPUT", "-i", "lo", "-j", "ACCEPT"},
			{"-A", "INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"},
			{"-P", "INPUT", "DROP"},
		}, true},
		{"DROP rule for port 22", [][]string{
			{"-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "DROP"},
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bed := skipUnlessRoot(t)
			ctx, cancel := context.WithCancel(context.Background())
			t.Cleanup(cancel)
			svc := netip.AddrPortFrom(netnsbed.Server4, 22)
			if _, err := netnsbed.Listen(ctx, bed.Server, svc); err != nil {
				t.Fatal(err)
			}
			extra, err := bed.AddClientAddrs(ctx, 1, false)
			if err != nil {
				t.Fatal(err)
			}
			for _, args := range tt.setup {
				iptables(t, bed.Server, args...)
			}
			if canConnect(t, bed, netnsbed.Client4, svc) {
				t.Fatal("port 22 is open before any knock: the admin's setup did not close it")
			}
			path := filepath.Join(t.TempDir(), "knockd.conf")
			if err := os.WriteFile(path, conf, 0o600); err != nil {
				t.Fatal(err)
			}
			d := startDaemon(t, bed.Server, "sesame server running", sesameBin, "server", "--knockd-conf", path, "--log-level", "debug")
			rules := func() int { return strings.Count(iptables(t, bed.Server, "-S", "INPUT"), rule+"\n") }
			waitRules := func(what string, n int) {
				t.Helper()
				if !waitFor(3*time.Second, func() bool { return rules() == n }) {
					t.Fatalf("%s: %d copies of %q in INPUT, want %d:\n%s", what, rules(), rule, n, iptables(t, bed.Server, "-S", "INPUT"))
				}
			}

			knockReal(t, bed, netnsbed.Server4, "7000", "8000", "9000")
			waitRules("after openSSH", 1)
			if in := iptables(t, bed.Server, "-S", "INPUT"); !tt.opens && strings.Index(in, rule) < strings.Index(in, drop) {
				t.Fatalf("the appended ACCEPT is not after the DROP rule:\n%s", in)
			}
			if tt.opens {
				if !eventually(t, bed, netnsbed.Client4, svc, true) {
					t.Fatal("no greeting and echo on port 22 after the openSSH knock")
				}
			} else if waitFor(time.Second, func() bool { return canConnect(t, bed, netnsbed.Client4, svc) }) {
				t.Fatal("port 22 opened although the ACCEPT was appended after the DROP rule")
			}
			if canConnect(t, bed, extra[0], svc) {
				t.Fatal("another source reaches port 22")
			}

			// A second openSSH adds a second copy; one closeSSH leaves one.
			knockReal(t, bed, netnsbed.Server4, "7000", "8000", "9000")
			waitRules("after a second openSSH", 2)
			knockReal(t, bed, netnsbed.Server4, "9000", "8000", "7000")
			waitRules("after one closeSSH", 1)
			if got := canConnect(t, bed, netnsbed.Client4, svc); got != tt.opens {
				t.Fatalf("after two openSSH and one closeSSH: open %v, want %v", got, tt.opens)
			}
			knockReal(t, bed, netnsbed.Server4, "9000", "8000", "7000")
			waitRules("after a second closeSSH", 0)
			if !eventually(t, bed, netnsbed.Client4, svc, false) {
				t.Fatal("port 22 still open after closeSSH removed the last ACCEPT")
			}

			// openHTTPS runs a program no Debian package installs: the command fails.
			knockReal(t, bed, netnsbed.Server4, "12345", "54321", "24680", "13579")
			if !waitFor(3*time.Second, func() bool {
				return strings.Contains(d.Output(), `msg="command failed" door=openHTTPS src=`+netnsbed.Client4.String())
			}) {
				t.Fatalf("no failed openHTTPS command in the log:\n%s", tail(d.Output()))
			}
			// No Command_6: an IPv6 knock runs the IPv4 command, which iptables refuses.
			knockReal(t, bed, netnsbed.Server6, "7000", "8000", "9000")
			if !waitFor(3*time.Second, func() bool {
				return strings.Contains(d.Output(), `msg="command failed" door=openSSH src=`+netnsbed.Client6.String())
			}) {
				t.Fatalf("no failed openSSH command for the IPv6 knock in the log:\n%s", tail(d.Output()))
			}
		})
	}
}

// iptables runs iptables in ns and returns its output.
func iptables(t *testing.T, ns string, args ...string) string {
	t.Helper()
	out, err := netnsbed.Command(context.Background(), ns, "iptables", append([]string{"-w"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("iptables %v: %v: %s", args, err, out)
	}
	return string(out)
}
