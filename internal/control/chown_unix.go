//go:build unix

package control

import (
	"fmt"
	"os"
	"syscall"
)

// chownIfNeeded gives path to uid:gid unless it already has them. A daemon that is not root
// makes its files with its own uid and gid, which is the default owner; it never calls chown(2)
// then (the unit's SystemCallFilter= leaves chown out: a group other than the daemon's own
// fails there with EPERM).
func chownIfNeeded(path string, uid, gid int) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) == uid && int(st.Gid) == gid {
		return nil
	}
	if err := os.Chown(path, uid, gid); err != nil {
		if os.Geteuid() != 0 {
			return fmt.Errorf("%w (a daemon that is not root can give the socket only to a group it is in)", err)
		}
		return err
	}
	return nil
}
