//go:build unix

package config

import (
	"io/fs"
	"syscall"
)

// unixModes: file modes and owners say who may change a file.
const unixModes = true

// openNonblock keeps opening a FIFO put in a file's place from blocking.
const openNonblock = syscall.O_NONBLOCK

// owner returns the owner and group of a file.
func owner(fi fs.FileInfo) (uid, gid uint32, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, false
	}
	return st.Uid, st.Gid, true
}
