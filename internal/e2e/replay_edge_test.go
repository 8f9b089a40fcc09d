//go:build linux

package e2e

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/netnsbed"
	"github.com/sesame-knock/sesame/internal/spa"
)

// noHMACConfig has one fwknop client without HMAC (a passphrase-style key only) that may open
// tcp/2222 for 3 s from anywhere in the bed, and alice (native) for the mapped-source test.
func noHMACConfig(t *testing.T, k *spaKeys, sniff bool) string {
	t.Helper()
	writeSecret(t, filepath.Join(k.dir, "nohmac.key"), []byte("KEY_BASE64 "+fwknopKey+"\n"))
	return spaStealth(sniff, `[server]
state_dir = %q

[spa]
listen = "udp/%d"
sniff = %v
max_age = "120s"

[[spa.client]]
name = "alice"
key_file = %q
open = ["tcp/2222"]
sources = ["198.18.0.0/24"]

[[spa.client]]
name = "nohmac"
format = "fwknop"
key_file = %q
open = ["tcp/2222"]
sources = ["198.18.0.0/16"]
default_open_for = "3s"
max_open_for = "3s"
`, t.TempDir(), spaPort, sniff, filepath.Join(k.dir, "alice.key"), filepath.Join(k.dir, "nohmac.key"))
}

