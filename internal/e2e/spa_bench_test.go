//go:build linux

package e2e

import (
	"crypto/rand"
	"encoding/base64"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/benchkit"
	"github.com/sesame-knock/sesame/internal/fwknop"
	"github.com/sesame-knock/sesame/internal/netnsbed"
	"github.com/sesame-knock/sesame/internal/netnsbed/netnstest"
	"github.com/sesame-knock/sesame/internal/netport"
	"github.com/sesame-knock/sesame/internal/spa"
)

// BenchmarkSPAToConnect measures the time from an SPA packet leaving the client to the first
// connection on the protected port that carried data both ways (benchkit.ProbeConnect): sesame
// with its native format (shared key and key pair) and with fwknop's format, and the real
// fwknopd in UDP server mode, on the same kind of bed. Run it with
//
//	go test ./internal/e2e -run '^$' -bench SPAToConnect -benchtime 1x
//
// Each sub-benchmark makes latencyTries measurements, each from a fresh source address. The
// floor-open-port row runs no daemon and no gate: the port is open from the start, so it
// measures what the bed itself costs (the send, the prober's first attempt, one handshake and
// one greeting-and-echo round trip).
func BenchmarkSPAToConnect(b *testing.B) {
	netnstest.SkipUnlessRoot(b)
	if sesameBin == "" {
		b.Fatal("sesame binary not built")
	}
	for _, name := range []string{"floor-open-port", "sesame-native-shared", "sesame-native-shared-sniff", "sesame-native-pair", "sesame-fwknop", "fwknopd-udp"} {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				reportLatency(b, measureSPALatency(b, name))
			}
		})
	}
}

func measureSPALatency(b *testing.B, name string) []time.Duration {
	ctx, bed, svc, srcs := latencyBed(b)
	dir := b.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			b.Fatal(err)
		}
		return p
	}
	shared, _ := spa.GenerateSharedKey(rand.Reader)
	pair, _ := spa.GeneratePair(rand.Reader)
	server, _ := spa.GeneratePair(rand.Reader)
	serverPub := server.Public()
	sharedText, _ := shared.MarshalText()
	serverText, _ := server.MarshalText()
	pubText, _ := pair.Public().MarshalText()
	fwKey, _ := base64.StdEncoding.DecodeString(fwknopKey)
	fwHMAC, _ := base64.StdEncoding.DecodeString(fwknopHMAC)
	fwKeys := fwknop.Keys{Key: fwKey, HMACKey: fwHMAC}

	var d *daemon
	switch name {
	case "floor-open-port":
		// No daemon, no gate: the port is open before the packet is sent.
	case "fwknopd-udp":
		if _, err := exec.LookPath("fwknopd"); err != nil {
			b.Fatal("fwknopd not installed")
		}
		for _, rule := range [][]string{
			{"-A", "INPUT", "-i", "lo", "-j", "ACCEPT"},
			{"-A", "INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"},
			{"-A", "INPUT", "-p", "udp", "--dport", "62201", "-j", "ACCEPT"},
			{"-P", "INPUT", "DROP"},
		} {
			if out, err := netnsbed.Command(ctx, bed.Server, "iptables", rule...).CombinedOutput(); err != nil {
				b.Fatalf("iptables %v: %v %s", rule, err, out)
			}
		}
		run := filepath.Join(dir, "run")
		os.Mkdir(run, 0o700)
		conf := write("fwknopd.conf", "ENABLE_UDP_SERVER Y;\nUDPSERV_PORT 62201;\nENABLE_SPA_PACKET_AGING Y;\nMAX_SPA_PACKET_AGE 120;\nFLUSH_IPT_AT_INIT Y;\nFLUSH_IPT_AT_EXIT Y;\nFWKNOP_RUN_DIR "+run+";\n")
		access := write("access.conf", "SOURCE ANY\nKEY_BASE64 "+fwknopKey+"\nHMAC_KEY_BASE64 "+fwknopHMAC+"\nFW_ACCESS_TIMEOUT 60\nOPEN_PORTS tcp/2222\n")
		d = startDaemon(b, bed.Server, "Kicking off UDP server", "fwknopd", "-f", "-c", conf, "-a", access,
			"-d", filepath.Join(run, "digest.cache"), "-p", filepath.Join(run, "fwknopd.pid"))
		time.Sleep(100 * time.Millisecond)
	default:
		cfg := spaStealth(strings.HasSuffix(name, "-sniff"), `[server]
state_dir = %q

[spa]
listen = "udp/62201"
sniff = %v
server_key_file = %q

[[spa.client]]
name = "alice"
key_file = %q
open = ["tcp/2222"]

[[spa.client]]
name = "bob"
public_key = %q
open = ["tcp/2222"]

[[spa.client]]
name = "legacy"
format = "fwknop"
key_file = %q
open = ["tcp/2222"]
`, dir, strings.HasSuffix(name, "-sniff"), write("server", string(serverText)), write("alice.key", string(sharedText)), string(pubText),
			write("fwknop.key", "KEY_BASE64 "+fwknopKey+"\nHMAC_KEY_BASE64 "+fwknopHMAC+"\n"))
		d = startDaemon(b, bed.Server, "sesame server running", sesameBin, "server", "-c", write("sesame.toml", cfg))
	}
	if d != nil {
		defer d.Stop(9)
	}

	dst := netip.AddrPortFrom(netnsbed.Server4, 62201)
	var lat []time.Duration
	for _, src := range srcs {
		var pkt []byte
		var err error
		now := time.Now()
		switch name {
		case "sesame-native-shared", "sesame-native-shared-sniff":
			pkt, err = spa.Seal(spa.Request{Ports: []netport.Port{{Proto: netport.TCP, Num: 2222}}, Duration: time.Minute}, spa.ClientCredential{ID: "alice", Shared: &shared}, now, rand.Reader)
		case "sesame-native-pair":
			pkt, err = spa.Seal(spa.Request{Ports: []netport.Port{{Proto: netport.TCP, Num: 2222}}, Duration: time.Minute}, spa.ClientCredential{ID: "bob", Pair: pair, Server: &serverPub}, now, rand.Reader)
		case "floor-open-port":
			pkt = make([]byte, 200)
		default:
			pkt, err = fwknop.Encode(&fwknop.Message{User: "bench", Timestamp: now, Type: fwknop.TypeAccess, AllowIP: src,
				Ports: []netport.Port{{Proto: netport.TCP, Num: 2222}}}, fwKeys, rand.Reader)
		}
		if err != nil {
			b.Fatal(err)
		}
		var l time.Duration
		err = netnsbed.Do(bed.Client, func() error {
			c, err := net.DialUDP("udp", &net.UDPAddr{IP: src.AsSlice()}, net.UDPAddrFromAddrPort(dst))
			if err != nil {
				return err
			}
			defer c.Close()
			// The clock starts as the packet leaves: on a veth pair the write itself carries
			// it through the server's stack.
			start := time.Now()
			if _, err := c.Write(pkt); err != nil {
				return err
			}
			l, err = benchkit.ProbeConnect(src, svc, start, 3*time.Second)
			return err
		})
		if err != nil {
			out := ""
			if d != nil {
				out = tail(d.Output())
			}
			b.Fatalf("%s: try from %s: %v\n%s", name, src, err, out)
		}
		lat = append(lat, l)
		time.Sleep(10 * time.Millisecond)
	}
	return lat
}

func tail(s string) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(0, len(lines)-15):], "\n")
}
