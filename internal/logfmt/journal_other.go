//go:build !unix

package logfmt

import "os"

// OnJournal reports false: there is no journald here.
func OnJournal(stream string, f *os.File) bool { return false }
