//go:build linux

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/netnsbed"
)

// doctorTOML protects tcp/2222 behind a three-knock door with the backend FIREWALL.
const doctorTOML = `[server]
firewall = "FIREWALL"

[[door]]
name = "ssh"
sequence = ["7000/tcp", "8000/udp", "9000/tcp"]
open = ["tcp/2222"]
open_for = "30s"
`

// doctorResult is one run of 'sesame doctor' in a bed's server namespace.
type doctorResult struct {
	code  int
	lines []string
	out   string
}

// has reports whether a line starts with prefix.
func (r doctorResult) has(prefix string) bool {
	for _, l := range r.lines {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

// runDoctor runs 'sesame doctor args' in the bed's server namespace, bounded in time, and
// checks that it left the namespace's ruleset as it found it.
func runDoctor(t *testing.T, bed *netnsbed.Bed, args ...string) doctorResult {
	t.Helper()
	if sesameBin == "" {
		t.Fatal("sesame binary not built")
	}
	before := serverRuleset(t, bed)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := netnsbed.Command(ctx, bed.Server, sesameBin, append([]string{"doctor"}, args...)...).CombinedOutput()
	r := doctorResult{out: string(out), lines: strings.Split(strings.TrimSpace(string(out)), "\n")}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("sesame doctor: %v\n%s", err, out)
	}
	if after := serverRuleset(t, bed); after != before {
		t.Errorf("doctor changed the host ruleset:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	t.Logf("sesame doctor %s: exit %d\n%s", strings.Join(args, " "), r.code, out)
	return r
}

func serverRuleset(t *testing.T, bed *netnsbed.Bed) string {
	t.Helper()
	out, err := netnsbed.Command(context.Background(), bed.Server, "nft", "list", "ruleset").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list ruleset: %v: %s", err, out)
	}
	return string(out)
}

func nftLoad(t *testing.T, bed *netnsbed.Bed, ruleset string) {
	t.Helper()
	cmd := netnsbed.Command(context.Background(), bed.Server, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft -f: %v: %s", err, out)
	}
}

func ipt4(t *testing.T, bed *netnsbed.Bed, args ...string) {
	t.Helper()
	if out, err := netnsbed.Command(context.Background(), bed.Server, "iptables", append([]string{"-w"}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("iptables %v: %v: %s", args, err, out)
	}
}

// doctorBed is a bed whose server namespace runs the greeting echo service on tcp/2222 (so
// the listener check is ok) and has config FIREWALL written to a file, returned.
func doctorBed(t *testing.T, firewall string) (*netnsbed.Bed, string) {
	t.Helper()
	bed := skipUnlessRoot(t)
	greetEcho(t, bed, netip.AddrPortFrom(netnsbed.Server4, 2222))
	path := filepath.Join(t.TempDir(), "sesame.toml")
	writeSecret(t, path, []byte(strings.ReplaceAll(doctorTOML, "FIREWALL", firewall)))
	return bed, path
}

// TestDoctorOtherTableDrop: a drop of the protected port in another nftables table, at a
// higher priority than sesame's gate, fails the granted client and names that rule.
func TestDoctorOtherTableDrop(t *testing.T) {
	bed, cfg := doctorBed(t, "nftables")
	nftLoad(t, bed, "table inet filter {\n chain input {\n  type filter hook input priority -50;\n  tcp dport 2222 drop\n }\n}\n")
	r := runDoctor(t, bed, "-c", cfg)
	if r.code != 1 {
		t.Errorf("exit %d, want 1", r.code)
	}
	if !r.has("FAIL tcp/2222 granted client: dropped by inet filter input rule 1: tcp dport 2222 drop") {
		t.Error("no FAIL naming inet filter input rule 1 for the granted client")
	}
	if !r.has("ok   tcp/2222 ungranted client: refused: dropped by ") {
		t.Error("the ungranted client is not reported refused")
	}
}

// TestDoctorTutorialDrop: the tutorial's `iptables -A INPUT -p tcp --dport 2222 -j DROP`
// fails sesame's nftables gate (the drop is in ip filter INPUT) and is fine behind the
// iptables gate, whose connmark rule accepts admitted connections ahead of it.
func TestDoctorTutorialDrop(t *testing.T) {
	t.Run("nftables", func(t *testing.T) {
		bed, cfg := doctorBed(t, "nftables")
		ipt4(t, bed, hostDropRule...)
		r := runDoctor(t, bed, "-c", cfg)
		if r.code != 1 {
			t.Errorf("exit %d, want 1", r.code)
		}
		if !r.has("FAIL tcp/2222 granted client: dropped by ip filter INPUT rule 1: tcp dport 2222 drop") {
			t.Error("no FAIL naming ip filter INPUT rule 1")
		}
		if !strings.Contains(r.out, "connmark --mark 0x20000000/0x20000000 -j ACCEPT") {
			t.Error("no connmark fix hint")
		}
	})
	t.Run("iptables", func(t *testing.T) {
		bed, cfg := doctorBed(t, "iptables")
		ipt4(t, bed, hostDropRule...)
		r := runDoctor(t, bed, "-c", cfg)
		if r.code != 0 {
			t.Errorf("exit %d, want 0", r.code)
		}
		for _, want := range []string{
			"ok   tcp/2222 granted client: reaches the service",
			"ok   tcp/2222 granted client, later packets: a connection opened during the grant keeps working after it (accepted by ip filter SESAME rule 3: ct mark and 0x20000000 == 0x20000000 accept)",
			"ok   tcp/2222 ungranted client: refused: dropped by ip filter SESAME",
		} {
			if !r.has(want) {
				t.Errorf("no line %q", want)
			}
		}
	})
}

// TestDoctorKnockdAppendAfterDrop: a knockd.conf command appending its ACCEPT behind the
// host's DROP of the port gets a warning naming the command and the rule.
func TestDoctorKnockdAppendAfterDrop(t *testing.T) {
	bed := skipUnlessRoot(t)
	ipt4(t, bed, hostDropRule...)
	cmd := "/usr/sbin/iptables -A INPUT -s %IP% -p tcp --dport 2222 -j ACCEPT"
	path := filepath.Join(t.TempDir(), "knockd.conf")
	writeSecret(t, path, []byte(fmt.Sprintf("[options]\n\tUseSyslog\n\n[openSSH]\n\tsequence = 7000,8000,9000\n\tseq_timeout = 5\n\tcommand = %s\n\ttcpflags = syn\n", cmd)))
	r := runDoctor(t, bed, "--knockd-conf", path)
	if r.code != 1 {
		t.Errorf("exit %d, want 1", r.code)
	}
	want := fmt.Sprintf("warn door \"openSSH\" command: %q appends (-A) an ACCEPT for tcp/2222 to INPUT after ip filter INPUT rule 1 (-A INPUT -p tcp -m tcp --dport 2222 -j DROP)", cmd)
	if !r.has(want) {
		t.Errorf("no line %q", want)
	}
	if !strings.Contains(r.out, "-I INPUT 1 -s %IP% -p tcp --dport 2222 -j ACCEPT") {
		t.Error("no -I fix hint")
	}
}

// TestDoctorDockerDNAT: Docker-style published port (DNAT in ip nat PREROUTING to a container,
// FORWARD policy drop with a DOCKER chain): the diagnosis says the port is forwarded and
// sesame's gate does not cover it.
func TestDoctorDockerDNAT(t *testing.T) {
	bed, cfg := doctorBed(t, "nftables")
	if out, err := netnsbed.Command(context.Background(), bed.Server, "sysctl", "-qw", "net.ipv4.ip_forward=1").CombinedOutput(); err != nil {
		t.Fatalf("sysctl: %v: %s", err, out)
	}
	ipt4(t, bed, "-N", "DOCKER")
	ipt4(t, bed, "-P", "FORWARD", "DROP")
	ipt4(t, bed, "-A", "FORWARD", "-j", "DOCKER")
	ipt4(t, bed, "-A", "DOCKER", "-d", "172.17.0.2/32", "!", "-i", "docker0", "-o", "docker0", "-p", "tcp", "-m", "tcp", "--dport", "80", "-j", "ACCEPT")
	ipt4(t, bed, "-t", "nat", "-N", "DOCKER")
	ipt4(t, bed, "-t", "nat", "-A", "PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "DOCKER")
	ipt4(t, bed, "-t", "nat", "-A", "DOCKER", "!", "-i", "docker0", "-p", "tcp", "-m", "tcp", "--dport", "2222", "-j", "DNAT", "--to-destination", "172.17.0.2:80")
	r := runDoctor(t, bed, "-c", cfg)
	if r.code != 1 {
		t.Errorf("exit %d, want 1", r.code)
	}
	dnat := "forwarded: ip nat DOCKER rule 1: iifname != \"docker0\" tcp dport 2222 dnat to 172.17.0.2:80 rewrites the destination"
	for _, want := range []string{
		"FAIL tcp/2222 ungranted client: not refused by sesame: " + dnat,
		"FAIL tcp/2222 granted client: " + dnat,
	} {
		if !r.has(want) {
			t.Errorf("no line %q", want)
		}
	}
	if !strings.Contains(r.out, "the gate does not cover this port") {
		t.Error("the diagnosis does not say the gate does not cover the port")
	}
}

// TestDoctorClean: sesame's gate on a host without other rules, the service listening:
// every check is ok and the exit status is 0.
func TestDoctorClean(t *testing.T) {
	for _, fw := range []string{"nftables", "iptables"} {
		t.Run(fw, func(t *testing.T) {
			bed, cfg := doctorBed(t, fw)
			r := runDoctor(t, bed, "-c", cfg)
			if r.code != 0 {
				t.Errorf("exit %d, want 0", r.code)
			}
			n := 0
			for _, l := range r.lines {
				if !strings.HasPrefix(l, "ok   ") {
					t.Errorf("not ok: %q", l)
				}
				n++
			}
			if n < 7 { // service, ruleset, 3 probes of tcp/2222, 3 knock ports
				t.Errorf("%d lines, want at least 7", n)
			}
		})
	}
}
