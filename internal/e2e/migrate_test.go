//go:build linux

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
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/netnsbed"
	"github.com/sesame-knock/sesame/internal/netnsbed/netnstest"
)

// The differential tests of sesame migrate: the legacy configuration under
// 'sesame server --knockd-conf' / '--fwknop-conf' and its migration under 'sesame server -c', each
// in a fresh bed, get the same knocks or packets from the real knock and fwknop clients, and
// must give the same outcome (services reached with data both ways, commands run), which is
// also the one the case expects.

// migPorts are the services behind the gate.
var migPorts = []uint16{2222, 2223}

// migOutcome observes a bed: which services the client reaches (data both ways) and, with
// events, the lines of the run's events file, sorted, with the client's address as IP. want is
// the outcome the case expects: a service it expects open is waited for (up to 2 s), the others
// are probed once.
func migOutcome(t *testing.T, bed *netnsbed.Bed, events, want string) string {
	t.Helper()
	var parts []string
	for _, p := range migPorts {
		dst := netip.AddrPortFrom(netnsbed.Server4, p)
		open := canConnect(t, bed, netnsbed.Client4, dst)
		if !open && strings.Contains(want, fmt.Sprintf("%d=open", p)) {
			open = eventually(t, bed, netnsbed.Client4, dst, true)
		}
		state := "closed"
		if open {
			state = "open"
		}
		parts = append(parts, fmt.Sprintf("%d=%s", p, state))
	}
	if events != "" {
		b, err := os.ReadFile(events)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		lines := strings.Fields(strings.ReplaceAll(strings.TrimSpace(strings.ReplaceAll(string(b), " ", "_")), netnsbed.Client4.String(), "IP"))
		slices.Sort(lines)
		parts = append(parts, "events=["+strings.Join(lines, " ")+"]")
	}
	return strings.Join(parts, " ")
}

// migBed is a fresh bed with the test services listening and, with hostDrop, the host's own
// gate: new connections to the services dropped unless a rule ahead of it accepts them.
func migBed(t *testing.T, hostDrop bool) *netnsbed.Bed {
	t.Helper()
	bed := netnstest.NewT(t)
	for _, p := range migPorts {
		ln, err := netnsbed.Listen(t.Context(), bed.Server, netip.AddrPortFrom(netnsbed.Server4, p))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
	}
	if !hostDrop {
		return bed
	}
	rules := [][]string{{"-A", "INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"}}
	for _, p := range migPorts {
		rules = append(rules, []string{"-A", "INPUT", "-p", "tcp", "--dport", fmt.Sprint(p), "-j", "DROP"})
	}
	for _, r := range rules {
		if out, err := netnsbed.Command(t.Context(), bed.Server, "iptables", r...).CombinedOutput(); err != nil {
			t.Fatalf("iptables %v: %v: %s", r, err, out)
		}
	}
	return bed
}

// migrateConfig runs 'sesame migrate' on the legacy configuration at from, and checks that
// the result passes 'sesame server -c OUT --check'.
func migrateConfig(t *testing.T, format, from string, extra ...string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "migrated.toml")
	args := append([]string{"migrate", format, from, "-o", out}, extra...)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if b, err := exec.CommandContext(ctx, sesameBin, args...).CombinedOutput(); err != nil {
		t.Fatalf("sesame %v: %v\n%s", args, err, b)
	}
	if b, err := exec.CommandContext(ctx, sesameBin, "server", "-c", out, "--check").CombinedOutput(); err != nil {
		t.Fatalf("sesame server -c %s --check: %v\n%s", out, err, b)
	}
	return out
}

func needBins(t *testing.T, bins ...string) {
	t.Helper()
	for _, b := range bins {
		if _, err := exec.LookPath(b); err != nil {
			t.Fatalf("%s is not installed (.ci/deps.sh installs it): the migrate differential test needs it", b)
		}
	}
}

