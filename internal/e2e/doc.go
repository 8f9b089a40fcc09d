// Package e2e holds end-to-end tests: the real sesame binary in network namespaces, real knocks,
// real TCP connections to a protected port, and the real knockd as a peer.
package e2e
