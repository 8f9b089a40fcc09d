// Package logfmt builds the daemon's log handler: slog's text or JSON lines, or, under
// systemd, the same lines without a timestamp and with an sd-daemon priority prefix.
package logfmt

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
)

// Formats.
const (
	Text = "text"
	JSON = "json"
)

// Options configure New.
type Options struct {
	Format string // Text or JSON
	Level  slog.Leveler
	// Journal drops each line's own timestamp (journald stamps every entry) and starts it with
	// its priority as sd-daemon(3) says: <3> error, <4> warning, <6> info, <7> debug.
	Journal bool
}

// New returns a handler writing o.Format lines to w.
func New(w io.Writer, o Options) (slog.Handler, error) {
	opts := &slog.HandlerOptions{Level: o.Level}
	var pw *prefixWriter
	if o.Journal {
		pw = &prefixWriter{w: w}
		w = pw
		opts.ReplaceAttr = dropTime
	}
	var h slog.Handler
	switch o.Format {
	case Text:
		h = slog.NewTextHandler(w, opts)
	case JSON:
		h = slog.NewJSONHandler(w, opts)
	default:
		return nil, fmt.Errorf("logfmt: format %q: want %s or %s", o.Format, Text, JSON)
	}
	if pw != nil {
		h = &journalHandler{inner: h, out: pw}
	}
	return h, nil
}

// dropTime removes the top-level time attribute.
func dropTime(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 && a.Key == slog.TimeKey {
		return slog.Attr{}
	}
	return a
}

// Priority is the syslog priority of level: 3 (err) from slog.LevelError up, 4 (warning) from
// slog.LevelWarn, 6 (info) from slog.LevelInfo, 7 (debug) below.
func Priority(level slog.Level) byte {
	switch {
	case level >= slog.LevelError:
		return 3
	case level >= slog.LevelWarn:
		return 4
	case level >= slog.LevelInfo:
		return 6
	}
	return 7
}

// journalHandler sets the priority of each record on the writer the inner handler writes it
// to. slog's handlers write one record in one Write.
type journalHandler struct {
	inner slog.Handler
	out   *prefixWriter
}

func (h *journalHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h *journalHandler) Handle(ctx context.Context, r slog.Record) error {
	h.out.mu.Lock()
	defer h.out.mu.Unlock()
	h.out.prio = Priority(r.Level)
	return h.inner.Handle(ctx, r)
}

func (h *journalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &journalHandler{inner: h.inner.WithAttrs(as), out: h.out}
}

func (h *journalHandler) WithGroup(name string) slog.Handler {
	return &journalHandler{inner: h.inner.WithGroup(name), out: h.out}
}

// maxKeep bounds the buffer a prefixWriter keeps between lines.
const maxKeep = 64 << 10

// prefixWriter writes each line with "<prio>" in front; mu is held by journalHandler.Handle
// around each record.
type prefixWriter struct {
	mu   sync.Mutex
	w    io.Writer
	prio byte
	buf  []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.buf = append(p.buf[:0], '<', '0'+p.prio, '>')
	p.buf = append(p.buf, b...)
	_, err := p.w.Write(p.buf)
	if cap(p.buf) > maxKeep {
		p.buf = nil
	}
	if err != nil {
		return 0, err
	}
	return len(b), nil
}
