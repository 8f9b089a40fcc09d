//go:build unix

package logfmt

import (
	"fmt"
	"os"
	"syscall"
)

// OnJournal reports whether f is the journal stream systemd connected: stream is the value of
// $JOURNAL_STREAM, "DEVICE:INODE" in decimal (systemd.exec(5)), and it must name f, so that a
// process whose stderr was redirected elsewhere by a child or a shell keeps its timestamps.
func OnJournal(stream string, f *os.File) bool {
	if stream == "" || f == nil {
		return false
	}
	var dev, ino uint64
	if n, err := fmt.Sscanf(stream, "%d:%d", &dev, &ino); n != 2 || err != nil {
		return false
	}
	if fmt.Sprintf("%d:%d", dev, ino) != stream {
		return false // trailing bytes
	}
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && uint64(st.Dev) == dev && uint64(st.Ino) == ino
}
