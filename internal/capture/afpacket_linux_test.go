package capture

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/sesame-knock/sesame/internal/knock"
	"github.com/sesame-knock/sesame/internal/netnsbed"
	"github.com/sesame-knock/sesame/internal/netnsbed/netnstest"
	"github.com/sesame-knock/sesame/internal/netport"
)

// collector runs a capture and keeps copies of what it hands over.
type collector struct {
	mu      sync.Mutex
	pkts    []Packet
	lateMax time.Duration
	done    chan error
	cancel  context.CancelFunc
}

func startCollector(t *testing.T, a *AFPacket) *collector {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := &collector{done: make(chan error, 1), cancel: cancel}
	go func() {
		c.done <- a.Run(ctx, func(p *Packet) {
			late := time.Since(p.Time)
			cp := *p
			cp.Payload = bytes.Clone(p.Payload)
			c.mu.Lock()
			c.pkts = append(c.pkts, cp)
			c.lateMax = max(c.lateMax, late)
			c.mu.Unlock()
		})
	}()
	t.Cleanup(func() { c.stop(t) })
	return c
}

// take returns and forgets the packets collected so far, after waiting for stragglers.
func (c *collector) take(wait time.Duration) []Packet {
	time.Sleep(wait)
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.pkts
	c.pkts = nil
	return p
}

func (c *collector) stop(t *testing.T) {
	if c.cancel == nil {
		return
	}
	c.cancel()
	c.cancel = nil
	select {
	case err := <-c.done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Errorf("Run did not return after cancellation")
	}
}

// send performs one probe from the client namespace.
type probe struct {
	proto   netport.Proto
	port    uint16
	payload int
}

