package netnsbed

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Fleet is n gateway namespaces and one client namespace on one link: the client's namespace
// holds a bridge with the client's addresses (Client4, Client6), and each gateway's eth0 is a
// veth port of it. Every gateway sees the client at the same address.
type Fleet struct {
	Client   string   // the client namespace
	Gateways []string // the gateway namespaces
}

// Gateway4 and Gateway6 are gateway i's addresses (i from 0): 198.18.0.11 upwards.
func Gateway4(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, 0, byte(11 + i)}) }

// Gateway6 is gateway i's IPv6 address: fd5e:5a3e::11 upwards (hex).
func Gateway6(i int) netip.Addr {
	a := Server6.As16()
	a[15] = byte(0x11 + i)
	return netip.AddrFrom16(a)
}

// NewFleet creates a fleet of n gateways (1-8) with fresh, uniquely named namespaces.
func NewFleet(ctx context.Context, n int) (*Fleet, error) {
	if n < 1 || n > 8 {
		return nil, fmt.Errorf("netnsbed: fleet of %d gateways (want 1-8)", n)
	}
	var id [4]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, fmt.Errorf("netnsbed: random name: %w", err)
	}
	tag := hex.EncodeToString(id[:])
	f := &Fleet{Client: "sesame-" + tag + "-cli"}
	steps := [][]string{
		{"netns", "add", f.Client},
		{"-n", f.Client, "link", "add", "br0", "type", "bridge"},
		{"-n", f.Client, "addr", "add", Client4.String() + "/16", "dev", "br0"},
		{"-n", f.Client, "addr", "add", Client6.String() + "/64", "dev", "br0", "nodad"},
		{"-n", f.Client, "link", "set", "lo", "up"},
		{"-n", f.Client, "link", "set", "br0", "up"},
	}
	for i := range n {
		gw := fmt.Sprintf("sesame-%s-gw%d", tag, i)
		f.Gateways = append(f.Gateways, gw)
		vg, vc := fmt.Sprintf("vg%s%d", tag, i), fmt.Sprintf("vc%s%d", tag, i)
		steps = append(steps,
			[]string{"netns", "add", gw},
			[]string{"link", "add", vg, "type", "veth", "peer", "name", vc},
			[]string{"link", "set", vg, "netns", gw},
			[]string{"link", "set", vc, "netns", f.Client},
			[]string{"-n", gw, "link", "set", vg, "name", "eth0"},
			[]string{"-n", gw, "addr", "add", Gateway4(i).String() + "/16", "dev", "eth0"},
			[]string{"-n", gw, "addr", "add", Gateway6(i).String() + "/64", "dev", "eth0", "nodad"},
			[]string{"-n", gw, "link", "set", "lo", "up"},
			[]string{"-n", gw, "link", "set", "eth0", "up"},
			[]string{"-n", f.Client, "link", "set", vc, "master", "br0"},
			[]string{"-n", f.Client, "link", "set", vc, "up"},
		)
	}
	for _, s := range steps {
		if err := ip(ctx, nil, s...); err != nil {
			f.Close()
			return nil, err
		}
	}
	// The bridge forwards once its ports leave the listening state (no STP: at once); wait
	// until the client reaches every gateway.
	for i := range n {
		ok := WaitFor(5*time.Second, func() bool {
			return Command(ctx, f.Client, "ping", "-c1", "-W1", Gateway4(i).String()).Run() == nil
		})
		if !ok {
			f.Close()
			return nil, fmt.Errorf("netnsbed: fleet: gateway %d unreachable", i)
		}
	}
	return f, nil
}

// Close deletes every namespace of the fleet; the veth pairs and the bridge go with them.
func (f *Fleet) Close() error {
	var errs []error
	for _, ns := range append([]string{f.Client}, f.Gateways...) {
		if err := ip(context.Background(), nil, "netns", "del", ns); err != nil && !strings.Contains(err.Error(), "No such file") {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
