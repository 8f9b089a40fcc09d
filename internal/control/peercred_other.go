//go:build !linux

package control

import (
	"errors"
	"net"
)

// peerCred needs SO_PEERCRED, which this system lacks: every request is refused.
func peerCred(net.Conn) (Peer, error) {
	return Peer{}, errors.New("peer credentials: the control server needs Linux")
}
