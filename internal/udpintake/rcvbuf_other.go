//go:build !linux

package udpintake

import "errors"

func forceReceiveBuffer(fd uintptr, n int) error { return errors.ErrUnsupported }
