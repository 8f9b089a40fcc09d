//go:build linux

package e2e

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/knockclient"
	"github.com/sesame-knock/sesame/internal/netnsbed"
)

// payloadConf is a door whose UDP and ICMP knocks must carry payloads.
const payloadConf = `[server]
state_dir = "STATE_DIR"
sweep_guard = 0

[[door]]
name = "ssh"
sequence = ["7000/tcp", { port = "8000/udp", payload = "hex:cafe01" }, { port = "icmp", payload = "hex:5e5a3e" }, "9000/tcp"]
sequence_timeout = "5s"
sources = ["198.18.0.0/16", "fd5e:5a3e::/64"]
open = ["tcp/2222"]
open_for = "30s"
`

// sesameKnock runs 'sesame knock' in the client namespace.
func sesameKnock(t *testing.T, bed *netnsbed.Bed, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := netnsbed.Command(ctx, bed.Client, sesameBin, append([]string{"knock"}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("sesame knock %v: %v\n%s", args, err, out)
	}
}

// knockFromPayload knocks hits, in 'sesame knock' syntax, from src in the client namespace.
func knockFromPayload(t *testing.T, bed *netnsbed.Bed, src, dst netip.Addr, hits ...string) {
	t.Helper()
	o, err := knockclient.ParseArgs(append([]string{dst.String()}, hits...))
	if err != nil {
		t.Fatal(err)
	}
	o.Source = src
	if err := netnsbed.Do(bed.Client, func() error { return knockclient.Send(context.Background(), o, nil) }); err != nil {
		t.Fatalf("knock %v from %s: %v", hits, src, err)
	}
}

// TestIntegrationKnockPayload: 'sesame knock' with the payloads a door requires opens it (data
// both ways), IPv4 and IPv6; a wrong UDP payload, a missing one, a wrong ICMP payload or a plain
// ping instead opens nothing.
func TestIntegrationKnockPayload(t *testing.T) {
	bed := skipUnlessRoot(t)
	for _, fam := range families {
		listen(t, bed, fam)
	}
	// One client address per case and family: a failed attempt leaves no state behind it.
	extra, err := bed.AddClientAddrs(context.Background(), 4, true)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := startSesame(t, bed, payloadConf)
	for _, fam := range families {
		svc := netip.AddrPortFrom(fam.server, 2222)
		for i, tc := range []struct {
			name string
			udp  string
			ping string
		}{
			{"wrong udp payload", "8000:udp:hex:cafe02", "icmp:hex:5e5a3e"},
			{"no udp payload", "8000:udp", "icmp:hex:5e5a3e"},
			{"wrong icmp payload", "8000:udp:hex:cafe01", "icmp:hex:5e5a3f"},
			{"plain ping", "8000:udp:hex:cafe01", "icmp"},
		} {
			src := pick(extra, i, fam)
			knockFromPayload(t, bed, src, fam.server, "7000", tc.udp, tc.ping, "9000")
			time.Sleep(200 * time.Millisecond)
			if canConnect(t, bed, src, svc) {
				t.Errorf("%s: %s opened the door; log:\n%s", fam.name, tc.name, tail(d.Output()))
			}
		}
		sesameKnock(t, bed, fam.server.String(), "7000", "8000:udp:hex:cafe01", "icmp:hex:5e5a3e", "9000")
		if !eventually(t, bed, netip.Addr{}, svc, true) {
			t.Fatalf("%s: the right payloads did not open the door; log:\n%s", fam.name, tail(d.Output()))
		}
	}
}
