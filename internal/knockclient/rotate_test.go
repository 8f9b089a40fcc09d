package knockclient

import (
	"context"
	"crypto/rand"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/netport"
	"github.com/sesame-knock/sesame/internal/rotate"
	"github.com/sesame-knock/sesame/internal/spa"
)

func TestParseRotating(t *testing.T) {
	def := rotate.Params{Door: "ssh", Period: 30 * time.Second, Lo: 10000, Hi: 60000, Length: 4, Uses: 3, Proto: netport.TCP}
	tests := []struct {
		name    string
		args    string
		want    *Rotating
		wantErr string
	}{
		{name: "defaults", args: "h --door ssh --secret-file k", want: &Rotating{Params: def, SecretFile: "k"}},
		{name: "every option", args: "-u h --door=vpn --secret-file=k --rotate 5s --rotate-ports 20000-20999 --rotate-length 6 --rotate-uses 2 --state-file s",
			want: &Rotating{Params: rotate.Params{Door: "vpn", Period: 5 * time.Second, Lo: 20000, Hi: 20999, Length: 6, Uses: 2, Proto: netport.UDP}, SecretFile: "k", StateFile: "s"}},
		{name: "seconds", args: "h --door ssh --secret-file k --rotate 60", want: &Rotating{Params: func() rotate.Params { p := def; p.Period = time.Minute; return p }(), SecretFile: "k"}},
		{name: "ports given", args: "h 7000 --door ssh --secret-file k", wantErr: "give HOST alone"},
		{name: "no secret file", args: "h --door ssh", wantErr: "needs --secret-file"},
		{name: "no door", args: "h --secret-file k", wantErr: "needs --door"},
		{name: "bad period", args: "h --door ssh --secret-file k --rotate 1s", wantErr: "period"},
		{name: "bad range", args: "h --door ssh --secret-file k --rotate-ports 5", wantErr: "want LO-HI"},
		{name: "missing value", args: "h --door ssh --secret-file", wantErr: "needs a value"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, err := ParseArgs(strings.Fields(tc.args))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if o.Host != "h" || len(o.Hits) != 0 || !reflect.DeepEqual(o.Rotate, tc.want) {
				t.Fatalf("got host %q hits %v rotate %+v, want %+v", o.Host, o.Hits, o.Rotate, tc.want)
			}
		})
	}
}

// TestNext: counter 0 in a fresh window, the next counter in the same window, the next window
// (and how long to wait for it) when the window's counters are used, never a counter again
// when the clock went back.
func TestNext(t *testing.T) {
	p := rotate.Params{Door: "d", Period: 30 * time.Second, Lo: 10000, Hi: 60000, Length: 4, Uses: 3, Proto: netport.TCP}
	at := func(s int64) time.Time { return time.Unix(s, 0) }
	tests := []struct {
		name string
		now  int64
		lw   int64
		lc   int
		w    int64
		c    int
		wait time.Duration
	}{
		{"no state", 300, -1, 0, 10, 0, 0},
		{"older window", 300, 9, 2, 10, 0, 0},
		{"same window", 305, 10, 0, 10, 1, 0},
		{"last counter", 305, 10, 1, 10, 2, 0},
		{"window used up", 305, 10, 2, 11, 0, 25 * time.Second},
		{"clock went back", 299, 10, 0, 10, 1, time.Second},
	}
	for _, tc := range tests {
		w, c, wait := Next(p, at(tc.now), tc.lw, tc.lc)
		if w != tc.w || c != tc.c || wait != tc.wait {
			t.Errorf("%s: Next = %d, %d, %v; want %d, %d, %v", tc.name, w, c, wait, tc.w, tc.c, tc.wait)
		}
	}
}

// TestSendRotating: the client sends the derived sequence (UDP to loopback listeners on its
// ports), records the counter, and a second knock in the window sends counter 1's sequence.
func TestSendRotating(t *testing.T) {
	key, err := spa.GenerateSharedKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p := rotate.Params{Door: "vpn", Period: time.Hour, Lo: 40000, Hi: 40999, Length: 3, Uses: 2, Proto: netport.UDP}
	now := time.Unix(1800000000, 0)
	state := filepath.Join(t.TempDir(), "st", "vpn")
	opts := Options{Host: "127.0.0.1", Rotate: &Rotating{Params: p, SecretFile: "unused", StateFile: state}}
	for c := range 2 {
		seq, err := rotate.Sequence(key[:], p, p.Window(now), uint32(c))
		if err != nil {
			t.Fatal(err)
		}
		conns := make([]*net.UDPConn, len(seq))
		for i, port := range seq {
			conns[i], err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(port.Num)})
			if err != nil {
				t.Fatalf("listen on udp/%d: %v", port.Num, err)
			}
			defer conns[i].Close()
		}
		if err := SendRotating(context.Background(), opts, key, func() time.Time { return now }, nil); err != nil {
			t.Fatal(err)
		}
		for i, conn := range conns {
			conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, _, err := conn.ReadFromUDP(make([]byte, 16)); err != nil {
				t.Fatalf("counter %d: no knock on %v: %v", c, seq[i], err)
			}
			conn.Close()
		}
		data, err := os.ReadFile(state)
		if err != nil {
			t.Fatal(err)
		}
		if want := strings.Fields(string(data)); len(want) != 2 || want[1] != string(rune('0'+c)) {
			t.Fatalf("state %q after counter %d", data, c)
		}
		if fi, _ := os.Stat(state); fi.Mode().Perm() != 0o600 {
			t.Errorf("state file mode %v", fi.Mode().Perm())
		}
	}
	// The window's two sequences are used: a third knock would wait an hour; it gives up with ctx.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := SendRotating(ctx, opts, key, func() time.Time { return now }, nil); err == nil {
		t.Fatal("a third knock in a window of two uses did not wait")
	}
}
