//go:build linux

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sesame-knock/sesame/internal/netnsbed"
)

// TestIntegrationOpenCLI is the user's path, with the commands exactly as the docs give them:
// sesame keygen for a shared key, a client key pair and the server's key pair, then sesame open
// from the client namespace to a sesame server, and a real TCP connect. IPv4 and IPv6, UDP
// socket and sniff mode.
func TestIntegrationOpenCLI(t *testing.T) {
	for _, sniff := range []bool{false, true} {
		t.Run(fmt.Sprintf("sniff=%v", sniff), func(t *testing.T) {
			bed := skipUnlessRoot(t)
			for _, fam := range families {
				listen(t, bed, fam)
			}
			dir := t.TempDir()
			run := func(ns string, args ...string) string {
				t.Helper()
				cmd := netnsbed.Command(context.Background(), ns, sesameBin, args...)
				cmd.Dir = dir
				out, err := cmd.CombinedOutput()
				if err != nil {
					t.Fatalf("sesame %v: %v\n%s", args, err, out)
				}
				return string(out)
			}
			run(bed.Client, "keygen", "-o", "alice.key")
			run(bed.Client, "keygen", "--pair", "-o", "alice")
			run(bed.Server, "keygen", "--pair", "--server", "-o", "server")
			pub, err := os.ReadFile(filepath.Join(dir, "alice.pub"))
			if err != nil {
				t.Fatal(err)
			}
			cfg := spaStealth(sniff, `[server]
state_dir = %q

[spa]
listen = "udp/62201"
sniff = %v
server_key_file = %q

[[spa.client]]
name = "alice"
key_file = %q
open = ["tcp/2222"]

[[spa.client]]
name = "alice-pair"
public_key = %q
open = ["tcp/2222"]
`, dir, sniff, filepath.Join(dir, "server"), filepath.Join(dir, "alice.key"), strings.TrimSpace(string(pub)))
			path := filepath.Join(dir, "sesame.toml")
			if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			startDaemon(t, bed.Server, "sesame server running", sesameBin, "server", "-c", path)
			for _, fam := range families {
				svc := netip.AddrPortFrom(fam.server, 2222)
				if canConnect(t, bed, fam.client, svc) {
					t.Fatalf("%s: port open before any SPA packet", fam.name)
				}
				// A shared key (the first command as documented).
				run(bed.Client, "open", fam.server.String(), "-A", "tcp/2222", "--id", "alice", "--key-file", "alice.key")
				// The packet named the client's address on the route to the server, which the
				// kernel chose: connect without binding, so the kernel chooses the same one.
				if !eventually(t, bed, netip.Addr{}, svc, true) {
					t.Fatalf("%s: shared key: port not open", fam.name)
				}
				// A key pair (the second command as documented), from another address.
				extra, err := bed.AddClientAddrs(context.Background(), 1, true)
				if err != nil {
					t.Fatal(err)
				}
				src := extra[0]
				if fam.name == "ipv6" {
					src = extra[1]
				}
				run(bed.Client, "open", fam.server.String(), "-A", "tcp/2222", "--id", "alice-pair", "--key-file", "alice", "--server-key", "server.pub", "-a", src.String())
				if !eventually(t, bed, src, svc, true) {
					t.Fatalf("%s: key pair: port not open for %s", fam.name, src)
				}
			}
		})
	}
}
