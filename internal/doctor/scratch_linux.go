package doctor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Addresses of the probe: the scratch server holds dst, the scratch client holds both sources.
// They exist only inside the doctor's two namespaces.
var (
	probeGranted   = netip.MustParseAddr("203.0.113.10")
	probeUngranted = netip.MustParseAddr("203.0.113.20")
	probeServer    = netip.MustParseAddr("192.0.2.1") // when the host's interface has no IPv4 address
	probeNet       = netip.MustParsePrefix("203.0.113.0/24")
)

// clientIf is the probe client's end of the veth pair.
const clientIf = "probe0"

// maxDummies bounds the host interface names recreated as dummies in the scratch namespace.
const maxDummies = 64

// scratch is the doctor's pair of throw-away namespaces: srv holds the copy of the host's
// ruleset, cli sends the test packets. Neither has a name: they vanish with their last handle
// and process, so a killed doctor leaves nothing behind.
type scratch struct {
	srv, cli netns.NsHandle
	ifname   string
	dst      netip.Addr
}

// inNS runs fn on an OS thread switched into ns; sockets and child processes fn creates live
// in ns.
func inNS(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // left locked (the thread dies) when switching back fails
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("doctor: current namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("doctor: enter namespace: %w", err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("doctor: leave namespace: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// newNS creates an unnamed network namespace and returns a handle on it.
func newNS() (netns.NsHandle, error) {
	var h netns.NsHandle
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("doctor: current namespace: %w", err)
			return
		}
		defer orig.Close()
		h, err = netns.New()
		if err != nil {
			errc <- fmt.Errorf("doctor: new namespace: %w", err)
			return
		}
		if err := netns.Set(orig); err != nil {
			errc <- fmt.Errorf("doctor: leave namespace: %w", err)
			return
		}
		runtime.UnlockOSThread()
		errc <- nil
	}()
	return h, <-errc
}

// run runs a command in ns with stdin and returns its standard output; the error carries
// standard error.
func run(ctx context.Context, ns netns.NsHandle, stdin string, name string, args ...string) (string, error) {
	var out, errb bytes.Buffer
	err := inNS(ns, func() error {
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Stdin = strings.NewReader(stdin)
		cmd.Stdout, cmd.Stderr = &out, &errb
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		return cmd.Run()
	})
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// hostRun runs a command in the doctor's own namespace.
func hostRun(ctx context.Context, name string, args ...string) (string, error) {
	var errb bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stderr = &errb
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return string(out), nil
}

// newScratch builds the two namespaces and the veth pair between them: the server end is
// called ifname (the host interface clients come in on) and holds dst; the client end holds
// the probe sources. Other host interface names exist as dummies, so that rules naming them
// load. forward is the host's net.ipv4.ip_forward.
func newScratch(ifname string, dst netip.Addr, others []string, forward bool) (_ *scratch, err error) {
	s := &scratch{srv: -1, cli: -1, ifname: ifname, dst: dst}
	srv, err := newNS()
	if err != nil {
		return nil, err
	}
	s.srv = srv
	cli, err := newNS()
	if err != nil {
		s.close()
		return nil, err
	}
	s.cli = cli
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	hs, err := netlink.NewHandleAt(s.srv)
	if err != nil {
		return nil, fmt.Errorf("doctor: netlink in scratch namespace: %w", err)
	}
	defer hs.Close()
	hc, err := netlink.NewHandleAt(s.cli)
	if err != nil {
		return nil, fmt.Errorf("doctor: netlink in scratch namespace: %w", err)
	}
	defer hc.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: ifname}, PeerName: clientIf, PeerNamespace: netlink.NsFd(s.cli)}
	if err := hs.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("doctor: veth pair: %w", err)
	}
	for i, n := range others {
		if i == maxDummies {
			break
		}
		if n == ifname || n == "lo" {
			continue
		}
		// A dummy where the kernel has them, else a veth pair; without either, rules naming
		// the interface may not load, and the copy says so.
		if hs.LinkAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: n}}) != nil {
			hs.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: n}, PeerName: fmt.Sprintf("dpeer%d", i)})
		}
	}
	if err := setup(hs, ifname, []netip.Addr{dst}); err != nil {
		return nil, err
	}
	if err := setup(hc, clientIf, []netip.Addr{probeGranted, probeUngranted}); err != nil {
		return nil, err
	}
	if forward {
		err := inNS(s.srv, func() error { return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1\n"), 0o644) })
		if err != nil {
			return nil, fmt.Errorf("doctor: ip_forward in scratch namespace: %w", err)
		}
	}
	return s, nil
}

// setup gives a link its addresses (/32), brings it and lo up and routes everything over it.
func setup(h *netlink.Handle, name string, addrs []netip.Addr) error {
	l, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("doctor: link %s: %w", name, err)
	}
	for _, a := range addrs {
		ipn := &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)}
		if err := h.AddrAdd(l, &netlink.Addr{IPNet: ipn}); err != nil {
			return fmt.Errorf("doctor: address %s on %s: %w", a, name, err)
		}
	}
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("doctor: link lo: %w", err)
	}
	for _, x := range []netlink.Link{lo, l} {
		if err := h.LinkSetUp(x); err != nil {
			return fmt.Errorf("doctor: link %s up: %w", x.Attrs().Name, err)
		}
	}
	_, def, _ := net.ParseCIDR("0.0.0.0/0")
	if err := h.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: def, Scope: netlink.SCOPE_LINK}); err != nil {
		return fmt.Errorf("doctor: default route on %s: %w", name, err)
	}
	return nil
}

func (s *scratch) close() {
	for _, h := range []*netns.NsHandle{&s.srv, &s.cli} {
		if *h >= 0 {
			h.Close()
			*h = -1
		}
	}
}
