package logfmt

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

var t0 = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

func record(level slog.Level, msg string, args ...any) slog.Record {
	r := slog.NewRecord(t0, level, msg, 0)
	r.Add(args...)
	return r
}

// TestJournalLines: under the journal every line starts with its sd-daemon priority and has no
// time attribute; the rest of the line is what the plain handler writes.
func TestJournalLines(t *testing.T) {
	tests := []struct {
		format string
		level  slog.Level
		want   string
	}{
		{Text, slog.LevelDebug, `<7>level=DEBUG msg=knock src=198.18.0.2 door=ssh` + "\n"},
		{Text, slog.LevelInfo, `<6>level=INFO msg="knock refused" src=198.18.0.2 door=ssh` + "\n"},
		{Text, slog.LevelWarn, `<4>level=WARN msg="knock refused" src=198.18.0.2 door=ssh` + "\n"},
		{Text, slog.LevelError, `<3>level=ERROR msg="knock refused" src=198.18.0.2 door=ssh` + "\n"},
		{Text, slog.LevelError + 4, `<3>level=ERROR+4 msg="knock refused" src=198.18.0.2 door=ssh` + "\n"},
		{Text, slog.LevelInfo - 1, `<7>level=DEBUG+3 msg="knock refused" src=198.18.0.2 door=ssh` + "\n"},
		{Text, slog.LevelWarn - 1, `<6>level=INFO+3 msg="knock refused" src=198.18.0.2 door=ssh` + "\n"},
		{JSON, slog.LevelWarn, `<4>{"level":"WARN","msg":"knock refused","src":"198.18.0.2","door":"ssh"}` + "\n"},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s/%v", tc.format, tc.level), func(t *testing.T) {
			msg := "knock refused"
			if tc.level == slog.LevelDebug {
				msg = "knock"
			}
			var buf bytes.Buffer
			h, err := New(&buf, Options{Format: tc.format, Level: slog.LevelDebug, Journal: true})
			if err != nil {
				t.Fatal(err)
			}
			if err := h.Handle(context.Background(), record(tc.level, msg, "src", "198.18.0.2", "door", "ssh")); err != nil {
				t.Fatal(err)
			}
			if buf.String() != tc.want {
				t.Errorf("got  %q\nwant %q", buf.String(), tc.want)
			}
		})
	}
}

// TestPlainUnchanged: outside the journal the lines are slog's own, timestamp first.
func TestPlainUnchanged(t *testing.T) {
	for _, format := range []string{Text, JSON} {
		var got, want bytes.Buffer
		h, err := New(&got, Options{Format: format, Level: slog.LevelInfo})
		if err != nil {
			t.Fatal(err)
		}
		ref := slog.Handler(slog.NewTextHandler(&want, &slog.HandlerOptions{Level: slog.LevelInfo}))
		if format == JSON {
			ref = slog.NewJSONHandler(&want, &slog.HandlerOptions{Level: slog.LevelInfo})
		}
		for _, l := range []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelError} {
			r := record(l, "spa refused", "src", "fd5e:5a3e::9", "reason", "bad MAC")
			if h.Enabled(context.Background(), l) {
				h.Handle(context.Background(), r)
			}
			if ref.Enabled(context.Background(), l) {
				ref.Handle(context.Background(), r)
			}
		}
		if got.String() != want.String() || !strings.Contains(got.String(), "2026-06-01T12:00:00") {
			t.Errorf("%s: got\n%s\nwant\n%s", format, got.String(), want.String())
		}
	}
}

// TestJournalConcurrent: records of every level logged at once, through derived handlers too,
// each keep their own prefix.
func TestJournalConcurrent(t *testing.T) {
	var buf bytes.Buffer
	h, err := New(&buf, Options{Format: Text, Level: slog.LevelDebug, Journal: true})
	if err != nil {
		t.Fatal(err)
	}
	levels := []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn, slog.LevelError}
	var wg sync.WaitGroup
	for i, l := range levels {
		log := slog.New(h).With("worker", i).WithGroup("g")
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				log.Log(context.Background(), l, "line", "level_was", l.String())
			}
		}()
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 800 {
		t.Fatalf("%d lines, want 800", len(lines))
	}
	for _, line := range lines {
		_, lvl, _ := strings.Cut(line, "g.level_was=")
		var l slog.Level
		if err := l.UnmarshalText([]byte(lvl)); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		if want := fmt.Sprintf("<%d>level=%s ", Priority(l), lvl); !strings.HasPrefix(line, want) {
			t.Fatalf("line %q does not start with %q", line, want)
		}
	}
}

func TestUnknownFormat(t *testing.T) {
	if _, err := New(&bytes.Buffer{}, Options{Format: "logfmt"}); err == nil || !strings.Contains(err.Error(), `"logfmt"`) {
		t.Fatalf("New: %v", err)
	}
}
