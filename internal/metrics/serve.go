package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Config is the [metrics] section: where the HTTP exporter listens. The zero value is off.
type Config struct {
	// Listen is host:port, e.g. "127.0.0.1:9741"; empty turns the listener off (the control
	// socket still serves /metrics).
	Listen string `toml:"listen"`
	// AllowRemote permits a listen address that is not loopback. Metrics name doors and clients
	// and show knock and grant rates, so without it such an address is refused.
	AllowRemote bool `toml:"allow_remote"`
}

// Server timeouts and limits; a scrape is one small GET.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 60 * time.Second
	shutdownTimeout   = 5 * time.Second
	maxHeaderBytes    = 8 << 10
	scrapeTimeout     = 10 * time.Second
	maxInFlight       = 4
)

// NewHandler returns the exposition handler: a private registry holding the server's
// Collector and the Go runtime and process collectors, served as Prometheus text. It answers
// GET and HEAD only.
func NewHandler(opts Options) (http.Handler, error) {
	c, err := NewCollector(opts)
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewPedanticRegistry()
	for _, col := range []prometheus.Collector{
		c,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(col); err != nil {
			return nil, fmt.Errorf("metrics: register: %w", err)
		}
	}
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: maxInFlight,
		Timeout:             scrapeTimeout,
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		h.ServeHTTP(w, r)
	}), nil
}

// ErrNotLoopback is returned for a non-loopback listen address without AllowRemote.
var ErrNotLoopback = errors.New("not a loopback address (metrics name doors and clients; set allow_remote = true to listen here)")

// Check validates cfg without binding anything.
func (cfg Config) Check() error {
	if cfg.Listen == "" {
		return nil
	}
	host, _, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return fmt.Errorf("metrics: listen %q: %w", cfg.Listen, err)
	}
	if !cfg.AllowRemote && !isLoopback(host) {
		return fmt.Errorf("metrics: listen %q: %w", cfg.Listen, ErrNotLoopback)
	}
	return nil
}

// isLoopback reports whether host is a loopback IP literal or "localhost". An empty host (all
// addresses) and other names are not.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// Listen checks cfg and binds its address. It warns on log when AllowRemote lets a
// non-loopback address through.
func Listen(cfg Config, log *slog.Logger) (net.Listener, error) {
	if cfg.Listen == "" {
		return nil, errors.New("metrics: listen: no address")
	}
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("metrics: listen %s: address already in use (another sesame or exporter?): %w", cfg.Listen, err)
	}
	if err != nil {
		return nil, fmt.Errorf("metrics: listen %s: %w", cfg.Listen, err)
	}
	host, _, _ := net.SplitHostPort(cfg.Listen)
	if log != nil && !isLoopback(host) {
		log.Warn("metrics listening on a non-loopback address: door and client names and rates are visible to whoever can reach it",
			"addr", ln.Addr().String())
	}
	return ln, nil
}

// Serve listens on cfg.Listen and serves h at /metrics until ctx ends; then it shuts down and
// returns nil. With an empty cfg.Listen (off) it returns nil at once.
func Serve(ctx context.Context, cfg Config, h http.Handler, log *slog.Logger) error {
	if cfg.Listen == "" {
		return nil
	}
	ln, err := Listen(cfg, log)
	if err != nil {
		return err
	}
	return ServeListener(ctx, ln, h, log)
}

// ServeListener serves h at /metrics on ln until ctx ends, then shuts down and returns nil.
// It closes ln.
func ServeListener(ctx context.Context, ln net.Listener, h http.Handler, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", h)
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	log.Info("metrics listening", "addr", ln.Addr().String(), "path", "/metrics")
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return fmt.Errorf("metrics: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics: serve: %w", err)
	}
	return nil
}
