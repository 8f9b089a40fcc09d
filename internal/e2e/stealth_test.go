//go:build linux

package e2e

import (
	"context"
	"encoding/xml"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/netnsbed"
)

// stealthConf is a knock door and an SPA client, both opening tcp/2222, with [server] stealth
// and the rest of [server] filled in by the test. The sweep guard is off: the scanner and the
// knocking client are the same address, and the guard would rightly ignore its knocks after a
// scan (TestIntegrationSweep covers it).
const stealthConf = `[server]
firewall = "%s"
state_dir = "STATE_DIR"
sweep_guard = 0
stealth = "%s"
%s
[[door]]
name = "ssh"
sequence = ["7000/tcp", "8000/udp", "9000/tcp"]
sequence_timeout = "5s"
sources = ["198.18.0.0/16", "fd5e:5a3e::/64"]
open = ["tcp/2222"]
open_for = "2s"

[spa]
listen = "udp/%d"

[[spa.client]]
name = "alice"
key_file = %q
open = ["tcp/2222"]
max_open_for = "2s"
default_open_for = "2s"
`

// stealthSeq is stealthConf's knock sequence as the real knock client spells it.
var stealthSeq = []string{"7000:tcp", "8000:udp", "9000:tcp"}

// stealthDecoys are the decoys of the closed mode's comparison: in the run without sesame an
// ordinary service listens on each of their ports (a TCP service, a UDP socket that answers
// nothing), so that the decoys must look like ordinary services.
var stealthDecoys = fmt.Sprintf(`
[[decoy]]
ports = ["tcp/%d", "udp/%d"]
ban_for = "1m"
banner = %q
`, decoyPort, udpDecoyPort, decoyBanner)

// The UDP ports of the UDP scan: the knock port, the SPA port, the UDP decoy port and 100
// others.
func stealthUDPPorts() string {
	ps := []string{"8000", fmt.Sprint(spaPort), fmt.Sprint(udpDecoyPort)}
	for p := 20000; p < 20100; p++ {
		ps = append(ps, fmt.Sprint(p))
	}
	return strings.Join(ps, ",")
}

// noICMPRateLimit lifts the kernel's ICMP rate limit in the server namespace, so that the UDP
// scan sees an answer for every closed port in both runs it compares (the gate's reject goes
// through the same limit as the kernel's own unreachables, so the comparison would otherwise
// depend on timing, not on sesame).
func noICMPRateLimit(t *testing.T, bed *netnsbed.Bed) {
	t.Helper()
	for _, kv := range []string{"net.ipv4.icmp_ratelimit=0", "net.ipv4.icmp_ratemask=0", "net.ipv6.icmp.ratelimit=0", "net.ipv6.icmp.ratemask="} {
		if out, err := netnsbed.Command(context.Background(), bed.Server, "sysctl", "-qw", kv).CombinedOutput(); err != nil {
			t.Fatalf("sysctl %s: %v: %s", kv, err, out)
		}
	}
}

// nmapXML is the part of nmap's XML report the comparison reads.
type nmapXML struct {
	Hosts []struct {
		Status struct {
			State string `xml:"state,attr"`
		} `xml:"status"`
		Extra []struct {
			State string `xml:"state,attr"`
			Count int    `xml:"count,attr"`
		} `xml:"ports>extraports"`
		Ports []struct {
			Proto string `xml:"protocol,attr"`
			ID    int    `xml:"portid,attr"`
			State struct {
				State string `xml:"state,attr"`
			} `xml:"state"`
		} `xml:"ports>port"`
	} `xml:"host"`
}

