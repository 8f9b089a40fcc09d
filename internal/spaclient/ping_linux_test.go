package spaclient_test

import (
	"bytes"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/net/icmp"

	"github.com/sesame-knock/sesame/internal/netnsbed"
	"github.com/sesame-knock/sesame/internal/netnsbed/netnstest"
	"github.com/sesame-knock/sesame/internal/spaclient"
)

// TestIntegrationSendPing: SendPing carries its payload unchanged in one echo request, IPv4 and
// IPv6, from a ping socket when net.ipv4.ping_group_range holds the caller's group (root's, 0)
// and from a raw socket when it does not (the kernel's default "1 0").
func TestIntegrationSendPing(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	bed := netnstest.NewT(t)
	for _, tc := range []struct {
		groups, want string
	}{{"0 0", spaclient.PingSocket}, {"1 0", spaclient.RawSocket}} {
		inNS(t, bed.Client, "sysctl", "-qw", "net.ipv4.ping_group_range="+tc.groups)
		for _, fam := range []struct {
			dst       netip.Addr
			net, addr string
			proto     int
			echo      byte
		}{
			{netnsbed.Server4, "ip4:icmp", netnsbed.Server4.String(), 1, 8},
			{netnsbed.Server6, "ip6:ipv6-icmp", netnsbed.Server6.String(), 58, 128},
		} {
			var ln *icmp.PacketConn
			if err := netnsbed.Do(bed.Server, func() (err error) {
				ln, err = icmp.ListenPacket(fam.net, fam.addr)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			payload := []byte(fmt.Sprintf("sesame spa %s %s", tc.groups, fam.dst))
			var how string
			if err := netnsbed.Do(bed.Client, func() (err error) {
				how, err = spaclient.SendPing(fam.dst, payload)
				return err
			}); err != nil {
				t.Fatalf("ping_group_range %q: SendPing(%s): %v", tc.groups, fam.dst, err)
			}
			if how != tc.want {
				t.Errorf("ping_group_range %q: sent from a %s, want a %s", tc.groups, how, tc.want)
			}
			got := false
			ln.SetReadDeadline(time.Now().Add(2 * time.Second))
			buf := make([]byte, 1500)
			for i := 0; i < 10 && !got; i++ {
				n, _, err := ln.ReadFrom(buf)
				if err != nil {
					break
				}
				m, err := icmp.ParseMessage(fam.proto, buf[:n])
				if err != nil || buf[0] != fam.echo {
					continue
				}
				if e, ok := m.Body.(*icmp.Echo); ok && bytes.Equal(e.Data, payload) {
					got = true
				}
			}
			ln.Close()
			if !got {
				t.Errorf("ping_group_range %q: no echo request to %s carrying the payload", tc.groups, fam.dst)
			}
		}
	}
}
