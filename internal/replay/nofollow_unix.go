//go:build unix

package replay

import (
	"errors"
	"syscall"
)

// oNoFollow makes open fail on a symbolic link.
const oNoFollow = syscall.O_NOFOLLOW

func isLoop(err error) bool { return errors.Is(err, syscall.ELOOP) }
