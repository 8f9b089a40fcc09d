package netnsbed_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/netnsbed"
	"github.com/sesame-knock/sesame/internal/netnsbed/netnstest"
)

func TestIntegrationBedConnects(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	b := netnstest.NewT(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, srv := range []netip.Addr{netnsbed.Server4, netnsbed.Server6} {
		dst := netip.AddrPortFrom(srv, 2222)
		if ok, err := netnsbed.CanConnect(b.Client, netip.Addr{}, dst, time.Second); err != nil || ok {
			t.Fatalf("before listening: connect %s = %v, %v; want refused", dst, ok, err)
		}
		if _, err := netnsbed.Listen(ctx, b.Server, dst); err != nil {
			t.Fatal(err)
		}
		if ok, err := netnsbed.CanConnect(b.Client, netip.Addr{}, dst, time.Second); err != nil || !ok {
			t.Fatalf("connect %s = %v, %v; want success", dst, ok, err)
		}
	}
	extra, err := b.AddClientAddrs(ctx, 3, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(extra) != 6 {
		t.Fatalf("got %d extra addresses, want 6", len(extra))
	}
	for _, src := range extra {
		dst := netip.AddrPortFrom(netnsbed.Server4, 2222)
		if src.Is6() {
			dst = netip.AddrPortFrom(netnsbed.Server6, 2222)
		}
		// A fresh IPv6 source sometimes needs the kernel's one-second retransmission (about
		// 1 run in 10 took 1.0-1.1 s): the timeout leaves room for it.
		if ok, err := netnsbed.CanConnect(b.Client, src, dst, 3*time.Second); err != nil || !ok {
			t.Fatalf("connect from %s = %v, %v", src, ok, err)
		}
	}
}

// TestIntegrationProbeNeedsDataBothWays: a path on which connect() succeeds but the handshake's
// last ACK, the client's data or the service's data is dropped is not open, and neither is a
// service that greets without echoing. (A connect-only probe says "open" in every case.)
func TestIntegrationProbeNeedsDataBothWays(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	b := netnstest.NewT(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, srv := range []netip.Addr{netnsbed.Server4, netnsbed.Server6} {
		if _, err := netnsbed.Listen(ctx, b.Server, netip.AddrPortFrom(srv, 2222)); err != nil {
			t.Fatal(err)
		}
		// A service that greets and closes without reading: the client's data never reaches it.
		if err := rawListen(ctx, b.Server, netip.AddrPortFrom(srv, 2223), netnsbed.Greeting); err != nil {
			t.Fatal(err)
		}
		// Not a Listen service at all.
		if err := rawListen(ctx, b.Server, netip.AddrPortFrom(srv, 2224), "hello\n"); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name    string
		port    uint16
		rule    string // nft rule in the server namespace; chain in or out
		open    bool
		wrong   bool // CanConnect returns an ErrWrongLine error
		connect bool // connect() itself succeeds
	}{
		{name: "clear path", port: 2222, open: true, connect: true},
		{name: "final ACK and client data dropped", port: 2222, rule: "add rule inet probe in tcp dport 2222 tcp flags & (syn | ack) != syn drop", connect: true},
		{name: "client data dropped", port: 2222, rule: "add rule inet probe in tcp dport 2222 tcp flags & psh == psh drop", connect: true},
		{name: "service data dropped", port: 2222, rule: "add rule inet probe out tcp sport 2222 tcp flags & psh == psh drop", connect: true},
		{name: "greeting without echo", port: 2223, connect: true},
		{name: "not a Listen service", port: 2224, wrong: true, connect: true},
		{name: "handshake dropped", port: 2222, rule: "add rule inet probe in tcp dport 2222 drop"},
	}
	for _, tt := range tests {
		for _, srv := range []netip.Addr{netnsbed.Server4, netnsbed.Server6} {
			t.Run(tt.name+"/"+srv.String(), func(t *testing.T) {
				if tt.rule != "" {
					nft(t, b.Server, "add table inet probe\n"+
						"add chain inet probe in { type filter hook input priority 0; }\n"+
						"add chain inet probe out { type filter hook output priority 0; }\n"+tt.rule+"\n")
					t.Cleanup(func() { nft(t, b.Server, "delete table inet probe\n") })
				}
				dst := netip.AddrPortFrom(srv, tt.port)
				c, err := netnsbed.Dial(b.Client, netip.Addr{}, dst, 300*time.Millisecond)
				if err == nil {
					c.Close()
				}
				if (err == nil) != tt.connect {
					t.Fatalf("connect() %s: %v, want success %v", dst, err, tt.connect)
				}
				ok, err := netnsbed.CanConnect(b.Client, netip.Addr{}, dst, 500*time.Millisecond)
				if tt.wrong {
					if !errors.Is(err, netnsbed.ErrWrongLine) {
						t.Fatalf("CanConnect %s = %v, %v; want an ErrWrongLine error", dst, ok, err)
					}
					return
				}
				if err != nil || ok != tt.open {
					t.Fatalf("CanConnect %s = %v, %v; want %v", dst, ok, err, tt.open)
				}
			})
		}
	}
}

// TestIntegrationListenEchoes: after Exchange a connection stays usable, and each line is
// echoed as sent.
func TestIntegrationListenEchoes(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	b := netnstest.NewT(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dst := netip.AddrPortFrom(netnsbed.Server4, 2222)
	if _, err := netnsbed.Listen(ctx, b.Server, dst); err != nil {
		t.Fatal(err)
	}
	c, err := netnsbed.Dial(b.Client, netip.Addr{}, dst, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := netnsbed.Exchange(c, time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(time.Second))
	for _, line := range []string{"one\n", "two\n"} {
		if _, err := io.WriteString(c, line); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len(line))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != line {
			t.Fatalf("echo of %q: %q, %v", line, buf, err)
		}
	}
}

// TestIntegrationHeldSessionNeedsDataBothWays: Echo on a held Session succeeds again and again
// on a clear path, and fails (as no answer) once the client's or the service's later data is
// dropped, although the connection stays established.
func TestIntegrationHeldSessionNeedsDataBothWays(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	b := netnstest.NewT(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, srv := range []netip.Addr{netnsbed.Server4, netnsbed.Server6} {
		if _, err := netnsbed.Listen(ctx, b.Server, netip.AddrPortFrom(srv, 2222)); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name string
		rule string // nft rule in the server namespace, added after the session is open
		ok   bool
	}{
		{name: "clear path", ok: true},
		{name: "later client data dropped", rule: "add rule inet probe in tcp dport 2222 tcp flags & psh == psh drop"},
		{name: "later service data dropped", rule: "add rule inet probe out tcp sport 2222 tcp flags & psh == psh drop"},
	}
	for _, tt := range tests {
		for _, srv := range []netip.Addr{netnsbed.Server4, netnsbed.Server6} {
			t.Run(tt.name+"/"+srv.String(), func(t *testing.T) {
				dst := netip.AddrPortFrom(srv, 2222)
				s, err := netnsbed.Open(b.Client, netip.Addr{}, dst, time.Second)
				if err != nil {
					t.Fatalf("netnsbed.Open %s: %v", dst, err)
				}
				defer s.Close()
				if err := s.Echo(time.Now().Add(time.Second)); err != nil {
					t.Fatalf("first Echo: %v", err)
				}
				if tt.rule != "" {
					nft(t, b.Server, "add table inet probe\n"+
						"add chain inet probe in { type filter hook input priority 0; }\n"+
						"add chain inet probe out { type filter hook output priority 0; }\n"+tt.rule+"\n")
					t.Cleanup(func() { nft(t, b.Server, "delete table inet probe\n") })
				}
				for i := range 3 {
					err := s.Echo(time.Now().Add(500 * time.Millisecond))
					if tt.ok && err != nil {
						t.Fatalf("Echo %d on the held session: %v", i, err)
					}
					if !tt.ok {
						if err == nil || !netnsbed.NoAnswer(err) {
							t.Fatalf("Echo on the held session with %q = %v, want a no-answer error", tt.rule, err)
						}
						return
					}
				}
			})
		}
	}
}

// rawListen serves greeting and then closes every connection, until ctx ends.
func rawListen(ctx context.Context, ns string, addr netip.AddrPort, greeting string) error {
	var ln net.Listener
	if err := netnsbed.Do(ns, func() (err error) { ln, err = net.Listen("tcp", addr.String()); return }); err != nil {
		return err
	}
	go func() { <-ctx.Done(); ln.Close() }()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, greeting)
			c.Close()
		}
	}()
	return nil
}

func nft(t *testing.T, ns, script string) {
	t.Helper()
	cmd := netnsbed.Command(context.Background(), ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s\n%s", err, out, script)
	}
}