// TestIntegrationMigrateKnockd: knockd.conf under --knockd-conf and migrated under -c, knocked
// by the real knock client, reach the same services and run the same commands.
func TestIntegrationMigrateKnockd(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	needBins(t, "knock", "iptables")
	ipt, _ := exec.LookPath("iptables")
	const accept = "IPT -I INPUT -s %IP% -p tcp --dport 2222 -j ACCEPT"
	const remove = "IPT -D INPUT -s %IP% -p tcp --dport 2222 -j ACCEPT"
	cases := []struct {
		name     string
		conf     string // DIR is the run's directory, IPT iptables
		hostDrop bool
		knocks   [][]string // one knock client run each
		want     string     // before the knocks, after them
		later    time.Duration
		wantLate string // at later after the knocks, when set
		firewall string // sesame server --firewall, and sesame migrate --firewall
	}{
		{
			name: "command opens the port",
			conf: "[options]\n\tLogFile = DIR/knockd.log\n[openSSH]\n\tsequence = 7000,8000:udp,9000\n\tseq_timeout = 5\n\ttcpflags = syn\n" +
				"\tcommand = " + accept + " && echo open %IP% >> DIR/events\n",
			hostDrop: true, knocks: [][]string{{"7000", "8000:udp", "9000"}},
			want: "2222=closed 2223=closed events=[] | 2222=open 2223=closed events=[open_IP]",
		},
		{
			name:     "wrong order opens nothing",
			conf:     "[openSSH]\n\tsequence = 7000,8000:udp,9000\n\tseq_timeout = 5\n\tcommand = " + accept + " && echo open %IP% >> DIR/events\n",
			hostDrop: true, knocks: [][]string{{"9000", "8000:udp", "7000"}},
			want: "2222=closed 2223=closed events=[] | 2222=closed 2223=closed events=[]",
		},
		{
			name:     "tcpflags fin: the client's SYNs do not count",
			conf:     "[d]\n\tsequence = 7000,8000\n\ttcpflags = fin\n\tcommand = echo run %IP% >> DIR/events\n",
			hostDrop: true, knocks: [][]string{{"7000", "8000"}},
			want: "2222=closed 2223=closed events=[] | 2222=closed 2223=closed events=[]",
		},
		{
			name:     "tcpflags syn,!ack",
			conf:     "[d]\n\tsequence = 7000,8000\n\ttcpflags = syn,!ack\n\tcommand = echo run %IP% >> DIR/events\n",
			hostDrop: true, knocks: [][]string{{"7000", "8000"}},
			want: "2222=closed 2223=closed events=[] | 2222=closed 2223=closed events=[run_IP]",
		},
		{
			name:     "no tcpflags: any segment",
			conf:     "[d]\n\tsequence = 7000,8000\n\tcommand = echo run %IP% >> DIR/events\n",
			hostDrop: true, knocks: [][]string{{"7000", "8000"}},
			want: "2222=closed 2223=closed events=[] | 2222=closed 2223=closed events=[run_IP]",
		},
		{
			name: "start and stop commands, cmd_timeout",
			conf: "[ssh]\n\tsequence = 7000,8000\n\tstart_command = " + accept + " && echo start %IP% >> DIR/events\n" +
				"\tcmd_timeout = 3\n\tstop_command = " + remove + " && echo stop %IP% >> DIR/events\n",
			hostDrop: true, knocks: [][]string{{"7000", "8000"}},
			want:  "2222=closed 2223=closed events=[] | 2222=open 2223=closed events=[start_IP]",
			later: 6 * time.Second, wantLate: "2222=closed 2223=closed events=[start_IP stop_IP]",
		},
		{
			name:   "sesame's Open extension",
			conf:   "[ssh]\n\tsequence = 7000,8000\n\tOpen = tcp/2223\n\tOpen_For = 3\n",
			knocks: [][]string{{"7000", "8000"}},
			want:   "2222=open 2223=closed events=[] | 2222=open 2223=open events=[]",
			later:  6 * time.Second, wantLate: "2222=open 2223=closed events=[]", firewall: "nftables",
		},
		{
			name: "two doors",
			conf: "[a]\n\tsequence = 7000,8000,9000\n\tcommand = " + accept + " && echo a %IP% >> DIR/events\n" +
				"[b]\n\tsequence = 7100,8100:udp,9100\n\tcommand = echo b %IP% >> DIR/events\n" +
				"[c]\n\tsequence = 7200,8200\n\tcommand = echo c %IP% >> DIR/events\n",
			hostDrop: true, knocks: [][]string{{"7100", "8100:udp", "9100"}, {"7000", "8000", "9000"}},
			want: "2222=closed 2223=closed events=[] | 2222=open 2223=closed events=[a_IP b_IP]",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// The two modes run at once, each in a bed of its own; they are compared when both
			// are done.
			var got [2]string
			beds := [2]*netnsbed.Bed{migBed(t, tc.hostDrop), migBed(t, tc.hostDrop)}
			t.Cleanup(func() {
				if got[0] != got[1] {
					t.Errorf("the legacy configuration gave %s, the migrated one %s", got[0], got[1])
				}
				t.Logf("%-45s %s", tc.name, got[1])
			})
			for i, mode := range []string{"legacy", "migrated"} {
				t.Run(mode, func(t *testing.T) {
					t.Parallel()
					bed := beds[i]
					dir := t.TempDir()
					conf := filepath.Join(dir, "knockd.conf")
					text := strings.NewReplacer("DIR", dir, "IPT", ipt).Replace(tc.conf)
					if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
						t.Fatal(err)
					}
					args := []string{"server", "--knockd-conf", conf}
					var fw []string
					if tc.firewall != "" {
						fw = []string{"--firewall", tc.firewall}
						args = append(args, fw...)
					}
					if mode == "migrated" {
						args = []string{"server", "-c", migrateConfig(t, "knockd", conf, fw...)}
					}
					args = append(args, "--state-dir", filepath.Join(dir, "state"), "--log-level", "debug")
					startDaemon(t, bed.Server, "sesame server running", sesameBin, args...)
					events := filepath.Join(dir, "events")
					after := tc.want[strings.Index(tc.want, "|"):]
					before := migOutcome(t, bed, events, "")
					start := time.Now()
					for _, k := range tc.knocks {
						ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
						out, err := netnsbed.Command(ctx, bed.Client, "knock", append([]string{"-d", "20", netnsbed.Server4.String()}, k...)...).CombinedOutput()
						cancel()
						if err != nil {
							t.Fatalf("knock %v: %v\n%s", k, err, out)
						}
					}
					// Commands run just after the door opens: give them a moment to write.
					if strings.Contains(after, "events=[]") {
						time.Sleep(time.Second)
					} else {
						waitFor(3*time.Second, func() bool { b, _ := os.ReadFile(events); return len(b) > 0 })
					}
					got[i] = before + " | " + migOutcome(t, bed, events, after)
					if tc.later > 0 {
						time.Sleep(time.Until(start.Add(tc.later)))
						late := migOutcome(t, bed, events, "")
						got[i] += " || " + late
						if late != tc.wantLate {
							t.Errorf("%s, %v after the knocks: %s, want %s", mode, tc.later, late, tc.wantLate)
						}
					}
					if !strings.HasPrefix(got[i], tc.want) {
						t.Errorf("%s: %s, want %s", mode, got[i], tc.want)
					}
				})
			}
		})
	}
}

