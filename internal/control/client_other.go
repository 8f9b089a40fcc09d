//go:build !unix

package control

// socketNeeds says who may open the socket.
func socketNeeds(string) string {
	return "reading needs root or membership of the socket's group"
}
