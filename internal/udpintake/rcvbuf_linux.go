package udpintake

import "golang.org/x/sys/unix"

func forceReceiveBuffer(fd uintptr, n int) error {
	return unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n)
}
