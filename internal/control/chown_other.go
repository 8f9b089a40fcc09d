//go:build !unix

package control

import "os"

// chownIfNeeded gives path to uid:gid (the daemon runs only on Linux; this keeps the package
// building elsewhere for the client commands).
func chownIfNeeded(path string, uid, gid int) error { return os.Chown(path, uid, gid) }
