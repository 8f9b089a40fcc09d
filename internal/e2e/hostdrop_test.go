//go:build linux

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/netnsbed"
)

// The host firewall of these tests: the tutorial rule that drops the protected port further down
// INPUT, and no ESTABLISHED rule.
var hostDropRule = []string{"-A", "INPUT", "-p", "tcp", "--dport", "2222", "-j", "DROP"}

// The fix docs/FIREWALL.md gives for the nftables backend behind such a rule.
var connmarkAccept = []string{"-I", "INPUT", "-m", "connmark", "--mark", "0x20000000/0x20000000", "-j", "ACCEPT"}

func ipt(t *testing.T, bed *netnsbed.Bed, args []string) {
	t.Helper()
	for _, cmd := range []string{"iptables", "ip6tables"} {
		if out, err := netnsbed.Command(context.Background(), bed.Server, cmd, append([]string{"-w"}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v: %s", cmd, args, err, out)
		}
	}
}

// greetEcho starts the bed's service (netnsbed.Listen: a greeting, then echoes) on addr in the
// server namespace until the test ends.
func greetEcho(t *testing.T, bed *netnsbed.Bed, addr netip.AddrPort) {
	t.Helper()
	if _, err := netnsbed.Listen(t.Context(), bed.Server, addr); err != nil {
		t.Fatal(err)
	}
}

// openSession connects from src and proves data both ways (greeting and echo).
func openSession(bed *netnsbed.Bed, src netip.Addr, dst netip.AddrPort) (*netnsbed.Session, error) {
	return netnsbed.Open(bed.Client, src, dst, 1500*time.Millisecond)
}

// waitSession retries openSession for up to 3 s (a grant takes a moment to land).
func waitSession(t *testing.T, bed *netnsbed.Bed, src netip.Addr, dst netip.AddrPort) *netnsbed.Session {
	t.Helper()
	var s *netnsbed.Session
	var err error
	if !waitFor(3*time.Second, func() bool { s, err = openSession(bed, src, dst); return err == nil }) {
		t.Fatalf("no data both ways with %s through the gate from %s: %v", dst, src, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// talk checks that the held session still carries data both ways (a fresh nonce echoed).
func talk(t *testing.T, s *netnsbed.Session, what string) {
	t.Helper()
	if err := s.Echo(time.Now().Add(2 * time.Second)); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// holdsAfterExpiry waits until new connections are refused again (the grant expired), then
// checks that the held session still carries data both ways.
func holdsAfterExpiry(t *testing.T, bed *netnsbed.Bed, s *netnsbed.Session, src netip.Addr, dst netip.AddrPort) {
	t.Helper()
	if !waitFor(15*time.Second, func() bool { return !canConnect(t, bed, src, dst) }) {
		t.Fatal("new connections still accepted: the grant did not expire")
	}
	talk(t, s, "after the grant expired")
}

// TestIntegrationHostDropFwknopConf: `sesame server --fwknop-conf` (iptables backend) on a host
// whose INPUT drops the protected port further down and has no ESTABLISHED rule. The real
// fwknop client's SPA packet opens a connection that carries data both ways, during the grant
// and after it expired; in UDP-server and sniff mode.
func TestIntegrationHostDropFwknopConf(t *testing.T) {
	skipWithoutFwknop(t)
	for _, mode := range spaModes {
		t.Run(mode.name, func(t *testing.T) {
			bed := skipUnlessRoot(t)
			svc := netip.AddrPortFrom(netnsbed.Server4, 2222)
			greetEcho(t, bed, svc)
			ipt(t, bed, hostDropRule)
			dir := t.TempDir()
			srv := fmt.Sprintf("FWKNOP_RUN_DIR %s;\nMAX_SPA_PACKET_AGE 120;\n", filepath.Join(dir, "run"))
			if mode.sniff {
				srv += fmt.Sprintf("PCAP_INTF %s;\nPCAP_FILTER udp port %d;\n", bed.ServerIf, spaPort)
			} else {
				srv += fmt.Sprintf("ENABLE_UDP_SERVER Y;\nUDPSERV_PORT %d;\n", spaPort)
			}
			writeSecret(t, filepath.Join(dir, "fwknopd.conf"), []byte(srv))
			writeSecret(t, filepath.Join(dir, "access.conf"), []byte("SOURCE ANY\nKEY_BASE64 "+fwknopKey+"\nHMAC_KEY_BASE64 "+fwknopHMAC+
				"\nOPEN_PORTS tcp/2222\nFW_ACCESS_TIMEOUT 2\nMAX_FW_TIMEOUT 60\n"))
			d := startDaemon(t, bed.Server, "sesame server running", sesameBin, "server", "--fwknop-conf", dir, "--state-dir", t.TempDir(), "--log-level", "debug")
			if s, err := openSession(bed, netnsbed.Client4, svc); err == nil {
				s.Close()
				t.Fatal("data through the gate before any SPA packet")
			}
			fwknopClient(t, bed, "-A", "tcp/2222", "-a", netnsbed.Client4.String())
			if !waitDecision(d, netnsbed.Client4, "stanza#1", "accepted", 2*time.Second) {
				t.Fatal("no accepted line for the fwknop packet")
			}
			s := waitSession(t, bed, netnsbed.Client4, svc)
			talk(t, s, "during the grant")
			holdsAfterExpiry(t, bed, s, netnsbed.Client4, svc)
			if strings.Contains(d.Output(), "the host firewall drops") {
				t.Errorf("a warning for a host rule that sesame's chain overrides:\n%s", d.Output())
			}
		})
	}
}

const hostDropDoor = `[server]
firewall = "%s"
state_dir = "STATE_DIR"

[[door]]
name = "ssh"
sequence = ["7000/tcp", "8000/udp", "9000/tcp"]
sequence_timeout = "5s"
sources = ["198.18.0.0/16", "fd5e:5a3e::/64"]
open = ["tcp/2222"]
open_for = "2s"
`

// TestIntegrationHostDropKnock: a knock door (native TOML, and a knockd.conf door with sesame's
// Open extension) on a host whose INPUT drops the protected port and has no ESTABLISHED rule,
// IPv4 and IPv6. With the iptables backend the connection carries data both ways during the
// grant and after it. With the nftables backend the host's DROP (iptables-nft, table ip filter)
// wins; sesame's start-up log names it, and after the documented connmark rule the connection
// works, also after the grant expired.
func TestIntegrationHostDropKnock(t *testing.T) {
	t.Parallel() // mostly waiting for timeouts: paired with another at the end of the run (doc.go)
	for _, tc := range []struct {
		name, fw string
		knockd   bool
	}{{"iptables", "iptables", false}, {"knockd.conf/iptables", "iptables", true}, {"nftables", "nftables", false}} {
		t.Run(tc.name, func(t *testing.T) {
			bed := skipUnlessRoot(t)
			for _, fam := range families {
				greetEcho(t, bed, netip.AddrPortFrom(fam.server, 2222))
			}
			ipt(t, bed, hostDropRule)
			var d *daemon
			if tc.knockd {
				path := filepath.Join(t.TempDir(), "knockd.conf")
				conf := "[openSSH]\n\tsequence = 7000,8000:udp,9000\n\tseq_timeout = 5\n\topen = tcp/2222\n\topen_for = 2\n"
				if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
					t.Fatal(err)
				}
				d = startDaemon(t, bed.Server, "sesame server running", sesameBin, "server", "--knockd-conf", path, "--firewall", tc.fw, "--log-level", "debug")
			} else {
				d, _ = startSesame(t, bed, fmt.Sprintf(hostDropDoor, tc.fw))
			}
			warned := strings.Contains(d.Output(), "the host firewall drops connections sesame admits")
			if tc.fw == "nftables" {
				for l := range strings.SplitSeq(d.Output(), "\n") {
					if strings.Contains(l, "level=WARN") {
						t.Log(l)
					}
				}
				for _, want := range []string{`rule="ip filter INPUT: tcp dport 2222 drop`, `rule="ip6 filter INPUT: tcp dport 2222 drop`,
					"iptables -I INPUT -m connmark --mark 0x20000000/0x20000000 -j ACCEPT"} {
					if !strings.Contains(d.Output(), want) {
						t.Errorf("start-up log lacks %q:\n%s", want, d.Output())
					}
				}
				// Without the fix the host's DROP stops the granted client.
				knockFrom(t, bed, netnsbed.Client4, netnsbed.Server4, seq...)
				time.Sleep(200 * time.Millisecond)
				if s, err := openSession(bed, netnsbed.Client4, netip.AddrPortFrom(netnsbed.Server4, 2222)); err == nil {
					s.Close()
					t.Fatal("data past the host's DROP without the fix: the test's premise is wrong")
				}
				ipt(t, bed, connmarkAccept)
			} else if warned {
				t.Errorf("a warning for a host rule that sesame's chain overrides:\n%s", d.Output())
			}
			for _, fam := range families {
				t.Run(fam.name, func(t *testing.T) {
					svc := netip.AddrPortFrom(fam.server, 2222)
					if !waitFor(15*time.Second, func() bool { return !canConnect(t, bed, fam.client, svc) }) {
						t.Fatal("port open before the knock")
					}
					knockFrom(t, bed, fam.client, fam.server, seq...)
					s := waitSession(t, bed, fam.client, svc)
					talk(t, s, "during the grant")
					holdsAfterExpiry(t, bed, s, fam.client, svc)
				})
			}
		})
	}
}