// fwknopNoHMAC runs the real fwknop client without HMAC in the client namespace.
func fwknopNoHMAC(t *testing.T, bed *netnsbed.Bed, args ...string) {
	t.Helper()
	base := []string{"--no-rc-file", "--no-save-args", "-D", netnsbed.Server4.String(), "-p", fmt.Sprint(spaPort),
		"--key-base64-rijndael", fwknopKey}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := netnsbed.Command(ctx, bed.Client, "fwknop", append(base, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("fwknop %v: %v\n%s", args, err, out)
	}
}

// respelled is pkt with its last character replaced by one that a lenient base64 decoder reads
// as the same bytes (it differs only in unused low bits), or nil when there are none.
func respelled(pkt []byte) []byte {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	if (len("U2FsdGVkX1")+len(pkt))%4 == 0 {
		return nil
	}
	out := append([]byte(nil), pkt...)
	out[len(out)-1] = alphabet[strings.IndexByte(alphabet, out[len(out)-1])^1]
	return out
}

// TestIntegrationSPAFwknopNoHMACRespelled (issue 9 item 1): a packet of the real fwknop client
// without HMAC, asking for its source (-s), opens the port for its sender once. The same packet
// with '=', '==' or '=AAAA' appended, or its last character respelled, sent from another client
// address, opens nothing; a flood of 20000 such variants leaves the replay store and the server
// usable: the client's next packet opens the port again.
func TestIntegrationSPAFwknopNoHMACRespelled(t *testing.T) {
	skipWithoutFwknop(t)
	for _, mode := range spaModes {
		t.Run(mode.name, func(t *testing.T) {
			bed := skipUnlessRoot(t)
			svc := listen(t, bed, families[0])
			extra, err := bed.AddClientAddrs(context.Background(), 2, false)
			if err != nil {
				t.Fatal(err)
			}
			sniffer, flooder := extra[0], extra[1]
			k := newSPAKeys(t)
			d, _ := startSesame(t, bed, noHMACConfig(t, k, mode.sniff))
			if !strings.Contains(d.Output(), `spa client \"nohmac\": no HMAC key`) && !strings.Contains(d.Output(), `spa client "nohmac": no HMAC key`) {
				t.Errorf("no warning about the client without HMAC at start:\n%s", d.Output())
			}
			for _, src := range []netip.Addr{netnsbed.Client4, sniffer} {
				if canConnect(t, bed, src, svc) {
					t.Fatalf("port open for %s before any packet", src)
				}
			}
			saved := filepath.Join(t.TempDir(), "packet")
			fwknopNoHMAC(t, bed, "-A", "tcp/2222", "-s", "-B", saved)
			if !waitDecision(d, netnsbed.Client4, "nohmac", "accepted", 2*time.Second) {
				t.Fatal("no accepted line for the fwknop packet without HMAC")
			}
			if !eventually(t, bed, netnsbed.Client4, svc, true) {
				t.Fatal("port not open for the client after its packet")
			}
			data, err := os.ReadFile(saved)
			if err != nil {
				t.Fatal(err)
			}
			pkt := []byte(strings.TrimSpace(string(data)))
			variants := [][]byte{pkt, append(pkt[:len(pkt):len(pkt)], '='), append(pkt[:len(pkt):len(pkt)], "=="...),
				append(pkt[:len(pkt):len(pkt)], "=AAAA"...)}
			if r := respelled(pkt); r != nil {
				variants = append(variants, r)
			}
			dst := netip.AddrPortFrom(netnsbed.Server4, spaPort)
			for _, v := range variants {
				sendUDP(t, bed, sniffer, dst, v)
			}
			if !waitFor(3*time.Second, func() bool { return countDecisions(d, sniffer, "", "") >= len(variants) }) {
				t.Errorf("%d decisions about the sniffer's %d packets", countDecisions(d, sniffer, "", ""), len(variants))
			}
			if n := countDecisions(d, sniffer, "", "accepted"); n != 0 {
				t.Errorf("%d respelled replays accepted", n)
			}
			if !waitDecision(d, sniffer, "nohmac", "replay", time.Second) {
				t.Error("the packet itself from another address was not refused as a replay")
			}
			if canConnect(t, bed, sniffer, svc) {
				t.Error("port open for the sniffer after its replays")
			}

			// A bounded flood of variants from a third address, in at most 10 s.
			const flood = 20000
			start := time.Now()
			sent := floodVariants(t, bed, flooder, dst, pkt, flood, 10*time.Second)
			t.Logf("sent %d variants in %v", sent, time.Since(start).Round(time.Millisecond))
			// The client's grant (3 s) ends; its next packet opens the port again.
			if !waitFor(6*time.Second, func() bool { return !canConnect(t, bed, netnsbed.Client4, svc) }) {
				t.Fatal("the client's first grant did not end")
			}
			fwknopNoHMAC(t, bed, "-A", "tcp/2222", "-s")
			if !waitFor(3*time.Second, func() bool { return countDecisions(d, netnsbed.Client4, "nohmac", "accepted") == 2 }) {
				t.Fatalf("the client's packet after the flood was not accepted:\n%s", tail(d.Output()))
			}
			if !eventually(t, bed, netnsbed.Client4, svc, true) {
				t.Fatal("port not open for the client after the flood")
			}
			// Packets are handled in order: the flood was decided before the client's packet.
			if n := countDecisions(d, flooder, "", "accepted"); n != 0 {
				t.Errorf("%d flooded variants accepted", n)
			}
			if canConnect(t, bed, flooder, svc) {
				t.Error("port open for the flooder")
			}
		})
	}
}

// floodVariants sends up to n variants of pkt ('=' and four base64 characters appended, each
// different) from src to dst, stopping after limit; it returns how many it sent.
func floodVariants(t *testing.T, bed *netnsbed.Bed, src netip.Addr, dst netip.AddrPort, pkt []byte, n int, limit time.Duration) int {
	t.Helper()
	sent := 0
	err := netnsbed.Do(bed.Client, func() error {
		c, err := net.DialUDP("udp", &net.UDPAddr{IP: src.AsSlice()}, net.UDPAddrFromAddrPort(dst))
		if err != nil {
			return err
		}
		defer c.Close()
		deadline := time.Now().Add(limit)
		buf := append(append([]byte(nil), pkt...), "=AAAA"...)
		var idx [3]byte
		for i := 0; i < n && time.Now().Before(deadline); i++ {
			idx[0], idx[1], idx[2] = byte(i>>16), byte(i>>8), byte(i)
			base64.StdEncoding.Encode(buf[len(pkt)+1:], idx[:])
			if _, err := c.Write(buf); err != nil && !isTransient(err) {
				return err
			}
			sent++
			if i%500 == 499 {
				time.Sleep(20 * time.Millisecond) // a few thousand per second: the socket buffer keeps up
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("flood from %s: %v", src, err)
	}
	return sent
}

func isTransient(err error) bool {
	return strings.Contains(err.Error(), "connection refused") || strings.Contains(err.Error(), "no buffer space")
}

// TestIntegrationSPAMappedSource (issue 9 item 7): an IPv6 packet whose source is the
// IPv4-mapped form of an allowed IPv4 client, carrying that client's valid packet, opens
// nothing, on the UDP socket and when sniffing; the refusal names the source and the reason.
func TestIntegrationSPAMappedSource(t *testing.T) {
	for _, mode := range spaModes {
		t.Run(mode.name, func(t *testing.T) {
			bed := skipUnlessRoot(t)
			svc := listen(t, bed, families[0])
			k := newSPAKeys(t)
			d, _ := startSesame(t, bed, noHMACConfig(t, k, mode.sniff))
			mapped := netip.AddrFrom16(netnsbed.Client4.As16())
			pkt := seal(t, k.shared(), spa.Request{}, time.Now())
			sendRawUDP6(t, bed, mapped, netip.AddrPortFrom(netnsbed.Server6, spaPort), pkt)
			want := "reason=\"bad source\""
			if mode.sniff {
				want = "bad source address: " + mapped.String() + " (IPv4-mapped IPv6 address)"
			}
			if !waitFor(2*time.Second, func() bool { return strings.Contains(d.Output(), want) }) {
				t.Errorf("no refusal %q for the mapped source:\n%s", want, tail(d.Output()))
			}
			if strings.Contains(d.Output(), "spa accepted") {
				t.Errorf("a packet from a mapped source was accepted:\n%s", tail(d.Output()))
			}
			if canConnect(t, bed, netnsbed.Client4, svc) {
				t.Error("port open for the IPv4 client after a packet from its mapped address")
			}
			// The same kind of packet from the client itself, over IPv4, opens the port.
			sendUDP(t, bed, netnsbed.Client4, netip.AddrPortFrom(netnsbed.Server4, spaPort), seal(t, k.shared(), spa.Request{}, time.Now()))
			if !eventually(t, bed, netnsbed.Client4, svc, true) {
				t.Errorf("port not open after the client's own packet:\n%s", tail(d.Output()))
			}
		})
	}
}

// sendRawUDP6 sends one hand-made IPv6 UDP datagram with any source from the client namespace.
func sendRawUDP6(t *testing.T, bed *netnsbed.Bed, src netip.Addr, dst netip.AddrPort, payload []byte) {
	t.Helper()
	err := netnsbed.Do(bed.Client, func() error {
		fd, err := syscall.Socket(syscall.AF_INET6, syscall.SOCK_RAW, syscall.IPPROTO_RAW)
		if err != nil {
			return fmt.Errorf("raw socket: %w", err)
		}
		defer syscall.Close(fd)
		pkt := make([]byte, 48+len(payload))
		pkt[0] = 0x60
		binary.BigEndian.PutUint16(pkt[4:], uint16(8+len(payload)))
		pkt[6], pkt[7] = syscall.IPPROTO_UDP, 64
		s, d := src.As16(), dst.Addr().As16()
		copy(pkt[8:24], s[:])
		copy(pkt[24:40], d[:])
		udp := pkt[40:]
		binary.BigEndian.PutUint16(udp[0:], 40000)
		binary.BigEndian.PutUint16(udp[2:], dst.Port())
		binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
		copy(udp[8:], payload)
		var sum uint32
		for i := 0; i < 16; i += 2 {
			sum += uint32(binary.BigEndian.Uint16(s[i:])) + uint32(binary.BigEndian.Uint16(d[i:]))
		}
		sum += uint32(8+len(payload)) + syscall.IPPROTO_UDP
		binary.BigEndian.PutUint16(udp[6:], checksum(udp, sum))
		return syscall.Sendto(fd, pkt, 0, &syscall.SockaddrInet6{Addr: d})
	})
	if err != nil {
		t.Fatalf("raw UDP %s -> %s: %v", src, dst, err)
	}
}
