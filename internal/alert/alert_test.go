package alert

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestWebhookSignedOncePerInterval(t *testing.T) {
	secret := []byte("s3cret-key")
	bodies := make(chan []byte, 10)
	var fails int
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		if fails < 2 { // the first two deliveries fail: retries must carry it
			fails++
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		if !Verify(secret, b, r.Header.Get(SignatureHeader)) {
			t.Errorf("bad signature %q", r.Header.Get(SignatureHeader))
		}
		bodies <- b
	}))
	defer srv.Close()
	var logs bytes.Buffer
	clk := &clock{t: time.Unix(1000, 0)}
	a := New(Options{URL: srv.URL, Secret: secret, Interval: time.Minute, Backoff: time.Millisecond,
		Now: clk.Now, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go a.Run(ctx)
	src := netip.MustParseAddr("198.18.0.2")
	if !a.Alert(Event{Kind: "decoy_connect", Src: src, Port: "tcp/2323", Banned: true, Data: []byte("root\r\n")}) {
		t.Fatal("first alert not taken")
	}
	if a.Alert(Event{Kind: "decoy_connect", Src: src, Port: "tcp/2323"}) {
		t.Fatal("second alert within the interval taken")
	}
	var got Event
	select {
	case b := <-bodies:
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("no webhook")
	}
	if got.Src != src || string(got.Data) != "root\r\n" || !got.Banned || got.Port != "tcp/2323" {
		t.Fatalf("webhook = %+v", got)
	}
	clk.Add(time.Minute)
	if !a.Alert(Event{Kind: "decoy_touch", Src: src}) {
		t.Fatal("alert after the interval not taken")
	}
	select {
	case <-bodies:
	case <-ctx.Done():
		t.Fatal("no second webhook")
	}
	if n := strings.Count(logs.String(), "msg=alert "); n != 2 {
		t.Errorf("%d alert lines, want 2:\n%s", n, logs.String())
	}
	if strings.Contains(logs.String(), string(secret)) {
		t.Error("secret in the log")
	}
	if s := a.Stats(); s.Suppressed != 1 {
		t.Errorf("stats = %+v", s)
	}
}

func TestQueueOverflowCounted(t *testing.T) {
	var logs bytes.Buffer
	a := New(Options{URL: "http://127.0.0.1:1/", Queue: 2, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	for i := range 5 { // no Run: the queue fills
		a.Alert(Event{Kind: "scan", Src: netip.AddrFrom4([4]byte{198, 18, 1, byte(i)})})
	}
	if s := a.Stats(); s.Dropped != 3 {
		t.Fatalf("dropped = %d, want 3", s.Dropped)
	}
	if !strings.Contains(logs.String(), "queue full") {
		t.Error("overflow not logged")
	}
}

func TestVerify(t *testing.T) {
	for _, tc := range []struct {
		name   string
		secret string
		body   string
		sig    string
		want   bool
	}{
		{"good", "k", "{}", Sign([]byte("k"), []byte("{}")), true},
		{"other key", "k2", "{}", Sign([]byte("k"), []byte("{}")), false},
		{"other body", "k", "{ }", Sign([]byte("k"), []byte("{}")), false},
		{"empty", "k", "{}", "", false},
	} {
		if got := Verify([]byte(tc.secret), []byte(tc.body), tc.sig); got != tc.want {
			t.Errorf("%s: Verify = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestConfigure: a running Alerter reconfigured (a reload) sends the next webhook to the new
// URL signed with the new secret, applies the new interval, and keeps its counters.
func TestConfigure(t *testing.T) {
	type hit struct {
		to   string
		body []byte
		sig  string
	}
	hits := make(chan hit, 10)
	hook := func(name string) *httptest.Server {
		return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			hits <- hit{name, b, r.Header.Get(SignatureHeader)}
		}))
	}
	one, two := hook("one"), hook("two")
	defer one.Close()
	defer two.Close()
	clk := &clock{t: time.Unix(1000, 0)}
	a := New(Options{URL: one.URL, Secret: []byte("first-secret"), Interval: time.Hour, Now: clk.Now})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go a.Run(ctx)
	src := netip.MustParseAddr("198.18.0.2")
	recv := func() hit {
		t.Helper()
		select {
		case h := <-hits:
			return h
		case <-ctx.Done():
			t.Fatal("no webhook")
		}
		return hit{}
	}
	a.Alert(Event{Kind: "scan", Src: src})
	if h := recv(); h.to != "one" || !Verify([]byte("first-secret"), h.body, h.sig) {
		t.Fatalf("first webhook to %s, signature ok %v", h.to, Verify([]byte("first-secret"), h.body, h.sig))
	}
	a.Configure(two.URL, []byte("second-secret"), time.Minute)
	clk.Add(time.Minute) // within the old hour, past the new minute
	if !a.Alert(Event{Kind: "scan", Src: src}) {
		t.Fatal("the new interval was not applied")
	}
	if h := recv(); h.to != "two" || !Verify([]byte("second-secret"), h.body, h.sig) {
		t.Fatalf("second webhook to %s, signature ok %v", h.to, Verify([]byte("second-secret"), h.body, h.sig))
	}
	a.Configure("", nil, time.Minute)
	clk.Add(time.Minute)
	if !a.Alert(Event{Kind: "scan", Src: src}) {
		t.Fatal("alert without a webhook not logged")
	}
	select {
	case h := <-hits:
		t.Fatalf("webhook to %s after the URL was removed", h.to)
	case <-time.After(200 * time.Millisecond):
	}
	if s := a.Stats(); s.Sent != 2 {
		t.Errorf("stats %+v, want 2 sent", s)
	}
}

// TestConfigureQueued: a webhook queued before Configure goes to the new URL with the new
// secret.
func TestConfigureQueued(t *testing.T) {
	got := make(chan bool, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- Verify([]byte("second-secret"), b, r.Header.Get(SignatureHeader))
	}))
	defer srv.Close()
	a := New(Options{URL: "http://127.0.0.1:1/old", Secret: []byte("first-secret")})
	a.Alert(Event{Kind: "scan", Src: netip.MustParseAddr("198.18.0.2")}) // no Run yet: queued
	a.Configure(srv.URL, []byte("second-secret"), 0)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go a.Run(ctx)
	select {
	case ok := <-got:
		if !ok {
			t.Fatal("the queued webhook was not signed with the new secret")
		}
	case <-ctx.Done():
		t.Fatal("the queued webhook did not reach the new URL")
	}
}
