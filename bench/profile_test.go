//go:build linux

package main

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/benchkit"
	"github.com/sesame-knock/sesame/internal/netnsbed"
)

// BenchmarkProfileKnockFlood is a profiling driver, not a benchmark: it profiles sesame (through SESAME_PPROF) while spoofed sources
// flood its knock ports, once, with go test ./bench -run "^$" -bench ProfileKnockFlood -benchtime 1x. It runs only when BENCH_PROFILE names the file to write the CPU profile
// to, and BENCH_SESAME names a sesame binary.
func BenchmarkProfileKnockFlood(b *testing.B) {
	t := b
	out, bin := os.Getenv("BENCH_PROFILE"), os.Getenv("BENCH_SESAME")
	if out == "" || bin == "" || os.Geteuid() != 0 {
		b.Skip("set BENCH_PROFILE=FILE and BENCH_SESAME=BINARY and run as root")
	}
	h := &harness{ctx: context.Background(), res: &Results{}, sesameBin: bin, spaAvailable: "no",
		sesameEnv: []string{"SESAME_PPROF=127.0.0.1:6060"}, log: t.Logf}
	defer cleanupAll()
	e, err := h.newEnv(dSesame, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer e.close()
	go e.floodFor(benchkit.FloodConfig{Rate: 50000, Duration: 14 * time.Second, Pattern: patKnockPorts(&e.link)})
	time.Sleep(2 * time.Second)
	err = netnsbed.Do(e.bed.Server, func() error {
		// Dial on this thread (the server namespace); http.Get would dial from another.
		c, err := net.Dial("tcp", "127.0.0.1:6060")
		if err != nil {
			return err
		}
		defer c.Close()
		if _, err := io.WriteString(c, "GET /debug/pprof/profile?seconds=10 HTTP/1.0\r\n\r\n"); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		f, err := os.Create(out)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(f, resp.Body)
		return err
	})
	if err != nil {
		t.Fatalf("%v; sesame output:\n%s", err, e.d.out.String())
	}
}
