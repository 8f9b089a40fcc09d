package cli

import (
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
)

// pprofEnv names the environment variable that, when set to an address such as 127.0.0.1:6060,
// makes the sesame process serve net/http/pprof there. It exists for the benchmark harness
// (go run ./bench) and for profiling; nothing else starts it.
const pprofEnv = "SESAME_PPROF"

// startPprof serves net/http/pprof on the address in SESAME_PPROF, if it is set. It is only for
// profiling; the listener lives as long as the process.
func startPprof() {
	addr := os.Getenv(pprofEnv)
	if addr == "" {
		return
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "sesame: %s: %v\n", pprofEnv, err)
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	go http.Serve(ln, mux) //nolint:errcheck // debug endpoint: dies with the process
}
