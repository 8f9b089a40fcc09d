//go:build linux

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/knockclient"
	"github.com/sesame-knock/sesame/internal/netnsbed"
)

// sourcePortConf is a door and an SPA client that require the sender's source port.
const sourcePortConf = `[server]
state_dir = "STATE_DIR"
sweep_guard = 0
stealth = "off"

[[door]]
name = "ssh"
sequence = ["7000/tcp", "8000/udp", "9000/tcp"]
sequence_timeout = "5s"
source_ports = ["40000-40100"]
sources = ["198.18.0.0/16", "fd5e:5a3e::/64"]
open = ["tcp/2222"]
open_for = "2s"

[spa]
listen = "udp/%d"

[[spa.client]]
name = "alice"
key_file = %q
open = ["tcp/2222"]
source_ports = ["45000"]
default_open_for = "2s"
max_open_for = "2s"
`

// TestIntegrationSourcePorts: a door with source_ports opens for 'sesame knock --source-port'
// inside the range and not outside it (nor without the flag), and an SPA client with
// source_ports accepts 'sesame open --source-port' from its port only; IPv4 and IPv6, data both
// ways.
func TestIntegrationSourcePorts(t *testing.T) {
	t.Parallel() // mostly waiting for timeouts: paired with another at the end of the run (doc.go)
	bed := skipUnlessRoot(t)
	for _, fam := range families {
		listen(t, bed, fam)
	}
	extra, err := bed.AddClientAddrs(context.Background(), 2, true)
	if err != nil {
		t.Fatal(err)
	}
	k := newSPAKeys(t)
	d, _ := startSesame(t, bed, fmt.Sprintf(sourcePortConf, spaPort, filepath.Join(k.dir, "alice.key")))
	knockFromPort := func(src netip.Addr, dst netip.Addr, sport uint16) {
		t.Helper()
		o, err := knockclient.ParseArgs([]string{dst.String(), "7000", "8000:udp", "9000"})
		if err != nil {
			t.Fatal(err)
		}
		o.Source, o.SourcePort = src, sport
		if err := netnsbed.Do(bed.Client, func() error { return knockclient.Send(context.Background(), o, nil) }); err != nil {
			t.Fatalf("knock from %s port %d: %v", src, sport, err)
		}
	}
	for i, fam := range families {
		svc := netip.AddrPortFrom(fam.server, 2222)
		// Outside the range, and the kernel's own choice of port: nothing opens.
		for j, sport := range []uint16{40101, 0} {
			src := pick(extra, j, fam)
			knockFromPort(src, fam.server, sport)
			time.Sleep(200 * time.Millisecond)
			if canConnect(t, bed, src, svc) {
				t.Errorf("%s: a knock from source port %d opened the door", fam.name, sport)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := netnsbed.Command(ctx, bed.Client, sesameBin, "knock", "--source-port", "40050", fam.server.String(), "7000", "8000:udp", "9000").CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("sesame knock: %v\n%s", err, out)
		}
		if !eventually(t, bed, netip.Addr{}, svc, true) {
			t.Fatalf("%s: sesame knock --source-port 40050 did not open; log:\n%s", fam.name, tail(d.Output()))
		}
		if !waitFor(4*time.Second, func() bool { return !canConnect(t, bed, netip.Addr{}, svc) }) {
			t.Fatalf("%s: the knock's grant did not end", fam.name)
		}

		// SPA: port 45001 is refused, 45000 opens.
		sesameOpen(t, bed, fam.server.String(), "-A", "tcp/2222", "--id", "alice", "--key-file", filepath.Join(k.dir, "alice.key"), "--source-port", "45001")
		if !waitFor(2*time.Second, func() bool { return clientDecisions(d, "alice", "source port not allowed") == i+1 }) {
			t.Errorf("%s: sesame open --source-port 45001 was not refused for its port; log:\n%s", fam.name, tail(d.Output()))
		}
		if canConnect(t, bed, netip.Addr{}, svc) {
			t.Errorf("%s: a packet from source port 45001 opened the port", fam.name)
		}
		sesameOpen(t, bed, fam.server.String(), "-A", "tcp/2222", "--id", "alice", "--key-file", filepath.Join(k.dir, "alice.key"), "--source-port", "45000")
		if !eventually(t, bed, netip.Addr{}, svc, true) {
			t.Fatalf("%s: sesame open --source-port 45000 did not open; log:\n%s", fam.name, tail(d.Output()))
		}
		if !waitFor(4*time.Second, func() bool { return !canConnect(t, bed, netip.Addr{}, svc) }) {
			t.Fatalf("%s: the SPA grant did not end", fam.name)
		}
	}
}

// clientDecisions counts the daemon's SPA decision lines for client with reason, from any source.
func clientDecisions(d *daemon, client, reason string) int {
	n := 0
	for l := range strings.SplitSeq(d.Output(), "\n") {
		if strings.Contains(l, " client="+client+" ") && strings.Contains(l, reasonAttr(reason)) {
			n++
		}
	}
	return n
}
