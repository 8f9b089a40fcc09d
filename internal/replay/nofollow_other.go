//go:build !unix

package replay

// oNoFollow: no such open flag here.
const oNoFollow = 0

func isLoop(error) bool { return false }
