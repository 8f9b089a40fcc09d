package benchkit

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/netnsbed"

	"github.com/sesame-knock/sesame/internal/netnsbed/netnstest"
)

// TestIntegrationProbesNeedDataBothWays: ProbeConnect, MassConnect and ConnectLoop count a
// connection only when the greeting and the echo got through; connect() alone is not enough.
func TestIntegrationProbesNeedDataBothWays(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	bed := netnstest.NewT(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	svc := netip.AddrPortFrom(netnsbed.Server4, 2222)
	if _, err := netnsbed.Listen(ctx, bed.Server, svc); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		rule string // nft rule in the server namespace's chain in or out
		open bool
	}{
		{name: "clear path", open: true},
		{name: "final ACK and client data dropped", rule: "add rule inet probe in tcp dport 2222 tcp flags & (syn | ack) != syn drop"},
		{name: "client data dropped", rule: "add rule inet probe in tcp dport 2222 tcp flags & psh == psh drop"},
		{name: "service data dropped", rule: "add rule inet probe out tcp sport 2222 tcp flags & psh == psh drop"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.rule != "" {
				nft(t, bed.Server, "add table inet probe\n"+
					"add chain inet probe in { type filter hook input priority 0; }\n"+
					"add chain inet probe out { type filter hook output priority 0; }\n"+tt.rule+"\n")
				t.Cleanup(func() { nft(t, bed.Server, "delete table inet probe\n") })
			}
			// connect() itself succeeds in every case.
			c, err := netnsbed.Dial(bed.Client, netip.Addr{}, svc, 300*time.Millisecond)
			if err != nil {
				t.Fatalf("connect(): %v", err)
			}
			c.Close()
			var lat time.Duration
			var probeErr error
			var mass []bool
			var loop []time.Duration
			var failed int
			err = netnsbed.Do(bed.Client, func() error {
				lat, probeErr = ProbeConnect(netnsbed.Client4, svc, time.Now(), 300*time.Millisecond)
				var err error
				if mass, err = MassConnect([]netip.Addr{netnsbed.Client4}, svc, 300*time.Millisecond); err != nil {
					return err
				}
				loop, failed, err = ConnectLoop(netnsbed.Client4, svc, 200*time.Millisecond, 3)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			if tt.open && (probeErr != nil || lat <= 0) || !tt.open && (probeErr == nil || !strings.Contains(probeErr.Error(), "no greeting and echo")) {
				t.Errorf("ProbeConnect: latency %v, %v; want open %v", lat, probeErr, tt.open)
			}
			if mass[0] != tt.open {
				t.Errorf("MassConnect: %v, want %v", mass[0], tt.open)
			}
			if tt.open && (len(loop) != 3 || failed != 0) || !tt.open && len(loop) != 0 {
				t.Errorf("ConnectLoop: %d done, %d failed; want open %v", len(loop), failed, tt.open)
			}
		})
	}
}

// TestIntegrationProbeWrongService: a peer that is not a netnsbed.Listen service is an error,
// not an open port.
func TestIntegrationProbeWrongService(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	bed := netnstest.NewT(t)
	svc := netip.AddrPortFrom(netnsbed.Server4, 2223)
	var ln net.Listener
	if err := netnsbed.Do(bed.Server, func() (err error) { ln, err = net.Listen("tcp", svc.String()); return }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hello\n"))
			c.Close()
		}
	}()
	err := netnsbed.Do(bed.Client, func() error {
		_, err := ProbeConnect(netnsbed.Client4, svc, time.Now(), time.Second)
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "not a netnsbed service") {
		t.Fatalf("ProbeConnect to a wrong service: %v, want a wrong-answer error", err)
	}
}

func nft(t *testing.T, ns, script string) {
	t.Helper()
	cmd := netnsbed.Command(context.Background(), ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s\n%s", err, out, script)
	}
}