func sendProbes(t *testing.T, b *netnsbed.Bed, src, dst netip.Addr, probes []probe) {
	t.Helper()
	err := netnsbed.Do(b.Client, func() error {
		for _, p := range probes {
			switch p.proto {
			case netport.TCP:
				// A closed or dropped port: a short timeout means exactly one SYN.
				d := net.Dialer{Timeout: 300 * time.Millisecond, LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
				if c, err := d.Dial("tcp", netip.AddrPortFrom(dst, p.port).String()); err == nil {
					c.Close()
				}
			case netport.UDP:
				c, err := net.DialUDP("udp", &net.UDPAddr{IP: src.AsSlice()}, net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, p.port)))
				if err != nil {
					return err
				}
				_, err = c.Write(bytes.Repeat([]byte{'s'}, p.payload))
				c.Close()
				if err != nil {
					return err
				}
			case netport.ICMP:
				network, typ := "ip4:icmp", icmp.Type(ipv4.ICMPTypeEcho)
				if dst.Is6() {
					network, typ = "ip6:ipv6-icmp", ipv6.ICMPTypeEchoRequest
				}
				c, err := icmp.ListenPacket(network, src.String())
				if err != nil {
					return err
				}
				m, _ := (&icmp.Message{Type: typ, Body: &icmp.Echo{ID: 7, Seq: 1, Data: []byte("ping")}}).Marshal(nil)
				_, err = c.WriteTo(m, &net.IPAddr{IP: dst.AsSlice()})
				c.Close()
				if err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("send: %v", err)
	}
}

func nft(t *testing.T, ns string, script string) {
	t.Helper()
	cmd := netnsbed.Command(context.Background(), ns, "nft", "-f", "-")
	cmd.Stdin = bytes.NewBufferString(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
}

func TestIntegrationAFPacket(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	b := netnstest.NewT(t)
	filter := Filter{
		Knocks: []Knock{
			{Port: netport.Port{Proto: netport.TCP, Num: 7000}, Flags: knock.TCPFlags{Set: knock.SYN, Clear: knock.ACK}},
			{Port: netport.Port{Proto: netport.UDP, Num: 9000}},
			{Port: netport.Port{Proto: netport.ICMP}},
		},
		SPA: []uint16{62201},
	}
	var ifindex int
	if err := netnsbed.Do(b.Server, func() error {
		ifi, err := net.InterfaceByName(b.ServerIf)
		if err == nil {
			ifindex = ifi.Index
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}

	probes := []probe{
		{netport.TCP, 7000, 0}, {netport.TCP, 7001, 0},
		{netport.UDP, 9000, 1}, {netport.UDP, 9001, 1},
		{netport.UDP, 62201, 1200},
		{netport.ICMP, 0, 0},
	}
	type want struct {
		proto   netport.Proto
		port    uint16
		payload int
	}
	wants := []want{{netport.TCP, 7000, 0}, {netport.UDP, 9000, 1}, {netport.UDP, 62201, 1200}, {netport.ICMP, 0, 4}}

	check := func(t *testing.T, got []Packet, src, dst netip.Addr) {
		t.Helper()
		if len(got) != len(wants) {
			for _, p := range got {
				t.Logf("got %v %v:%d -> %v:%d flags %#x len %d", p.Proto, p.Src, p.SrcPort, p.Dst, p.DstPort, p.TCPFlags, len(p.Payload))
			}
			t.Fatalf("got %d packets, want %d", len(got), len(wants))
		}
		for i, w := range wants {
			p := got[i]
			if p.Proto != w.proto || p.DstPort != w.port || len(p.Payload) != w.payload || p.Src != src || p.Dst != dst || p.Ifindex != ifindex {
				t.Errorf("packet %d = %v %v:%d -> %v:%d if %d len %d; want %v to %v:%d len %d if %d",
					i, p.Proto, p.Src, p.SrcPort, p.Dst, p.DstPort, p.Ifindex, len(p.Payload), w.proto, dst, w.port, w.payload, ifindex)
			}
			if p.Proto == netport.TCP && p.TCPFlags != knock.SYN {
				t.Errorf("packet %d: TCP flags %#x, want SYN", i, p.TCPFlags)
			}
			if d := time.Since(p.Time); d < 0 || d > 10*time.Second {
				t.Errorf("packet %d: timestamp %v is off", i, p.Time)
			}
		}
	}

	for _, tc := range []struct {
		name       string
		interfaces []string
	}{{"named interface", []string{b.ServerIf}}, {"all interfaces", nil}} {
		t.Run(tc.name, func(t *testing.T) {
			var a *AFPacket
			if err := netnsbed.Do(b.Server, func() (err error) {
				a, err = Open(Config{Interfaces: tc.interfaces, Filter: filter})
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			c := startCollector(t, a)
			for _, fam := range []struct {
				name     string
				src, dst netip.Addr
			}{{"ipv4", netnsbed.Client4, netnsbed.Server4}, {"ipv6", netnsbed.Client6, netnsbed.Server6}} {
				t.Run(fam.name, func(t *testing.T) {
					sendProbes(t, b, fam.src, fam.dst, probes)
					check(t, c.take(200*time.Millisecond), fam.src, fam.dst)
				})
			}
			st := a.Stats()
			if st.Received != uint64(2*len(wants)) || st.DecodeErrors != 0 || st.KernelDrops != 0 {
				t.Errorf("Stats = %+v, want %d received and no errors", st, 2*len(wants))
			}
			c.mu.Lock()
			t.Logf("largest delay from kernel timestamp to handler: %v", c.lateMax)
			c.mu.Unlock()
		})
	}

	t.Run("dropped by the firewall", func(t *testing.T) {
		nft(t, b.Server, `
table inet sesametest {
	chain in {
		type filter hook input priority -300; policy accept;
		tcp dport 7000 drop
		udp dport { 9000, 62201 } drop
		icmp type echo-request drop
		icmpv6 type echo-request drop
	}
}
table netdev sesametest {
	chain ingress {
		type filter hook ingress device "`+b.ServerIf+`" priority -500; policy accept;
		tcp dport 7000 counter drop
	}
}`)
		var a *AFPacket
		if err := netnsbed.Do(b.Server, func() (err error) {
			a, err = Open(Config{Interfaces: []string{b.ServerIf}, Filter: filter})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		c := startCollector(t, a)
		sendProbes(t, b, netnsbed.Client4, netnsbed.Server4, probes)
		check(t, c.take(200*time.Millisecond), netnsbed.Client4, netnsbed.Server4)
		sendProbes(t, b, netnsbed.Client6, netnsbed.Server6, probes)
		check(t, c.take(200*time.Millisecond), netnsbed.Client6, netnsbed.Server6)
	})

	t.Run("set filter", func(t *testing.T) {
		var a *AFPacket
		if err := netnsbed.Do(b.Server, func() (err error) {
			a, err = Open(Config{Interfaces: []string{b.ServerIf}, Filter: filter})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		c := startCollector(t, a)
		if err := a.SetFilter(Filter{Guards: []PortRange{{netport.UDP, 9001, 9001}}}); err != nil {
			t.Fatal(err)
		}
		sendProbes(t, b, netnsbed.Client4, netnsbed.Server4, []probe{{netport.UDP, 9000, 1}, {netport.UDP, 9001, 1}})
		got := c.take(200 * time.Millisecond)
		if len(got) != 1 || got[0].DstPort != 9001 {
			t.Fatalf("after SetFilter got %d packets (%v), want one to 9001", len(got), got)
		}
	})
}

func TestIntegrationInterfaces(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	b := netnstest.NewT(t)
	filter := Filter{Knocks: []Knock{{Port: netport.Port{Proto: netport.UDP, Num: 9000}}}}
	open := func(names ...string) (*AFPacket, error) {
		var a *AFPacket
		err := netnsbed.Do(b.Server, func() (err error) {
			a, err = Open(Config{Interfaces: names, Filter: filter})
			return err
		})
		return a, err
	}
	if _, err := open(b.ServerIf, "nosuch0"); err == nil || !bytes.Contains([]byte(err.Error()), []byte("nosuch0")) {
		t.Fatalf("Open with an unknown interface: err = %v, want an error naming it", err)
	}

	// An interface that is down is not fatal, and its packets arrive once it is up.
	ip := func(args ...string) {
		t.Helper()
		if out, err := netnsbed.Command(context.Background(), b.Server, "ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	ip("link", "set", b.ServerIf, "down")
	a, err := open(b.ServerIf)
	if err != nil {
		t.Fatalf("Open on a down interface: %v", err)
	}
	defer a.Close()
	c := startCollector(t, a)
	ip("link", "set", b.ServerIf, "up")
	var got []Packet
	for deadline := time.Now().Add(5 * time.Second); len(got) == 0 && time.Now().Before(deadline); {
		sendProbes(t, b, netnsbed.Client4, netnsbed.Server4, []probe{{netport.UDP, 9000, 1}})
		got = c.take(100 * time.Millisecond)
	}
	if len(got) == 0 {
		t.Fatal("no packet after the interface came up")
	}

	// Run stops promptly on Close, and a closed capture refuses to run.
	done := make(chan struct{})
	go func() {
		c.stop(t)
		close(done)
	}()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	<-done
	if err := a.Run(context.Background(), func(*Packet) {}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Run after Close: %v, want net.ErrClosed", err)
	}
}

func TestRunAlreadyRunning(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	b := netnstest.NewT(t)
	var a *AFPacket
	if err := netnsbed.Do(b.Server, func() (err error) {
		a, err = Open(Config{Filter: Filter{SPA: []uint16{1}}})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	startCollector(t, a)
	time.Sleep(50 * time.Millisecond)
	if err := a.Run(context.Background(), func(*Packet) {}); err == nil {
		t.Fatal("second Run did not fail")
	}
}
