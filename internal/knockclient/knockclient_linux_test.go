package knockclient

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/capture"
	"github.com/sesame-knock/sesame/internal/knock"
	"github.com/sesame-knock/sesame/internal/netnsbed"
	"github.com/sesame-knock/sesame/internal/netnsbed/netnstest"
	"github.com/sesame-knock/sesame/internal/netport"
)

// seen is a packet as the server saw it.
type seen struct {
	src     netip.Addr
	proto   netport.Proto
	port    uint16
	flags   uint8
	payload string
}

func (s seen) String() string {
	return fmt.Sprintf("%v %v:%d flags %#x payload %q", s.src, s.proto, s.port, s.flags, s.payload)
}

// serverCapture captures every TCP segment to 7000-7001, UDP to 9000 and ICMP echo in the
// server namespace.
func serverCapture(t *testing.T, b *netnsbed.Bed) (take func(wait time.Duration) []seen) {
	t.Helper()
	var a *capture.AFPacket
	err := netnsbed.Do(b.Server, func() (err error) {
		a, err = capture.Open(capture.Config{Interfaces: []string{b.ServerIf}, Filter: capture.Filter{
			Knocks: []capture.Knock{
				{Port: tcp(7000)}, {Port: tcp(7001)}, {Port: udp(9000)}, {Port: icmpHit},
			},
		}})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var got []seen
	done := make(chan error, 1)
	go func() {
		done <- a.Run(ctx, func(p *capture.Packet) {
			mu.Lock()
			got = append(got, seen{p.Src, p.Proto, p.DstPort, p.TCPFlags, string(p.Payload)})
			mu.Unlock()
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("capture: %v", err)
		}
		a.Close()
	})
	return func(wait time.Duration) []seen {
		time.Sleep(wait)
		mu.Lock()
		defer mu.Unlock()
		g := got
		got = nil
		return g
	}
}

func TestIntegrationSend(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	b := netnstest.NewT(t)
	// 7001 is dropped, so a SYN there is never answered: any retransmission would show.
	cmd := netnsbed.Command(context.Background(), b.Server, "nft", "-f", "-")
	cmd.Stdin = bytes.NewBufferString("table inet kc {\nchain in {\ntype filter hook input priority 0;\ntcp dport 7001 drop\n}\n}\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	take := serverCapture(t, b)
	hits := []netport.Port{tcp(7000), tcp(7001), udp(9000), icmpHit}

	for _, fam := range []struct {
		name     string
		src, dst netip.Addr
		family   int
	}{
		{"ipv4", netnsbed.Client4, netnsbed.Server4, 4},
		{"ipv6", netnsbed.Client6, netnsbed.Server6, 6},
		{"ipv6 no source", netip.Addr{}, netnsbed.Server6, 0},
	} {
		t.Run(fam.name, func(t *testing.T) {
			var lines []string
			opts := Options{Host: fam.dst.String(), Hits: hits, Family: fam.family, Source: fam.src, Verbose: true}
			err := netnsbed.Do(b.Client, func() error {
				return Send(context.Background(), opts, func(s string) { lines = append(lines, s) })
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(lines) != len(hits) {
				t.Errorf("log lines %q, want %d", lines, len(hits))
			}
			// Wait past the first SYN retransmission timeout (1 s).
			got := take(1500 * time.Millisecond)
			src := fam.src
			if !src.IsValid() {
				src = netnsbed.Client6
			}
			want := []seen{
				{src, netport.TCP, 7000, knock.SYN, ""},
				{src, netport.TCP, 7001, knock.SYN, ""},
				{src, netport.UDP, 9000, 0, "\x00"},
				{src, netport.ICMP, 0, 0, "sesame"},
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("server saw\n%v\nwant\n%v", got, want)
			}
		})
	}

	t.Run("many sources", func(t *testing.T) {
		extra, err := b.AddClientAddrs(context.Background(), 4, true)
		if err != nil {
			t.Fatal(err)
		}
		var want []seen
		err = netnsbed.Do(b.Client, func() error {
			for _, src := range extra {
				dst := netnsbed.Server4
				if src.Is6() {
					dst = netnsbed.Server6
				}
				if err := SendOne(context.Background(), src, dst, tcp(7001)); err != nil {
					return err
				}
				want = append(want, seen{src, netport.TCP, 7001, knock.SYN, ""})
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if got := take(1500 * time.Millisecond); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("server saw\n%v\nwant\n%v", got, want)
		}
	})

	t.Run("unprivileged icmp", func(t *testing.T) {
		out, err := netnsbed.Command(context.Background(), b.Client, "sysctl", "-w", "net.ipv4.ping_group_range=0 2147483647").CombinedOutput()
		if err != nil {
			t.Skipf("cannot allow ping sockets: %v: %s", err, out)
		}
		err = netnsbed.Do(b.Client, func() error {
			if err := sendEcho(netnsbed.Client4, netnsbed.Server4, false, []byte("sesame")); err != nil {
				return err
			}
			return sendEcho(netnsbed.Client6, netnsbed.Server6, false, []byte("sesame"))
		})
		if err != nil {
			t.Fatal(err)
		}
		want := []seen{{netnsbed.Client4, netport.ICMP, 0, 0, "sesame"}, {netnsbed.Client6, netport.ICMP, 0, 0, "sesame"}}
		if got := take(200 * time.Millisecond); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("server saw\n%v\nwant\n%v", got, want)
		}
	})
}

func BenchmarkSendOneUDP(b *testing.B) {
	ctx := context.Background()
	dst := netip.MustParseAddr("127.0.0.1")
	for b.Loop() {
		if err := SendOne(ctx, netip.Addr{}, dst, udp(9)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSendOneTCP(b *testing.B) {
	ctx := context.Background()
	dst := netip.MustParseAddr("127.0.0.1")
	for b.Loop() {
		if err := SendOne(ctx, netip.Addr{}, dst, tcp(9)); err != nil {
			b.Fatal(err)
		}
	}
}
