//go:build linux

package e2e

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/netnsbed"
)

// TestIntegrationKnockdConfWithGate: a knockd.conf door that names ports (sesame's Open key)
// opens them through sesame's gate with --firewall nftables, and still runs its command.
func TestIntegrationKnockdConfWithGate(t *testing.T) {
	bed := skipUnlessRoot(t)
	svc := listen(t, bed, families[0])
	dir := t.TempDir()
	conf := strings.ReplaceAll(`[options]
	UseSyslog

[openSSH]
	sequence    = 7000,8000:udp,9000
	seq_timeout = 5
	tcpflags    = syn
	open        = tcp/2222
	open_for    = 2
	command     = echo "%IP%" >> DIR/events
`, "DIR", dir)
	path := filepath.Join(dir, "knockd.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	// Without --firewall, a door that names ports is refused with a clear message.
	out, err := netnsbed.Command(t.Context(), bed.Server, sesameBin, "server", "--knockd-conf", path).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--firewall nftables") {
		t.Fatalf("without --firewall: err %v, output %q", err, out)
	}
	startDaemon(t, bed.Server, "sesame server running", sesameBin, "server", "--knockd-conf", path, "--firewall", "nftables")
	if canConnect(t, bed, netnsbed.Client4, svc) {
		t.Fatal("port open before the knock")
	}
	knockFrom(t, bed, netnsbed.Client4, netnsbed.Server4, seq...)
	if !eventually(t, bed, netnsbed.Client4, svc, true) {
		t.Fatal("port not open after the knock")
	}
	if !waitFor(2*time.Second, func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "events"))
		return strings.TrimSpace(string(b)) == netnsbed.Client4.String()
	}) {
		t.Error("the door's command did not run once with the client's address")
	}
	time.Sleep(2 * time.Second)
	if !eventually(t, bed, netnsbed.Client4, svc, false) {
		t.Error("port still open after open_for")
	}
}

// TestIntegrationICMPAndFlags: an ICMP echo knock and a TCP flag condition, IPv4 and IPv6.
func TestIntegrationICMPAndFlags(t *testing.T) {
	bed := skipUnlessRoot(t)
	for _, fam := range families {
		listen(t, bed, fam)
	}
	startSesame(t, bed, `[server]
state_dir = "STATE_DIR"

[[door]]
name = "ping"
sequence = ["icmp", "7000/tcp", "8000/udp"]
sequence_timeout = "5s"
tcp_flags = "syn,!ack"
open = ["tcp/2222"]
open_for = "30s"
`)
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			svc := netip.AddrPortFrom(fam.server, 2222)
			if fam.name == "ipv4" {
				// A SYN+ACK to 7000 does not match syn,!ack: it is ignored, not counted.
				sendOne(t, bed, fam.client, fam.server, "icmp")
				sendRawTCP(t, bed, fam.client, fam.server, 7000, synF|ackF)
				sendOne(t, bed, fam.client, fam.server, "8000/udp")
				time.Sleep(100 * time.Millisecond)
				if canConnect(t, bed, fam.client, svc) {
					t.Fatal("a SYN+ACK knock counted for syn,!ack")
				}
			}
			knockFrom(t, bed, fam.client, fam.server, "icmp", "7000/tcp", "8000/udp")
			if !eventually(t, bed, fam.client, svc, true) {
				t.Fatal("icmp + tcp + udp knock did not open")
			}
		})
	}
}
