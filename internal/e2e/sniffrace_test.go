//go:build linux

package e2e

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/netnsbed"
	"github.com/sesame-knock/sesame/internal/spa"
)

// TestIntegrationSniffRace: a sniffer on the path sees the owner's SPA packet and gets its copy
// to the server first, from its own address. The owner's packet is held back in the server
// namespace (dropped before the SPA socket, after a packet socket has captured it), the
// attacker sends the captured bytes, then the owner's copy arrives and is a replay.
//
// With the default (the packet names the owner's address on the route) the attacker's copy is
// granted for the owner: the owner talks to the service, the attacker cannot connect. With -s
// (the packet's source address) the race goes to the attacker: the attacker talks to the
// service and the owner is shut out. For `sesame open`, `sesame open --fwknop` and the fwknop
// client (-a / -s); IPv4 and, for sesame's format, IPv6. A client with require_address refuses
// the -s request and accepts the default one.
func TestIntegrationSniffRace(t *testing.T) {
	skipWithoutFwknop(t)
	bed := skipUnlessRoot(t)
	ctx := context.Background()
	extra, err := bed.AddClientAddrs(ctx, 1, true)
	if err != nil {
		t.Fatal(err)
	}
	attacker4, attacker6 := extra[0], extra[1]
	// A deprecated address is never the kernel's choice of source: the owner's is the bed's own.
	if out, err := netnsbed.Command(ctx, bed.Client, "ip", "addr", "change", attacker6.String()+"/64", "dev", bed.ClientIf, "preferred_lft", "0").CombinedOutput(); err != nil {
		t.Fatalf("deprecate %s: %v: %s", attacker6, err, out)
	}
	k := newSPAKeys(t)
	strictKey, err := spa.GenerateSharedKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	text, _ := strictKey.MarshalText()
	writeSecret(t, filepath.Join(k.dir, "strict.key"), text)

	cases := []struct {
		name    string
		port    uint16
		fam     family
		client  string // the server's name for the client
		args    []string
		fwknop  bool // args are the fwknop client's
		source  bool // the request asks for the packet's source address
		refused string
	}{
		{"sesame open", 2301, families[0], "alice", []string{"--id", "alice", "--key-file", "alice.key"}, false, false, ""},
		{"sesame open -s", 2302, families[0], "alice", []string{"--id", "alice", "--key-file", "alice.key", "-s"}, false, true, ""},
		{"sesame open ipv6", 2303, families[1], "alice", []string{"--id", "alice", "--key-file", "alice.key"}, false, false, ""},
		{"sesame open ipv6 -s", 2304, families[1], "alice", []string{"--id", "alice", "--key-file", "alice.key", "-s"}, false, true, ""},
		{"sesame open --fwknop", 2305, families[0], "legacy", []string{"--fwknop", "--id", "root", "--key-file", "fwknop.key"}, false, false, ""},
		{"sesame open --fwknop -s", 2306, families[0], "legacy", []string{"--fwknop", "--id", "root", "--key-file", "fwknop.key", "-s"}, false, true, ""},
		{"fwknop -a", 2307, families[0], "legacy", []string{"-a", netnsbed.Client4.String()}, true, false, ""},
		{"fwknop -s", 2308, families[0], "legacy", []string{"-s"}, true, true, ""},
		{"require_address, default", 2309, families[0], "strict", []string{"--id", "strict", "--key-file", "strict.key"}, false, false, ""},
		{"require_address, -s", 2310, families[0], "strict", []string{"--id", "strict", "--key-file", "strict.key", "-s"}, false, true, "source address required"},
	}
	var ports []string
	for _, c := range cases {
		ports = append(ports, fmt.Sprintf("%q", fmt.Sprintf("tcp/%d", c.port)))
	}
	open := strings.Join(ports, ", ")
	// stealth = "off": the race is the UDP socket's (a stealth gate sniffs the SPA port).
	cfg := fmt.Sprintf(`[server]
state_dir = "STATE_DIR"
stealth = "off"

[spa]
listen = "udp/%d"

[[spa.client]]
name = "alice"
key_file = %q
open = [%s]
default_open_for = "60s"

[[spa.client]]
name = "strict"
key_file = %q
open = [%s]
default_open_for = "60s"
require_address = true

[[spa.client]]
name = "legacy"
format = "fwknop"
key_file = %q
open = [%s]
default_open_for = "60s"
`, spaPort, filepath.Join(k.dir, "alice.key"), open, filepath.Join(k.dir, "strict.key"), open, filepath.Join(k.dir, "fwknop.key"), open)
	d, _ := startSesame(t, bed, cfg)

	// Hold back SPA packets from every client address but the attacker's, before the socket.
	nft(t, bed.Server, "add", "table", "inet", "sniffrace")
	t.Cleanup(func() { netnsbed.Command(ctx, bed.Server, "nft", "delete", "table", "inet", "sniffrace").Run() })
	nft(t, bed.Server, "add", "chain", "inet", "sniffrace", "pre", "{ type filter hook prerouting priority -300; }")
	hold := func() {
		nft(t, bed.Server, "flush", "chain", "inet", "sniffrace", "pre")
		nft(t, bed.Server, "add", "rule", "inet", "sniffrace", "pre", "ip", "saddr", "!=", attacker4.String(), "udp", "dport", fmt.Sprint(spaPort), "drop")
		nft(t, bed.Server, "add", "rule", "inet", "sniffrace", "pre", "ip6", "saddr", "!=", attacker6.String(), "udp", "dport", fmt.Sprint(spaPort), "drop")
	}
	release := func() { nft(t, bed.Server, "flush", "chain", "inet", "sniffrace", "pre") }

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			svc := netip.AddrPortFrom(tc.fam.server, tc.port)
			if _, err := netnsbed.Listen(t.Context(), bed.Server, svc); err != nil {
				t.Fatal(err)
			}
			attacker := attacker4
			if tc.fam.name == "ipv6" {
				attacker = attacker6
			}
			hold()
			capt := captureSPA(t, bed, attacker)
			if tc.fwknop {
				fwknopClient(t, bed, append([]string{"-A", fmt.Sprintf("tcp/%d", tc.port)}, tc.args...)...)
			} else {
				args := append([]string{"open", tc.fam.server.String(), "-A", fmt.Sprintf("tcp/%d", tc.port)}, tc.args...)
				cmd := netnsbed.Command(ctx, bed.Client, sesameBin, args...)
				cmd.Dir = k.dir
				out, err := cmd.CombinedOutput()
				if err != nil {
					t.Fatalf("sesame %v: %v\n%s", args, err, out)
				}
				if warned := strings.Contains(string(out), "warning: the request asks for the packet's source address"); warned != tc.source {
					t.Errorf("sesame open output %q: source warning %v, want %v", out, warned, tc.source)
				}
			}
			c := <-capt
			if c.err != nil {
				t.Fatal(c.err)
			}
			owner := c.src
			if owner == attacker {
				t.Fatalf("the owner's packet came from the attacker's address %s", owner)
			}
			if n := countDecisions(d, owner, "", "accepted"); n != 0 {
				t.Fatalf("the owner's own packet reached the server before the attacker's copy")
			}
			// The sniffer's copy, first.
			sendUDP(t, bed, attacker, netip.AddrPortFrom(tc.fam.server, spaPort), c.payload)
			reason := "accepted"
			if tc.refused != "" {
				reason = tc.refused
			}
			if !waitDecision(d, attacker, tc.client, reason, 2*time.Second) {
				t.Fatalf("no %q line for the attacker's copy from %s:\n%s", reason, attacker, tail(d.Output()))
			}
			// Then the owner's, late: the same packet, a replay.
			release()
			sendUDP(t, bed, owner, netip.AddrPortFrom(tc.fam.server, spaPort), c.payload)
			if !waitDecision(d, owner, tc.client, "replay", 2*time.Second) {
				t.Fatalf("the owner's late copy from %s was not refused as a replay:\n%s", owner, tail(d.Output()))
			}
			switch {
			case tc.refused != "":
				if canConnect(t, bed, attacker, svc) || canConnect(t, bed, owner, svc) {
					t.Errorf("a refused request opened port %d", tc.port)
				}
			case tc.source:
				// The race as documented: the attacker is in, the owner is out.
				if !eventually(t, bed, attacker, svc, true) {
					t.Errorf("-s: the attacker's early copy did not let the attacker in (the race docs/SECURITY.md describes)")
				}
				if canConnect(t, bed, owner, svc) {
					t.Errorf("-s: the owner got in although the attacker's copy came first")
				}
			default:
				if !eventually(t, bed, owner, svc, true) {
					t.Errorf("the owner %s cannot talk to the service after the attacker's early copy", owner)
				}
				if canConnect(t, bed, attacker, svc) {
					t.Errorf("the attacker's copy of an explicit-address request let the attacker in")
				}
			}
		})
	}
}

