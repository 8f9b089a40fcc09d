//go:build unix

package spaclient

import (
	"fmt"
	"io/fs"
)

// checkPrivate refuses a secret file that group or others may read or write.
func checkPrivate(path string, fi fs.FileInfo) error {
	if m := fi.Mode().Perm(); m&0o077 != 0 {
		return fmt.Errorf("%s holds a secret key but is accessible by group or others (mode %04o): run 'chmod 600 %s'", path, m, path)
	}
	return nil
}
