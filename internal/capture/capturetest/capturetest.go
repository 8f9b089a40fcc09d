// Package capturetest is a packet source fed from a test, standing in for a capture or a UDP listener.
package capturetest

import (
	"context"
	"errors"
	"slices"
	"sync"

	"github.com/sesame-knock/sesame/internal/capture"
)

// ErrClosed is what Send returns once the source is closed.
var ErrClosed = errors.New("capturetest: source closed")

type delivery struct {
	p    *capture.Packet
	done chan struct{}
}

// Source hands the packets a test sends to whoever runs it. It records every filter set, and
// counts received packets in Stats. It is safe for concurrent use; Run may be called once.
type Source struct {
	in     chan delivery
	closed chan struct{}
	once   sync.Once

	mu        sync.Mutex
	filters   []capture.Filter
	filterErr error
	received  uint64
	running   bool
	runs      chan struct{} // closed when Run starts
}

// New returns an open source.
func New() *Source {
	return &Source{in: make(chan delivery), closed: make(chan struct{}), runs: make(chan struct{})}
}

// Run implements the intake: it calls handle for each packet sent, one at a time, until ctx
// ends (returning ctx's error) or the source is closed (returning nil).
func (s *Source) Run(ctx context.Context, handle func(*capture.Packet)) error {
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return errors.New("capturetest: already running")
	}
	s.running = true
	close(s.runs)
	s.mu.Unlock()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.closed:
			return nil
		case d := <-s.in:
			s.mu.Lock()
			s.received++
			s.mu.Unlock()
			handle(d.p)
			close(d.done)
		}
	}
}

// Send delivers p and returns once it was handled; ErrClosed when the source closed first, or
// ctx's error when ctx ended first.
func (s *Source) Send(ctx context.Context, p *capture.Packet) error {
	d := delivery{p: p, done: make(chan struct{})}
	select {
	case s.in <- d:
	case <-s.closed:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	<-d.done
	return nil
}

// Running is closed once Run has started.
func (s *Source) Running() <-chan struct{} { return s.runs }

// SetFilter records f; it fails, recording nothing, while FailFilter set an error.
func (s *Source) SetFilter(f capture.Filter) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.filterErr != nil {
		return s.filterErr
	}
	s.filters = append(s.filters, f)
	return nil
}

// FailFilter makes later SetFilter calls return err (nil: succeed again).
func (s *Source) FailFilter(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.filterErr = err
}

// Filters returns every filter set so far, oldest first.
func (s *Source) Filters() []capture.Filter {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.filters)
}

// Filter returns the filter set last (the zero Filter when none was).
func (s *Source) Filter() capture.Filter {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.filters) == 0 {
		return capture.Filter{}
	}
	return s.filters[len(s.filters)-1]
}

// Stats counts the packets handed to Run's caller.
func (s *Source) Stats() capture.Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return capture.Stats{Received: s.received}
}

// Close ends Run and makes Send fail; it may be called more than once.
func (s *Source) Close() error {
	s.once.Do(func() { close(s.closed) })
	return nil
}

// Closed reports whether Close was called.
func (s *Source) Closed() bool {
	select {
	case <-s.closed:
		return true
	default:
		return false
	}
}
