//go:build !linux

package capture

import (
	"context"
	"errors"
	"fmt"
)

// AFPacket is a capture on AF_PACKET sockets, which exist only on Linux.
type AFPacket struct{}

// Open fails: AF_PACKET capture needs Linux.
func Open(cfg Config) (*AFPacket, error) {
	return nil, fmt.Errorf("capture: open: %w", errors.ErrUnsupported)
}

// Run fails: AF_PACKET capture needs Linux.
func (a *AFPacket) Run(ctx context.Context, handle func(*Packet)) error {
	return fmt.Errorf("capture: run: %w", errors.ErrUnsupported)
}

// SetFilter fails: AF_PACKET capture needs Linux.
func (a *AFPacket) SetFilter(f Filter) error {
	return fmt.Errorf("capture: set filter: %w", errors.ErrUnsupported)
}

// Stats returns zero counters.
func (a *AFPacket) Stats() Stats { return Stats{} }

// Close does nothing.
func (a *AFPacket) Close() error { return nil }
