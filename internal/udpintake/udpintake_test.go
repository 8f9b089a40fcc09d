package udpintake

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/capture"
	"github.com/sesame-knock/sesame/internal/netport"
)

func TestUDPIntakeReceivesV4AndV6(t *testing.T) {
	l, err := Listen(0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan capture.Packet, 4)
	done := make(chan error, 1)
	go func() {
		done <- l.Run(ctx, func(p *capture.Packet) {
			c := *p
			c.Payload = append([]byte(nil), p.Payload...)
			got <- c
		})
	}()
	// An IPv4-mapped destination is IPv4 on the wire: it arrives on the IPv4 socket, and its
	// sender is reported as IPv4.
	for _, dst := range []string{"127.0.0.1", "::1", "::ffff:127.0.0.1"} {
		addr := netip.AddrPortFrom(netip.MustParseAddr(dst), l.Port())
		want := netip.MustParseAddr(dst).Unmap()
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(addr))
		if err != nil {
			if dst == "::1" {
				t.Logf("no IPv6 loopback: %v", err)
				continue
			}
			t.Fatal(err)
		}
		if _, err := c.Write([]byte("hello " + dst)); err != nil {
			t.Fatal(err)
		}
		c.Close()
		select {
		case p := <-got:
			if p.Src != want || p.Proto != netport.UDP || p.DstPort != l.Port() || string(p.Payload) != "hello "+dst {
				t.Errorf("packet %+v", p)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("no datagram to %s", dst)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != context.Canceled {
			t.Errorf("Run = %v, want context.Canceled", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}