// nmapReport runs the real nmap from the client namespace against dst and returns its
// per-port report from the XML output: the ports it lists (port/proto=state), sorted, then the
// states it summarised with their counts ("closed 65534").
func nmapReport(t *testing.T, bed *netnsbed.Bed, dst netip.Addr, args ...string) string {
	t.Helper()
	nmap, err := exec.LookPath("nmap")
	if err != nil {
		t.Fatal("nmap is not installed (.ci/deps.sh installs it)")
	}
	// Retries and a round-trip allowance generous enough for a loaded machine: a lost answer
	// would read as "filtered" and make two identical hosts look different.
	args = append([]string{"-n", "-Pn", "-T5", "--max-retries", "6", "--max-rtt-timeout", "1s", "--host-timeout", "150s", "-oX", "-"}, args...)
	if dst.Is6() {
		args = append(args, "-6")
	}
	args = append(args, dst.String())
	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
	defer cancel()
	start := time.Now()
	out, err := netnsbed.Command(ctx, bed.Client, nmap, args...).Output()
	if err != nil {
		t.Fatalf("nmap %v: %v\n%s", args, err, out)
	}
	t.Logf("nmap of %s: %.1f s", dst, time.Since(start).Seconds())
	var r nmapXML
	if err := xml.Unmarshal(out, &r); err != nil || len(r.Hosts) != 1 {
		t.Fatalf("nmap %v: %v, %d hosts:\n%s", args, err, len(r.Hosts), out)
	}
	h := r.Hosts[0]
	var ports, extra []string
	for _, p := range h.Ports {
		ports = append(ports, fmt.Sprintf("%d/%s=%s", p.ID, p.Proto, p.State.State))
	}
	for _, e := range h.Extra {
		extra = append(extra, fmt.Sprintf("%s %d", e.State, e.Count))
	}
	slices.Sort(ports)
	slices.Sort(extra)
	return strings.Join(ports, " ") + " | " + strings.Join(extra, ", ")
}

// scanAll is the acceptance scan: a SYN scan of all 65535 TCP ports and a UDP scan of the knock
// port, the SPA port, the UDP decoy port and 100 others. between, when set, runs between the
// two scans.
//
// answered says every TCP port answers (no firewall drops anything: stealth closed, or no
// sesame). Then a SYN scan whose report has "filtered" ports lost answers and is run again, at
// most twice, each time logged: on a 2-core machine shared with other test runs, IPv6 SYN scans
// at nmap's rate now and then lose 5 000 to 34 000 answers, without sesame too (seen in a run
// without sesame in the test, and by hand between two bare namespaces with no firewall at
// all). A port that sesame really drops is filtered in every run, so the retry does not hide it.
//
// When nothing is meant to answer (a dark gate) nmap sends every probe twice and waits for
// nothing, so its rate alone sets the time: 65535 × 2 probes at 8000/s is 16 s a scan. Those
// scans run at 40000/s (3.3 s). The rate can only lose answers, never make them up, and the
// dark check is that every port is filtered: a port that leaked would have to lose the answers
// to all of its probes to pass.
func scanAll(t *testing.T, bed *netnsbed.Bed, dst netip.Addr, answered bool, between func()) (tcp, udp string) {
	t.Helper()
	rate := "8000"
	if !answered {
		rate = "40000"
	}
	for try := 0; ; try++ {
		tcp = nmapReport(t, bed, dst, "-sS", "-p-", "--min-rate", rate)
		if !answered || !strings.Contains(tcp, "filtered") || try == 2 {
			break
		}
		t.Logf("SYN scan of %s lost answers (%s); scanning again", dst, tcp)
	}
	if between != nil {
		between()
	}
	udp = nmapReport(t, bed, dst, "-sU", "-p", stealthUDPPorts(), "--min-rate", "2000")
	return tcp, udp
}

