package capturetest

import (
	"context"
	"errors"
	"testing"

	"github.com/sesame-knock/sesame/internal/capture"
)

func TestSource(t *testing.T) {
	s := New()
	ctx := context.Background()
	var got []uint16
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, func(p *capture.Packet) { got = append(got, p.DstPort) }) }()
	for _, port := range []uint16{7000, 8000} {
		if err := s.Send(ctx, &capture.Packet{DstPort: port}); err != nil {
			t.Fatal(err)
		}
	}
	if len(got) != 2 || got[1] != 8000 || s.Stats().Received != 2 {
		t.Fatalf("handled %v, stats %+v", got, s.Stats())
	}
	s.SetFilter(capture.Filter{SPA: []uint16{1}})
	s.FailFilter(errors.New("no"))
	if s.SetFilter(capture.Filter{}) == nil || len(s.Filters()) != 1 || s.Filter().SPA[0] != 1 {
		t.Fatalf("filters %v", s.Filters())
	}
	s.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := s.Send(ctx, &capture.Packet{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("send after close: %v", err)
	}
}
