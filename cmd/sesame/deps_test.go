package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/sesame-knock/sesame"

// badDep says why the binary must not link pkg, or "" if it may.
func badDep(pkg string) string {
	switch {
	case pkg == "testing" || strings.HasPrefix(pkg, "testing/"):
		return "the standard testing packages are for tests"
	case pkg == "github.com/mdlayher/netlink/nltest":
		return "the fake netlink socket is for tests"
	case pkg == module+"/internal/benchkit" || pkg == module+"/bench":
		return "the benchmark kit is not part of the daemon"
	case strings.HasPrefix(pkg, module+"/"):
		if last := pkg[strings.LastIndex(pkg, "/")+1:]; strings.HasSuffix(last, "test") {
			return "our *test packages are test helpers"
		}
	}
	return ""
}

// upstreamOnly lists the bad packages that a dependency of ours links on its own, with the only
// importers allowed: google/nftables' conn.go imports nltest for its WithTestDial option (a
// branch the daemon never takes). Our own packages must not import them.
var upstreamOnly = map[string][]string{
	"github.com/mdlayher/netlink/nltest": {"github.com/google/nftables"},
}

// badDeps checks a `go list -deps` listing with one line per package (its import path, then the
// packages it imports) and describes every bad package in it.
func badDeps(listing string) []string {
	importers := map[string][]string{}
	var pkgs []string
	for line := range strings.Lines(listing) {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		pkgs = append(pkgs, f[0])
		for _, imp := range f[1:] {
			importers[imp] = append(importers[imp], f[0])
		}
	}
	var bad []string
	for _, p := range pkgs {
		why := badDep(p)
		if why == "" {
			continue
		}
		by := importers[p]
		if allowed, ok := upstreamOnly[p]; ok && len(by) > 0 &&
			!slices.ContainsFunc(by, func(i string) bool { return !slices.Contains(allowed, i) }) {
			continue
		}
		bad = append(bad, fmt.Sprintf("%s (imported by %s): %s", p, strings.Join(by, ", "), why))
	}
	return bad
}

func TestBadDepRule(t *testing.T) {
	tests := []struct {
		pkg string
		bad bool
	}{
		{"testing", true},
		{"testing/fstest", true},
		{"github.com/mdlayher/netlink/nltest", true},
		{module + "/internal/netnsbed/netnstest", true},
		{module + "/internal/firewall/fwtest", true},
		{module + "/internal/capture/capturetest", true},
		{module + "/internal/firewall/firewalltest", true},
		{module + "/internal/benchkit", true},
		{module + "/bench", true},
		// Allowed: the standard library's own internal/synctest (imported by sync) and
		// internal/testlog (imported by os), the demo's bed, netlink itself, our ordinary packages.
		{"internal/synctest", false},
		{"internal/testlog", false},
		{"github.com/mdlayher/netlink", false},
		{module + "/internal/netnsbed", false},
		{module + "/internal/firewall/nft", false},
		{module + "/internal/cli", false},
	}
	for _, tc := range tests {
		if got := badDep(tc.pkg) != ""; got != tc.bad {
			t.Errorf("badDep(%q) bad = %v, want %v", tc.pkg, got, tc.bad)
		}
	}
}

func TestBadDepsListing(t *testing.T) {
	const (
		nft    = module + "/internal/firewall/nft"
		nltest = "github.com/mdlayher/netlink/nltest"
		gnft   = "github.com/google/nftables"
	)
	tests := []struct {
		name    string
		listing string
		bad     []string // packages reported
	}{
		{"clean", "sync internal/synctest\n" + nft + " " + gnft + "\n" + gnft + "\n", nil},
		{"nltest only through google/nftables", nltest + "\n" + gnft + " " + nltest + "\n" + nft + " " + gnft + "\n", nil},
		{"nltest imported by us", nltest + "\n" + gnft + " " + nltest + "\n" + nft + " " + gnft + " " + nltest + "\n", []string{nltest}},
		{"testing through the bed", "testing\n" + module + "/internal/netnsbed testing\n", []string{"testing"}},
		{"test helper", module + "/internal/netnsbed/netnstest testing\ntesting\n", []string{module + "/internal/netnsbed/netnstest", "testing"}},
	}
	for _, tc := range tests {
		var got []string
		for _, b := range badDeps(tc.listing) {
			got = append(got, b[:strings.Index(b, " ")])
		}
		if !slices.Equal(got, tc.bad) {
			t.Errorf("%s: badDeps reported %q, want %q", tc.name, got, tc.bad)
		}
	}
}

// TestBadDeps fails if the sesame binary, built for any OS it ships on, links test code.
func TestBadDeps(t *testing.T) {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list the binary's dependencies: %v", err)
	}
	for _, target := range []struct{ goos, goarch string }{
		{"linux", "amd64"}, {"linux", "arm64"}, {"darwin", "arm64"}, {"windows", "amd64"},
	} {
		t.Run(target.goos+"_"+target.goarch, func(t *testing.T) {
			cmd := exec.Command(goCmd, "list", "-deps", "-f", "{{.ImportPath}}{{range .Imports}} {{.}}{{end}}", ".")
			cmd.Env = append(os.Environ(), "GOOS="+target.goos, "GOARCH="+target.goarch, "CGO_ENABLED=0")
			out, err := cmd.Output()
			if err != nil {
				var stderr []byte
				if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
					stderr = ee.Stderr
				}
				t.Fatalf("go list -deps: %v\n%s", err, stderr)
			}
			if !strings.Contains(string(out), "\n"+module+"/internal/cli ") {
				t.Fatalf("go list -deps did not list %s/internal/cli:\n%s", module, out)
			}
			for _, b := range badDeps(string(out)) {
				t.Errorf("the binary links %s", b)
			}
		})
	}
}
