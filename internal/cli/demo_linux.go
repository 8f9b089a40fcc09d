package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/sesame-knock/sesame/internal/netnsbed"
)

func runDemo(ctx context.Context, c *command, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("demo", c, stdout)
	openFor := fs.Duration("open-for", 5*time.Second, "how long a knock opens the port")
	fw := fs.String("firewall", "nftables", "firewall backend: nftables or iptables")
	verbose := fs.Bool("v", false, "show the server's log lines")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *fw != "nftables" && *fw != "iptables" {
		return usagef("--firewall %q: want nftables or iptables", *fw)
	}
	if *openFor < time.Second || *openFor > time.Minute {
		return usagef("--open-for %s: want 1s to 1m", *openFor)
	}
	if os.Geteuid() != 0 {
		return errors.New("the demo creates network namespaces and firewall rules: run it as root (sudo sesame demo)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("the demo needs ip(8) from iproute2 (apt-get install iproute2)")
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own binary: %w", err)
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	say := func(format string, a ...any) { fmt.Fprintf(stdout, format+"\n", a...) }
	say("sesame demo: a port closed, opened by a knock, closed again.")
	say("")
	say("Building two network namespaces joined by a virtual cable:")
	bed, err := netnsbed.New(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if err := bed.Close(); err != nil {
			fmt.Fprintf(stderr, "demo: cleanup: %v\n", err)
		} else {
			say("Cleaned up: namespaces, processes and rules are gone.")
		}
	}()
	other := netnsbed.ExtraClient4(1)
	if _, err := bed.AddClientAddrs(ctx, 1, false); err != nil {
		return err
	}
	say("  server %s, client %s (and a second client address %s)", netnsbed.Server4, netnsbed.Client4, other)

	dir, err := os.MkdirTemp("", "sesame-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfgPath := filepath.Join(dir, "sesame.toml")
	cfg := fmt.Sprintf(`[server]
firewall = %q
state_dir = %q

[[door]]
name = "demo"
sequence = ["7000/tcp", "8000/udp", "9000/tcp"]
sequence_timeout = "5s"
open = ["tcp/2222"]
open_for = %q
`, *fw, dir, openFor.String())
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return err
	}
	service := netip.AddrPortFrom(netnsbed.Server4, 2222)
	if _, err := netnsbed.Listen(ctx, bed.Server, service); err != nil {
		return err
	}
	say("  a small TCP service listens on %s in the server namespace: it greets, then echoes what it receives", service)
	say("")
	say("Starting 'sesame server' in the server namespace (firewall %s), protecting tcp/2222:", *fw)
	for _, l := range strings.Split(strings.TrimSpace(cfg), "\n") {
		say("    %s", l)
	}
	srvCtx, srvCancel := context.WithCancel(context.Background())
	defer srvCancel()
	srv := netnsbed.Command(srvCtx, bed.Server, self, "server", "-c", cfgPath, "--log-level", "debug")
	srv.Cancel = func() error { return srv.Process.Signal(syscall.SIGTERM) }
	srv.WaitDelay = 5 * time.Second
	logs, err := srv.StderrPipe()
	if err != nil {
		return err
	}
	if err := srv.Start(); err != nil {
		return fmt.Errorf("start server: %w", err)
	}
	defer func() {
		srvCancel()
		srv.Wait()
	}()
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(logs)
		once := false
		for sc.Scan() {
			line := sc.Text()
			if *verbose || strings.Contains(line, "door opened") || strings.Contains(line, "level=ERROR") {
				say("    [server] %s", line)
			}
			if !once && strings.Contains(line, "sesame server running") {
				once = true
				close(ready)
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		return errors.New("the server did not start within 10s (run with -v to see its log)")
	case <-ctx.Done():
		return ctx.Err()
	}
	say("")

	var failures []string
	check := func(step string, src netip.Addr, want bool) {
		ok, err := netnsbed.CanConnect(bed.Client, src, service, time.Second)
		from := netnsbed.Client4
		if src.IsValid() {
			from = src
		}
		state := "closed (no answer)"
		if ok {
			state = "OPEN (greeting received, echo returned)"
		}
		mark := "as expected"
		if err != nil {
			state, mark = "error: "+err.Error(), "UNEXPECTED"
			failures = append(failures, step)
		} else if ok != want {
			mark = "UNEXPECTED"
			failures = append(failures, step)
		}
		say("%s  %s -> %s: %s, %s", step, from, service, state, mark)
	}
	check("1. Before any knock, the client connects:   ", netip.Addr{}, false)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	say("2. The client knocks: sesame knock %s 7000 8000:udp 9000", netnsbed.Server4)
	kn := netnsbed.Command(ctx, bed.Client, self, "knock", "-v", netnsbed.Server4.String(), "7000", "8000:udp", "9000")
	if out, err := kn.CombinedOutput(); err != nil {
		return fmt.Errorf("knock: %w: %s", err, out)
	}
	time.Sleep(50 * time.Millisecond)
	check("3. After the knock, the client connects:    ", netip.Addr{}, true)
	check("   Another address tries the same port:     ", other, false)
	say("4. Waiting open_for (%s) for the grant to expire in the kernel...", *openFor)
	select {
	case <-time.After(*openFor + 500*time.Millisecond):
	case <-ctx.Done():
		return ctx.Err()
	}
	check("   After open_for, the client connects:     ", netip.Addr{}, false)
	say("")
	if len(failures) > 0 {
		return fmt.Errorf("the demo did not behave: %s", strings.Join(failures, "; "))
	}
	say("Everything behaved: closed, opened for this client only, closed again.")
	return nil
}