// captured is the first SPA datagram a packet socket saw in the server namespace.
type captured struct {
	src     netip.Addr
	payload []byte
	err     error
}

// captureSPA opens a packet socket on the server's interface and returns, on the channel, the
// first UDP datagram to the SPA port that does not come from skip. It gives up after 5 s.
func captureSPA(t *testing.T, bed *netnsbed.Bed, skip netip.Addr) <-chan captured {
	t.Helper()
	var fd int
	err := netnsbed.Do(bed.Server, func() error {
		ifi, err := net.InterfaceByName(bed.ServerIf)
		if err != nil {
			return err
		}
		const ethPAll = 0x0003
		proto := int(ethPAll<<8&0xff00 | ethPAll>>8)
		if fd, err = syscall.Socket(syscall.AF_PACKET, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, proto); err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		if err := syscall.Bind(fd, &syscall.SockaddrLinklayer{Protocol: uint16(proto), Ifindex: ifi.Index}); err != nil {
			syscall.Close(fd)
			return fmt.Errorf("bind packet socket: %w", err)
		}
		tv := syscall.NsecToTimeval((200 * time.Millisecond).Nanoseconds())
		return syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv)
	})
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan captured, 1)
	go func() {
		defer syscall.Close(fd)
		buf := make([]byte, 65536)
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			n, _, err := syscall.Recvfrom(fd, buf, 0)
			if err != nil {
				if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR) {
					continue
				}
				out <- captured{err: fmt.Errorf("capture: %w", err)}
				return
			}
			if src, payload, ok := spaDatagram(buf[:n]); ok && src != skip {
				out <- captured{src: src, payload: append([]byte(nil), payload...)}
				return
			}
		}
		out <- captured{err: errors.New("capture: no SPA datagram in 5s")}
	}()
	return out
}

// spaDatagram parses an IPv4 or IPv6 packet (no extension headers) and returns its source and
// UDP payload when it is a datagram to the SPA port.
func spaDatagram(p []byte) (netip.Addr, []byte, bool) {
	var src netip.Addr
	var udp []byte
	switch {
	case len(p) >= 20 && p[0]>>4 == 4:
		ihl := int(p[0]&0x0f) * 4
		if p[9] != syscall.IPPROTO_UDP || len(p) < ihl+8 {
			return src, nil, false
		}
		src, udp = netip.AddrFrom4([4]byte(p[12:16])), p[ihl:]
	case len(p) >= 48 && p[0]>>4 == 6:
		if p[6] != syscall.IPPROTO_UDP {
			return src, nil, false
		}
		src, udp = netip.AddrFrom16([16]byte(p[8:24])), p[40:]
	default:
		return src, nil, false
	}
	if binary.BigEndian.Uint16(udp[2:4]) != spaPort {
		return src, nil, false
	}
	n := int(binary.BigEndian.Uint16(udp[4:6]))
	if n < 8 || n > len(udp) {
		return src, nil, false
	}
	return src, udp[8:n], true
}