// TestIntegrationMigrateFwknop: access.conf stanzas under --fwknop-conf and migrated under -c
// get the same packets of the real fwknop client and open the same services for the same time.
func TestIntegrationMigrateFwknop(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	needBins(t, "fwknop", "iptables")
	const udp = "ENABLE_UDP_SERVER Y;\nUDPSERV_PORT 62201;\n"
	const sniff = "PCAP_INTF eth0;\nPCAP_FILTER udp port 62201;\n"
	keys := "KEY_BASE64 " + fwknopKey + "\nHMAC_KEY_BASE64 " + fwknopHMAC + "\n"
	std := []string{"--key-base64-rijndael", fwknopKey, "--use-hmac", "--key-base64-hmac", fwknopHMAC}
	cases := []struct {
		name, server, access string
		packet               []string // fwknop client arguments besides -D, -p, -T, -B
		want                 string   // after the packet
		later                time.Duration
		wantLate             string
	}{
		{name: "base64 keys and HMAC", server: udp, access: "SOURCE ANY\n" + keys + "OPEN_PORTS tcp/2222\n",
			packet: append([]string{"-A", "tcp/2222", "-a", "CLIENT"}, std...), want: "2222=open 2223=closed"},
		{name: "base64 keys and HMAC, sniffed", server: sniff, access: "SOURCE ANY\n" + keys + "OPEN_PORTS tcp/2222\n",
			packet: append([]string{"-A", "tcp/2222", "-a", "CLIENT"}, std...), want: "2222=open 2223=closed"},
		{name: "passphrases", server: udp, access: "SOURCE ANY\nKEY " + fwdPass + "\nHMAC_KEY " + fwdHMACPass + "\nHMAC_DIGEST_TYPE sha512\nOPEN_PORTS tcp/2222\n",
			packet: []string{"-A", "tcp/2222", "-a", "CLIENT", "--key-rijndael", fwdPass, "--use-hmac", "--key-hmac", fwdHMACPass, "--hmac-digest-type", "sha512"},
			want:   "2222=open 2223=closed"},
		{name: "wrong HMAC key", server: udp, access: "SOURCE ANY\n" + keys + "OPEN_PORTS tcp/2222\n",
			packet: []string{"-A", "tcp/2222", "-a", "CLIENT", "--key-base64-rijndael", fwknopKey, "--use-hmac", "--key-base64-hmac", fwdWrongHMAC},
			want:   "2222=closed 2223=closed"},
		{name: "SOURCE list with the client", server: udp, access: "SOURCE 192.0.2.0/24, CLIENT\n" + keys + "OPEN_PORTS tcp/2222\n",
			packet: append([]string{"-A", "tcp/2222", "-a", "CLIENT"}, std...), want: "2222=open 2223=closed"},
		{name: "SOURCE list without the client", server: udp, access: "SOURCE 192.0.2.0/24, 198.18.1.1\n" + keys + "OPEN_PORTS tcp/2222\n",
			packet: append([]string{"-A", "tcp/2222", "-a", "CLIENT"}, std...), want: "2222=closed 2223=closed"},
		{name: "OPEN_PORTS: the port asked for", server: udp, access: "SOURCE ANY\n" + keys + "OPEN_PORTS tcp/2222, tcp/2223\n",
			packet: append([]string{"-A", "tcp/2223", "-a", "CLIENT"}, std...), want: "2222=closed 2223=open"},
		{name: "OPEN_PORTS: a port not listed", server: udp, access: "SOURCE ANY\n" + keys + "OPEN_PORTS tcp/2222\n",
			packet: append([]string{"-A", "tcp/2223", "-a", "CLIENT"}, std...), want: "2222=closed 2223=closed"},
		{name: "FW_ACCESS_TIMEOUT", server: udp, access: "SOURCE ANY\n" + keys + "OPEN_PORTS tcp/2222\nFW_ACCESS_TIMEOUT 2\n",
			packet: append([]string{"-A", "tcp/2222", "-a", "CLIENT"}, std...), want: "2222=open 2223=closed",
			later: 6 * time.Second, wantLate: "2222=closed 2223=closed"},
		{name: "MAX_FW_TIMEOUT caps the client's timeout", server: udp, access: "SOURCE ANY\n" + keys + "OPEN_PORTS tcp/2222\nFW_ACCESS_TIMEOUT 2\nMAX_FW_TIMEOUT 3\n",
			packet: append([]string{"-A", "tcp/2222", "-a", "CLIENT", "-f", "60"}, std...), want: "2222=open 2223=closed",
			later: 7 * time.Second, wantLate: "2222=closed 2223=closed"},
		{name: "a client timeout within MAX_FW_TIMEOUT", server: udp, access: "SOURCE ANY\n" + keys + "OPEN_PORTS tcp/2222\nFW_ACCESS_TIMEOUT 2\nMAX_FW_TIMEOUT 60\n",
			packet: append([]string{"-A", "tcp/2222", "-a", "CLIENT", "-f", "30"}, std...), want: "2222=open 2223=closed",
			later: 7 * time.Second, wantLate: "2222=open 2223=closed"},
		{name: "REQUIRE_SOURCE_ADDRESS, address named", server: udp, access: "SOURCE ANY\n" + keys + "OPEN_PORTS tcp/2222\nREQUIRE_SOURCE_ADDRESS Y\n",
			packet: append([]string{"-A", "tcp/2222", "-a", "CLIENT"}, std...), want: "2222=open 2223=closed"},
		{name: "REQUIRE_SOURCE_ADDRESS, -s", server: udp, access: "SOURCE ANY\n" + keys + "OPEN_PORTS tcp/2222\nREQUIRE_SOURCE_ADDRESS Y\n",
			packet: append([]string{"-A", "tcp/2222", "-s"}, std...), want: "2222=closed 2223=closed"},
		{name: "-s without REQUIRE_SOURCE_ADDRESS", server: udp, access: "SOURCE ANY\n" + keys + "OPEN_PORTS tcp/2222\n",
			packet: append([]string{"-A", "tcp/2222", "-s"}, std...), want: "2222=open 2223=closed"},
		{name: "two stanzas: the second matches", server: udp,
			access: "SOURCE 192.0.2.0/24\n" + keys + "OPEN_PORTS tcp/2223\n\nSOURCE ANY\nKEY " + fwdPass + "\nHMAC_KEY " + fwdHMACPass + "\nOPEN_PORTS tcp/2222\n",
			packet: []string{"-A", "tcp/2222", "-a", "CLIENT", "--key-rijndael", fwdPass, "--use-hmac", "--key-hmac", fwdHMACPass},
			want:   "2222=open 2223=closed"},
	}
	client := netnsbed.Client4.String()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// The two modes run at once, each in a bed of its own, on the same packet; they
			// are compared when both are done.
			var got [2]string
			beds := [2]*netnsbed.Bed{migBed(t, true), migBed(t, true)}
			packet := fwknopPacket(t, beds[0], strings.ReplaceAll(strings.Join(tc.packet, "\x00"), "CLIENT", client))
			t.Cleanup(func() {
				if got[0] != got[1] {
					t.Errorf("the legacy configuration gave %s, the migrated one %s", got[0], got[1])
				}
				t.Logf("%-45s %s", tc.name, got[1])
			})
			for i, mode := range []string{"legacy", "migrated"} {
				t.Run(mode, func(t *testing.T) {
					t.Parallel()
					bed := beds[i]
					dir := t.TempDir()
					conf := filepath.Join(dir, "fwknop")
					if err := os.Mkdir(conf, 0o700); err != nil {
						t.Fatal(err)
					}
					writeSecret(t, filepath.Join(conf, "fwknopd.conf"), []byte(tc.server))
					writeSecret(t, filepath.Join(conf, "access.conf"), []byte(strings.ReplaceAll(tc.access, "CLIENT", client)))
					args := []string{"server", "--fwknop-conf", conf}
					if mode == "migrated" {
						keys := filepath.Join(dir, "clients")
						args = []string{"server", "-c", migrateConfig(t, "fwknop", conf, "--keys-dir", keys)}
						if b, _ := os.ReadFile(args[2]); strings.Contains(string(b), fwknopKey) || strings.Contains(string(b), fwdPass) {
							t.Fatal("the migrated configuration holds a key")
						}
					}
					args = append(args, "--state-dir", filepath.Join(dir, "state"), "--log-level", "debug")
					d := startDaemon(t, bed.Server, "sesame server running", sesameBin, args...)
					before := migOutcome(t, bed, "", "")
					start := time.Now()
					sendUDP(t, bed, netnsbed.Client4, netip.AddrPortFrom(netnsbed.Server4, spaPort), packet)
					decided := func() bool {
						for l := range strings.SplitSeq(d.Output(), "\n") {
							if strings.Contains(l, "src="+client+" ") && (strings.Contains(l, "spa accepted") || strings.Contains(l, "spa refused")) {
								return true
							}
						}
						return false
					}
					if !waitFor(5*time.Second, decided) {
						t.Fatalf("%s: no decision about the packet in 5 s", mode)
					}
					got[i] = before + " | " + migOutcome(t, bed, "", tc.want)
					if tc.later > 0 {
						time.Sleep(time.Until(start.Add(tc.later)))
						late := migOutcome(t, bed, "", "")
						got[i] += " || " + late
						if late != tc.wantLate {
							t.Errorf("%s, %v after the packet: %s, want %s", mode, tc.later, late, tc.wantLate)
						}
					}
					if want := "2222=closed 2223=closed | " + tc.want; !strings.HasPrefix(got[i], want) {
						t.Errorf("%s: %s, want %s", mode, got[i], want)
					}
				})
			}
		})
	}
}

// fwknopPacket builds one SPA packet with the real fwknop client (-T: built and saved, not
// sent) in the bed's client namespace; args are its arguments joined by NUL.
func fwknopPacket(t *testing.T, bed *netnsbed.Bed, args string) []byte {
	t.Helper()
	home := t.TempDir()
	file := filepath.Join(home, "packet")
	full := append([]string{"--no-rc-file", "--no-save-args", "-T", "-B", file, "-D", netnsbed.Server4.String(), "-p", fmt.Sprint(spaPort)},
		strings.Split(args, "\x00")...)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	cmd := netnsbed.Command(ctx, bed.Client, "fwknop", full...)
	cmd.Env = append(os.Environ(), "HOME="+home)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("fwknop: %v\n%s", err, out)
	}
	p, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return []byte(strings.TrimRight(string(p), "\n")) // the saved file ends in a newline that is not part of the packet
}
