//go:build !linux

package doctor

import (
	"context"
	"errors"
)

// Run diagnoses the host's firewall; it needs Linux.
func Run(ctx context.Context, opts Options) (*Report, error) {
	return nil, errors.New("doctor: needs Linux (it reads the Linux kernel's firewall)")
}
