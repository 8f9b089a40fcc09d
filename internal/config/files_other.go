//go:build !unix

package config

import "io/fs"

// unixModes: elsewhere (Windows: ACLs) file modes do not say who may change a file, and no
// check is made.
const unixModes = false

const openNonblock = 0

func owner(fs.FileInfo) (uid, gid uint32, ok bool) { return 0, 0, false }
