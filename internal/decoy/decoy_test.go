package decoy

import (
	"context"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/alert"
	"github.com/sesame-knock/sesame/internal/netport"
)

type recorder struct {
	mu     sync.Mutex
	bans   []netip.Addr
	alerts []alert.Event
	got    chan struct{}
}

func (r *recorder) ban(_ context.Context, src netip.Addr, _ time.Duration, _ string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.bans = append(r.bans, src)
	return nil
}

func (r *recorder) alert(e alert.Event) {
	r.mu.Lock()
	r.alerts = append(r.alerts, e)
	r.mu.Unlock()
	r.got <- struct{}{}
}

func freePort(t *testing.T, network string) uint16 {
	t.Helper()
	if network == "tcp" {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return uint16(l.Addr().(*net.TCPAddr).Port)
	}
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return uint16(c.LocalAddr().(*net.UDPAddr).Port)
}

func TestDecoy(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	for _, tc := range []struct {
		name     string
		never    bool
		banFor   time.Duration
		wantBans int
	}{
		{"bans after a handshake", false, time.Minute, 1},
		{"never_ban", true, time.Minute, 0},
		{"alert only", false, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &recorder{got: make(chan struct{}, 4)}
			tp, up := freePort(t, "tcp"), freePort(t, "udp")
			s := New(Options{
				Decoys: []Decoy{{Ports: []netport.Port{{Proto: netport.TCP, Num: tp}, {Proto: netport.UDP, Num: up}},
					BanFor: tc.banFor, Banner: "Evidence Server ready\r\n"}},
				Host: "127.0.0.1", Ban: r.ban, Alert: r.alert, ReadFor: 500 * time.Millisecond,
				NeverBan: func(a netip.Addr) bool { return tc.never && a == lo },
			})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- s.Run(ctx) }()
			var c net.Conn
			var err error
			for i := 0; i < 50; i++ {
				if c, err = net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(int(tp))); err == nil {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err != nil {
				t.Fatal(err)
			}
			banner := make([]byte, len("Evidence Server ready\r\n"))
			if _, err := io.ReadFull(c, banner); err != nil || string(banner) != "Evidence Server ready\r\n" {
				t.Fatalf("banner %q, %v", banner, err)
			}
			c.Write([]byte("USER root\r\n"))
			c.(*net.TCPConn).CloseWrite()
			<-r.got
			c.Close()
			u, err := net.Dial("udp", "127.0.0.1:"+strconv.Itoa(int(up)))
			if err != nil {
				t.Fatal(err)
			}
			u.Write([]byte("public"))
			u.Close()
			select {
			case <-r.got:
			case <-ctx.Done():
				t.Fatal("no udp alert")
			}
			r.mu.Lock()
			defer r.mu.Unlock()
			if len(r.bans) != tc.wantBans {
				t.Fatalf("bans = %v, want %d (only the TCP visit may ban)", r.bans, tc.wantBans)
			}
			if len(r.alerts) != 2 || string(r.alerts[0].Data) != "USER root\r\n" || r.alerts[0].Banned != (tc.wantBans == 1) ||
				r.alerts[1].Kind != "decoy_touch" || string(r.alerts[1].Data) != "public" || r.alerts[1].Banned {
				t.Fatalf("alerts = %+v", r.alerts)
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		})
	}
}
