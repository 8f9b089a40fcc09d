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
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/benchkit"
	"github.com/sesame-knock/sesame/internal/knockclient"
	"github.com/sesame-knock/sesame/internal/netnsbed"
	"github.com/sesame-knock/sesame/internal/netnsbed/netnstest"
	"github.com/sesame-knock/sesame/internal/netport"
)

// latencyTries is how many knock-to-connect measurements each daemon gets.
const latencyTries = 120

// BenchmarkKnockToConnect measures the time from the last knock packet leaving the client to the
// first connection on the protected port that carried data both ways (connect, the service's
// greeting, the echo of the client's nonce: benchkit.ProbeConnect), for sesame (both backends) and the real
// knockd (with Debian's iptables-command style), on the same kind of bed. Run it with
//
//	go test ./internal/e2e -run '^$' -bench KnockToConnect -benchtime 1x
//
// Each sub-benchmark makes latencyTries measurements whatever b.N is, each from a fresh source
// address, and reports the median, 95th percentile and maximum in microseconds.
func BenchmarkKnockToConnect(b *testing.B) {
	netnstest.SkipUnlessRoot(b)
	if sesameBin == "" {
		b.Fatal("sesame binary not built")
	}
	for _, name := range []string{"sesame-nftables", "sesame-iptables", "knockd-iptables"} {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				lat := measureKnockLatency(b, name)
				reportLatency(b, lat)
			}
		})
	}
}

func reportLatency(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) }
	b.ReportMetric(q(0.5), "p50-µs")
	b.ReportMetric(q(0.95), "p95-µs")
	b.ReportMetric(q(0.99), "p99-µs")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds()), "max-µs")
	b.ReportMetric(float64(len(lat)), "tries")
}

func measureKnockLatency(b *testing.B, name string) []time.Duration {
	ctx, bed, svc, srcs := latencyBed(b)
	dir := b.TempDir()
	var d *daemon
	switch name {
	case "sesame-nftables", "sesame-iptables":
		fw := name[len("sesame-"):]
		cfg := fmt.Sprintf(`[server]
firewall = %q
state_dir = %q

[[door]]
name = "ssh"
sequence = ["7000/tcp", "8000/udp", "9000/tcp"]
sequence_timeout = "5s"
open = ["tcp/2222"]
open_for = "60s"
`, fw, dir)
		path := filepath.Join(dir, "sesame.toml")
		os.WriteFile(path, []byte(cfg), 0o600)
		d = startDaemon(b, bed.Server, "sesame server running", sesameBin, "server", "-c", path)
	case "knockd-iptables":
		knockd, err := exec.LookPath("knockd")
		if err != nil {
			b.Fatal("knockd not installed")
		}
		for _, args := range [][]string{
			{"iptables", "-A", "INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"},
			{"iptables", "-A", "INPUT", "-p", "tcp", "--dport", "2222", "-j", "DROP"},
		} {
			if out, err := netnsbed.Command(ctx, bed.Server, args[0], args[1:]...).CombinedOutput(); err != nil {
				b.Fatalf("%v: %v %s", args, err, out)
			}
		}
		conf := fmt.Sprintf(`[options]
	LogFile = %s/knockd.log

[openSSH]
	sequence    = 7000,8000:udp,9000
	seq_timeout = 5
	tcpflags    = syn
	command     = /usr/sbin/iptables -I INPUT -s %%IP%% -p tcp --dport 2222 -j ACCEPT
`, dir)
		path := filepath.Join(dir, "knockd.conf")
		os.WriteFile(path, []byte(conf), 0o600)
		d = startDaemon(b, bed.Server, "", knockd, "-i", bed.ServerIf, "-c", path)
		if !waitFor(10*time.Second, func() bool {
			b, _ := os.ReadFile(filepath.Join(dir, "knockd.log"))
			return len(b) > 0
		}) {
			b.Fatal("knockd did not start")
		}
	}
	defer d.Stop(9)
	seq := []netport.Port{{Proto: netport.TCP, Num: 7000}, {Proto: netport.UDP, Num: 8000}, {Proto: netport.TCP, Num: 9000}}
	var lat []time.Duration
	for _, src := range srcs {
		var l time.Duration
		err := netnsbed.Do(bed.Client, func() error {
			// The clock starts as the last knock leaves.
			var start time.Time
			for _, el := range seq {
				start = time.Now()
				if err := knockclient.SendOne(ctx, src, netnsbed.Server4, el); err != nil {
					return err
				}
			}
			var err error
			l, err = benchkit.ProbeConnect(src, svc, start, 3*time.Second)
			return err
		})
		if err != nil {
			b.Fatalf("try from %s: %v", src, err)
		}
		lat = append(lat, l)
		time.Sleep(20 * time.Millisecond)
	}
	return lat
}

// latencyBed builds a bed for a latency benchmark: a TCP service on the server's port 2222 and
// latencyTries fresh client addresses, one per try. Everything goes when the benchmark ends.
func latencyBed(b *testing.B) (context.Context, *netnsbed.Bed, netip.AddrPort, []netip.Addr) {
	b.Helper()
	bed, err := netnsbed.New(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { bed.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	svc := netip.AddrPortFrom(netnsbed.Server4, 2222)
	if _, err := netnsbed.Listen(ctx, bed.Server, svc); err != nil {
		b.Fatal(err)
	}
	srcs, err := bed.AddClientAddrs(ctx, latencyTries, false)
	if err != nil {
		b.Fatal(err)
	}
	return ctx, bed, svc, srcs
}