// ordinaryServices stands in for the decoys in the run without sesame: a TCP service on the TCP
// decoy port and a UDP socket that reads and answers nothing on the UDP one, on every address of
// the server. The returned func closes them.
func ordinaryServices(t *testing.T, bed *netnsbed.Bed) func() {
	t.Helper()
	var closers []func() error
	for _, fam := range families {
		ln, err := netnsbed.Listen(t.Context(), bed.Server, netip.AddrPortFrom(fam.server, decoyPort))
		if err != nil {
			t.Fatal(err)
		}
		closers = append(closers, ln.Close)
		var c net.PacketConn
		if err := netnsbed.Do(bed.Server, func() (err error) {
			c, err = net.ListenPacket("udp", netip.AddrPortFrom(fam.server, udpDecoyPort).String())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		closers = append(closers, c.Close)
		go func() {
			buf := make([]byte, 2048)
			for {
				if _, _, err := c.ReadFrom(buf); err != nil {
					return
				}
			}
		}()
	}
	done := func() {
		for _, c := range closers {
			c()
		}
	}
	t.Cleanup(done)
	return done
}

// stealthDaemon starts sesame with stealthConf in the bed.
func stealthDaemon(t *testing.T, bed *netnsbed.Bed, fw, mode, extra string) (*daemon, *spaKeys) {
	t.Helper()
	k := newSPAKeys(t)
	d, _ := startSesame(t, bed, fmt.Sprintf(stealthConf, fw, mode, extra, spaPort, filepath.Join(k.dir, "alice.key")))
	return d, k
}

// opensBoth checks that the real knock client and `sesame open` each open tcp/2222 for the
// client (data both ways), one after the other's grant expired.
func opensBoth(t *testing.T, bed *netnsbed.Bed, k *spaKeys, fam family) {
	t.Helper()
	svc := netip.AddrPortFrom(fam.server, 2222)
	if canConnect(t, bed, fam.client, svc) {
		t.Fatal("tcp/2222 open before any knock")
	}
	knockArgs := append([]string{"-d", "20"}, stealthSeq...)
	if fam.server.Is6() {
		knockArgs = append([]string{"-6"}, knockArgs...)
	}
	knockReal(t, bed, fam.server, knockArgs...)
	if !eventually(t, bed, fam.client, svc, true) {
		t.Fatal("the knock did not open tcp/2222")
	}
	if !waitFor(15*time.Second, func() bool { return !canConnect(t, bed, fam.client, svc) }) {
		t.Fatal("the knock's grant did not expire")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := netnsbed.Command(ctx, bed.Client, sesameBin, "open", fam.server.String(), "-A", "tcp/2222", "--id", "alice",
		"--key-file", filepath.Join(k.dir, "alice.key"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sesame open: %v\n%s", err, out)
	}
	if !eventually(t, bed, fam.client, svc, true) {
		t.Fatal("the SPA packet did not open tcp/2222")
	}
}

// TestIntegrationStealthClosed: with stealth "closed" (the default) the real nmap's SYN scan of
// all 65535 ports and UDP scan of the knock, SPA, decoy and 100 other ports give the same report
// as the same host without sesame and without the hidden service, IPv4 and IPv6, nftables and
// iptables. The protected port looks like a port where nothing runs (reset), the SPA and knock
// ports too (port unreachable), and the decoys look like the ordinary services that stood on
// their ports in the run without sesame (TCP open, UDP open|filtered). The SYN scan completes no
// handshake, so it bans nobody: its SYN to the TCP decoy alerts as a SYN-only touch, and the
// scanner's knocks and SPA still open the protected port.
func TestIntegrationStealthClosed(t *testing.T) {
	for _, fw := range []string{"nftables", "iptables"} {
		t.Run(fw, func(t *testing.T) {
			bed := skipUnlessRoot(t)
			noICMPRateLimit(t, bed)
			for _, fam := range families {
				greetEcho(t, bed, netip.AddrPortFrom(fam.server, 8080)) // a public service
			}
			stopOrdinary := ordinaryServices(t, bed)
			base := map[string][2]string{}
			for _, fam := range families {
				tcp, udp := scanAll(t, bed, fam.server, true, nil)
				base[fam.name] = [2]string{tcp, udp}
				t.Logf("%s without sesame: tcp %s; udp %s", fam.name, tcp, udp)
				if !strings.Contains(tcp, "8080/tcp=open") || !strings.Contains(tcp, fmt.Sprintf("%d/tcp=open", decoyPort)) ||
					!strings.Contains(tcp, "| closed 65533") {
					t.Fatalf("%s baseline: %s", fam.name, tcp)
				}
				if !strings.Contains(udp, fmt.Sprintf("%d/udp=open|filtered", udpDecoyPort)) || !strings.Contains(udp, "| closed 102") {
					t.Fatalf("%s baseline: %s", fam.name, udp)
				}
			}
			stopOrdinary()
			for _, fam := range families {
				greetEcho(t, bed, netip.AddrPortFrom(fam.server, 2222)) // the hidden service
			}
			mode := `"closed"`
			if fw == "iptables" {
				mode = "" // the default
			}
			conf := stealthConf
			if mode == "" {
				conf = strings.Replace(conf, "stealth = \"%s\"\n", "%s", 1)
			}
			k := newSPAKeys(t)
			d, _ := startSesame(t, bed, fmt.Sprintf(conf, fw, strings.Trim(mode, `"`), "", spaPort, filepath.Join(k.dir, "alice.key"))+stealthDecoys)
			for _, fam := range families {
				t.Run(fam.name, func(t *testing.T) {
					// The SYN scan's touch of the TCP decoy alerts (after the grace for a
					// handshake); waiting for it before the UDP scan keeps the per-source alert
					// interval from being taken by the UDP decoy's.
					touch := fmt.Sprintf("msg=alert src=%s kind=decoy_touch port=tcp/%d", fam.client, decoyPort)
					tcp, udp := scanAll(t, bed, fam.server, true, func() {
						if !waitFor(8*time.Second, func() bool { return strings.Contains(d.Output(), touch) }) {
							t.Errorf("no SYN-only touch alert for the SYN scan; daemon:\n%s", d.Output())
						}
					})
					if tcp != base[fam.name][0] {
						t.Errorf("TCP scan differs:\n without sesame: %s\n with sesame:    %s", base[fam.name][0], tcp)
					}
					if udp != base[fam.name][1] {
						t.Errorf("UDP scan differs:\n without sesame: %s\n with sesame:    %s", base[fam.name][1], udp)
					}
					if strings.Contains(d.Output(), "msg=banned") {
						t.Fatalf("the scans banned someone; daemon:\n%s", d.Output())
					}
					opensBoth(t, bed, k, fam)
				})
			}
		})
	}
}

// TestIntegrationStealthDark: with stealth "dark" every TCP port is filtered, every scanned UDP
// port (knock, SPA, a decoy's port number and 100 others) open|filtered, ping and nmap -sn get no answer, a connection held since before the daemon
// started keeps carrying data, an allow entry lets its source reach its port (and no other, and
// never the protected port), loopback passes, and knocks and SPA still open the protected port.
func TestIntegrationStealthDark(t *testing.T) {
	for _, fw := range []string{"nftables", "iptables"} {
		t.Run(fw, func(t *testing.T) {
			bed := skipUnlessRoot(t)
			// The allowed sources are added to the client only after the scans and knocks:
			// nmap and the knock client would pick them as their source address.
			extra := []netip.Addr{netnsbed.ExtraClient4(1), netnsbed.ExtraClient6(1)}
			var held []*netnsbed.Session
			for _, fam := range families {
				greetEcho(t, bed, netip.AddrPortFrom(fam.server, 8080))
				greetEcho(t, bed, netip.AddrPortFrom(fam.server, 8081))
				greetEcho(t, bed, netip.AddrPortFrom(fam.server, 2222))
				s := waitSession(t, bed, fam.client, netip.AddrPortFrom(fam.server, 8080))
				held = append(held, s)
			}
			allow := fmt.Sprintf("allow = [%q, %q, %q]\n", extra[0].String()+"/32 tcp/8080", extra[1].String()+"/128 tcp/8080",
				extra[0].String()+"/32 tcp/2222")
			_, k := stealthDaemon(t, bed, fw, "dark", allow)
			for i, s := range held {
				talk(t, s, families[i].name+": the connection held since before the daemon started")
			}
			for i, fam := range families {
				t.Run(fam.name, func(t *testing.T) {
					tcp, udp := scanAll(t, bed, fam.server, false, nil)
					if tcp != " | filtered 65535" {
						t.Errorf("TCP scan: %s, want every port filtered", tcp)
					}
					if udp != " | open|filtered 103" {
						t.Errorf("UDP scan: %s, want every port open|filtered", udp)
					}
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					if out, err := netnsbed.Command(ctx, bed.Client, "ping", "-c", "2", "-W", "1", fam.server.String()).CombinedOutput(); err == nil {
						t.Errorf("ping answered:\n%s", out)
					}
					sn := []string{"-n", "-sn", "--disable-arp-ping", fam.server.String()}
					if fam.server.Is6() {
						sn = append(sn, "-6")
					}
					out, err := netnsbed.Command(ctx, bed.Client, "nmap", sn...).CombinedOutput()
					if err != nil || !strings.Contains(string(out), "0 hosts up") {
						t.Errorf("nmap -sn: %v\n%s", err, out)
					}
					talk(t, held[i], "the held connection after the scans")
					opensBoth(t, bed, k, fam)
				})
			}
			if got, err := bed.AddClientAddrs(context.Background(), 1, true); err != nil || !slices.Equal(got, extra) {
				t.Fatalf("extra client addresses %v, want %v: %v", got, extra, err)
			}
			for _, fam := range families {
				t.Run(fam.name+"/allow", func(t *testing.T) {
					// Allow entries: their source and port only, never the protected port.
					ex := extra[0]
					if fam.server.Is6() {
						ex = extra[1]
					}
					if !canConnect(t, bed, ex, netip.AddrPortFrom(fam.server, 8080)) {
						t.Error("the allowed source cannot reach its allowed port")
					}
					if canConnect(t, bed, ex, netip.AddrPortFrom(fam.server, 8081)) {
						t.Error("the allowed source reaches a port its entry does not name")
					}
					if canConnect(t, bed, fam.client, netip.AddrPortFrom(fam.server, 8080)) {
						t.Error("a source not allowed reaches tcp/8080")
					}
					if canConnect(t, bed, extra[0], netip.AddrPortFrom(netnsbed.Server4, 2222)) {
						t.Error("an allow entry opened the protected port")
					}
					// Loopback always passes: the server's own connection to its own address goes
					// through lo.
					if ok, err := netnsbed.CanConnect(bed.Server, netip.Addr{}, netip.AddrPortFrom(fam.server, 8080), time.Second); err != nil || !ok {
						t.Errorf("loopback: the server cannot reach its own service: %v", err)
					}
				})
			}
		})
	}
}

// TestIntegrationStealthOff: stealth "off" keeps the old gate: the protected port alone is
// "filtered" among closed ones (the control row of the closed mode's comparison).
func TestIntegrationStealthOff(t *testing.T) {
	bed := skipUnlessRoot(t)
	for _, fam := range families {
		greetEcho(t, bed, netip.AddrPortFrom(fam.server, 2222))
	}
	_, k := stealthDaemon(t, bed, "nftables", "off", "")
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			tcp := nmapReport(t, bed, fam.server, "-sS", "-p", "2200-2300,7000,9000")
			if tcp != "2222/tcp=filtered | closed 102" {
				t.Errorf("TCP scan: %s, want 2222 filtered among closed ports", tcp)
			}
			udp := nmapReport(t, bed, fam.server, "-sU", "-p", fmt.Sprint(spaPort))
			if !strings.Contains(udp, fmt.Sprintf("%d/udp=open|filtered", spaPort)) {
				t.Errorf("UDP scan: %s, want the SPA socket open|filtered", udp)
			}
			opensBoth(t, bed, k, fam)
		})
	}
}

// spaStealth formats an SPA test's configuration (fmt.Sprintf(format, args...)) and, for the
// UDP-socket mode (sniff false), sets stealth = "off": only then does a socket listen on the
// SPA port (with a stealth gate SPA is always sniffed), so those tests keep testing the socket.
func spaStealth(sniff bool, format string, args ...any) string {
	cfg := fmt.Sprintf(format, args...)
	if !sniff {
		cfg = strings.Replace(cfg, "[server]\n", "[server]\nstealth = \"off\"\n", 1)
	}
	return cfg
}
