//go:build !unix

package spaclient

import "io/fs"

// checkPrivate is a no-op where file modes do not describe access (Windows
// uses ACLs; a profile directory is private to its user by default).
func checkPrivate(string, fs.FileInfo) error { return nil }
