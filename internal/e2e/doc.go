// Package e2e holds end-to-end tests: the real sesame binary in network namespaces, real knocks,
// real TCP connections to a protected port, and the real knockd as a peer.
//
// Every test builds namespaces of its own, so tests do not share network state. Most run one
// after the other. A few that spend their time waiting for grants, bans and sequences to time
// out call t.Parallel: Go runs them after the others, -parallel (GOMAXPROCS, 2 here) at a
// time, which shortens the run. Floods and latency measurements stay sequential.
package e2e
