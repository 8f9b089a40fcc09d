package metrics

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

func testHandler(t *testing.T) http.Handler {
	t.Helper()
	h, err := NewHandler(Options{
		Snapshot: sample,
		Build:    testBuild,
		Started:  time.Unix(1700000000, 0),
	})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// exposition is the handler's body for one plain GET, as Prometheus text.
func exposition(t *testing.T, h http.Handler) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ln := listenLoopback(t)
	go ServeListener(ctx, ln, h, nil)
	return get(t, "http://"+ln.Addr().String()+"/metrics")
}

func listenLoopback(t *testing.T) net.Listener {
	t.Helper()
	ln, err := Listen(Config{Listen: "127.0.0.1:0"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func get(t *testing.T, url string) []byte {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("GET %s: Content-Type %q, want text/plain", url, ct)
	}
	return body
}

func TestHandlerLint(t *testing.T) {
	// The whole exposition (sesame's metrics plus the Go runtime and process collectors).
	body := exposition(t, testHandler(t))
	problems, err := promlint.New(bytes.NewReader(body)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

func TestPromtoolCheckMetrics(t *testing.T) {
	promtool := lookPromtool(t)
	body := exposition(t, testHandler(t))
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) != 0 {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

func TestServe(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ln := listenLoopback(t)
	addr := ln.Addr().String()
	done := make(chan error, 1)
	go func() { done <- ServeListener(ctx, ln, testHandler(t), slog.New(slog.DiscardHandler)) }()

	body := string(get(t, "http://"+addr+"/metrics"))
	for _, want := range []string{
		`sesame_build_info{firewall="nftables",goversion="go1.26.8",version="v0.9.0"} 1`,
		`sesame_grants_added_total{name="ssh"} 40`,
		`sesame_capture_kernel_drops_total 7`,
		`go_goroutines `,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}

	client := &http.Client{Timeout: 5 * time.Second}
	for _, tc := range []struct {
		method, path string
		status       int
	}{
		{http.MethodPost, "/metrics", http.StatusMethodNotAllowed},
		{http.MethodHead, "/metrics", http.StatusOK},
		{http.MethodGet, "/", http.StatusNotFound},
		{http.MethodGet, "/debug/pprof/", http.StatusNotFound},
	} {
		req, _ := http.NewRequest(tc.method, "http://"+addr+tc.path, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, resp.StatusCode, tc.status)
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("ServeListener after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ServeListener did not stop after cancel")
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("listener still open after ServeListener returned")
	}
}

func TestServeConfig(t *testing.T) {
	h := testHandler(t)
	t.Run("off", func(t *testing.T) {
		if err := Serve(context.Background(), Config{}, h, nil); err != nil {
			t.Fatalf("Serve with no listen address: %v, want nil (off)", err)
		}
	})
	t.Run("address in use", func(t *testing.T) {
		busy := listenLoopback(t)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := Serve(ctx, Config{Listen: busy.Addr().String()}, h, nil)
		if err == nil || !strings.Contains(err.Error(), "address already in use") || !strings.Contains(err.Error(), busy.Addr().String()) {
			t.Fatalf("Serve on a busy address: %v", err)
		}
	})
	t.Run("not loopback", func(t *testing.T) {
		err := Serve(context.Background(), Config{Listen: ":0"}, h, nil)
		if !errors.Is(err, ErrNotLoopback) {
			t.Fatalf("Serve on all addresses: %v, want ErrNotLoopback", err)
		}
	})
}

func TestConfigCheck(t *testing.T) {
	tests := []struct {
		cfg     Config
		wantErr string
	}{
		{Config{}, ""},
		{Config{Listen: "127.0.0.1:9741"}, ""},
		{Config{Listen: "127.0.0.2:9741"}, ""},
		{Config{Listen: "[::1]:9741"}, ""},
		{Config{Listen: "localhost:9741"}, ""},
		{Config{Listen: ":9741"}, "not a loopback address"},
		{Config{Listen: "0.0.0.0:9741"}, "not a loopback address"},
		{Config{Listen: "[::]:9741"}, "not a loopback address"},
		{Config{Listen: "192.0.2.1:9741"}, "not a loopback address"},
		{Config{Listen: "metrics.example.org:9741"}, "not a loopback address"},
		{Config{Listen: "192.0.2.1:9741", AllowRemote: true}, ""},
		{Config{Listen: ":9741", AllowRemote: true}, ""},
		{Config{Listen: "127.0.0.1"}, "missing port"},
	}
	for _, tc := range tests {
		err := tc.cfg.Check()
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%+v: %v", tc.cfg, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%+v: %v, want %q", tc.cfg, err, tc.wantErr)
		}
	}
}

// warnings records the messages of Warn records.
type warnings struct{ msgs []string }

func (w *warnings) Enabled(context.Context, slog.Level) bool { return true }
func (w *warnings) WithAttrs([]slog.Attr) slog.Handler       { return w }
func (w *warnings) WithGroup(string) slog.Handler            { return w }
func (w *warnings) Handle(_ context.Context, r slog.Record) error {
	if r.Level == slog.LevelWarn {
		w.msgs = append(w.msgs, r.Message)
	}
	return nil
}

func TestListenNoWarningOnLoopback(t *testing.T) {
	for _, cfg := range []Config{{Listen: "127.0.0.1:0"}, {Listen: "localhost:0"}, {Listen: "[::1]:0", AllowRemote: true}} {
		w := &warnings{}
		ln, err := Listen(cfg, slog.New(w))
		if errors.Is(err, syscall.EADDRNOTAVAIL) {
			continue // no IPv6 loopback on this host
		}
		if err != nil {
			t.Fatal(err)
		}
		ln.Close()
		if len(w.msgs) != 0 {
			t.Errorf("%+v: warned %q", cfg, w.msgs)
		}
	}
}

func TestIsLoopback(t *testing.T) {
	// Listen warns exactly when an allowed address is not loopback; the test does not bind a
	// non-loopback address, so it checks the decision.
	tests := []struct {
		host string
		want bool
	}{
		{"127.0.0.1", true},
		{"127.1.2.3", true},
		{"::1", true},
		{"localhost", true},
		{"", false},
		{"0.0.0.0", false},
		{"::", false},
		{"192.0.2.1", false},
		{"::ffff:127.0.0.1", true}, // the IPv4 loopback, mapped
		{"localhost.example.org", false},
	}
	for _, tc := range tests {
		if got := isLoopback(tc.host); got != tc.want {
			t.Errorf("isLoopback(%q) = %v, want %v", tc.host, got, tc.want)
		}
	}
}
