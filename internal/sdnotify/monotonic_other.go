//go:build !linux

package sdnotify

import "time"

// monotonic: systemd runs on Linux only; elsewhere MONOTONIC_USEC is left out.
func monotonic() (time.Duration, bool) { return 0, false }
