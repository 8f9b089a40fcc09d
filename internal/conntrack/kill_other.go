//go:build !linux

package conntrack

import (
	"context"
	"errors"
	"net/netip"

	"github.com/sesame-knock/sesame/internal/netport"
)

var errLinux = errors.New("conntrack: needs Linux")

// Kill needs Linux's connection tracking.
func Kill(context.Context, netip.Addr, []netport.Port) (int, error) { return 0, errLinux }

// KillAt needs Linux's connection tracking.
func KillAt(context.Context, int, netip.Addr, []netport.Port) (int, error) { return 0, errLinux }
