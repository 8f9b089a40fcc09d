//go:build linux

// Package ipt is sesame's firewall backend for hosts without nftables: iptables/ip6tables rules
// plus ipsets, which hold the grants and expire them in the kernel.
//
// Layout, in the filter table of both iptables and ip6tables:
//
//	-A INPUT -j SESAME                                    (inserted at position 1, exactly once)
//	-A SESAME -p tcp -m tcp --dport 2222 -m conntrack --ctdir REPLY -j DROP   (one per protected tcp port)
//	-A SESAME -m connmark --mark 0x20000000/0x20000000 -j ACCEPT
//	-A SESAME -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN
//	-A SESAME -m set --match-set sesame4 src,dst -j CONNMARK --set-xmark 0x20000000/0x20000000
//	-A SESAME -m set --match-set sesame4 src,dst -j ACCEPT   (sesame6 for ip6tables)
//	-A SESAME -p tcp -m tcp --dport 2222 -j DROP          (one per protected port)
//	-A SESAME -j RETURN
//
// and two ipsets: sesame4 (hash:ip,port family inet timeout) and sesame6 (family inet6).
//
// A grant admits a new connection and sets bit firewall.ConnMark of its conntrack mark; every
// later packet of that connection is accepted by the first rule, while the grant lives and after it expired. These ACCEPTs end INPUT, so a host rule
// further down INPUT that drops the port (with or without an ESTABLISHED rule of its own) does
// not stop a connection sesame admitted. Other traffic still RETURNs to INPUT untouched. Drops in
// other tables (raw, mangle, another nft table) or in rules inserted above the jump still apply.
//
// Grants go only over netlink (vishvananda/netlink's ipset calls; no ipset binary). The static
// rules are set up by exec'ing iptables/ip6tables through coreos/go-iptables. Namespaces: with
// Options.NetNS set, ipset netlink sockets are opened in that namespace and every iptables exec
// runs from an OS thread switched into it (the child inherits the thread's namespace), so a
// daemon or a test can gate a namespace other than its own.
//
// ipset timeouts have one-second resolution: a grant's timeout is rounded up to whole seconds and
// List reports whole seconds left.
package ipt

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coreos/go-iptables/iptables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/netport"
)

// Default names.
const (
	DefaultChain = "SESAME"
	DefaultSet4  = "sesame4"
	DefaultSet6  = "sesame6"
)

const (
	table      = "filter"
	inputChain = "INPUT"
	setType    = "hash:ip,port"
	// setDefaultTimeout is the sets' default timeout (seconds): an entry added without a
	// timeout, say by hand, still expires.
	setDefaultTimeout = 300
	// maxTimeout is ipset's largest timeout in seconds.
	maxTimeout = 2147483
)

// Options configure a Backend.
type Options struct {
	// NetNS is an open file descriptor of the network namespace to work in; 0 is the current
	// namespace. The caller keeps ownership and keeps it open while the Backend is used.
	NetNS int
	// Chain, Set4 and Set6 name the chain and the ipsets; empty means the defaults.
	Chain, Set4, Set6 string
}

// Backend is the iptables+ipset implementation of firewall.Backend. It is safe for concurrent
// use within one process.
type Backend struct {
	mu     sync.Mutex
	ns     int
	chain  string
	set4   string
	set6   string
	h      *netlink.Handle
	ipt4   *iptables.IPTables
	ipt6   *iptables.IPTables
	closed bool
}

var _ firewall.Backend = (*Backend)(nil)

// New checks that ipset (over netlink) and iptables/ip6tables are usable. It changes nothing;
// call Apply for that.
func New(opts Options) (*Backend, error) {
	b := &Backend{ns: opts.NetNS, chain: opts.Chain, set4: opts.Set4, set6: opts.Set6}
	if b.chain == "" {
		b.chain = DefaultChain
	}
	if b.set4 == "" {
		b.set4 = DefaultSet4
	}
	if b.set6 == "" {
		b.set6 = DefaultSet6
	}
	var err error
	if opts.NetNS != 0 {
		b.h, err = netlink.NewHandleAt(netns.NsHandle(opts.NetNS), unix.NETLINK_NETFILTER)
	} else {
		b.h, err = netlink.NewHandle(unix.NETLINK_NETFILTER)
	}
	if err != nil {
		return nil, fmt.Errorf("firewall ipt: open netfilter netlink socket: %w", err)
	}
	if _, _, err := b.h.IpsetProtocol(); errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		b.h.Close()
		return nil, fmt.Errorf("firewall ipt: ipset: %w: needs CAP_NET_ADMIN", err)
	} else if err != nil {
		b.h.Close()
		return nil, fmt.Errorf("firewall ipt: ipset is not available (needs CONFIG_IP_SET, module ip_set, and CAP_NET_ADMIN): %w", err)
	}
	err = b.inNS(func() error {
		var err error
		if b.ipt4, err = iptables.New(iptables.IPFamily(iptables.ProtocolIPv4)); err != nil {
			return fmt.Errorf("firewall ipt: iptables: %w", err)
		}
		if b.ipt6, err = iptables.New(iptables.IPFamily(iptables.ProtocolIPv6)); err != nil {
			return fmt.Errorf("firewall ipt: ip6tables: %w", err)
		}
		return nil
	})
	if err != nil {
		b.h.Close()
		return nil, err
	}
	return b, nil
}

// inNS runs fn on an OS thread in the backend's namespace, so that commands it execs start
// there. Without a namespace it just runs fn.
func (b *Backend) inNS(fn func() error) error {
	if b.ns == 0 {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("firewall ipt: current namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(netns.NsHandle(b.ns)); err != nil {
			errc <- fmt.Errorf("firewall ipt: enter namespace: %w", err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: it dies with this goroutine instead of being reused in
			// the wrong namespace.
			errc <- errors.Join(ferr, fmt.Errorf("firewall ipt: leave namespace: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

type family struct {
	ipt  *iptables.IPTables
	set  string
	inet uint8
	name string
}

func (b *Backend) families() []family {
	return []family{
		{b.ipt4, b.set4, unix.AF_INET, "iptables"},
		{b.ipt6, b.set6, unix.AF_INET6, "ip6tables"},
	}
}

// rules returns the chain's rules for one family: connections sesame admitted (conntrack mark
// bit firewall.ConnMark) are accepted, other established traffic returns to INPUT, a grant marks
// and accepts a new connection, and protected ports are dropped for everyone else.
func (b *Backend) rules(set string, gate firewall.Gate) [][]string {
	mark := fmt.Sprintf("%#x/%#x", firewall.ConnMark, firewall.ConnMark)
	seen := map[netport.Port]bool{}
	r := banRules(set, gate)
	// A TCP packet to a protected port in the reply direction belongs to a connection conntrack
	// picked up from the server's side (after sesame revoke --kill deleted its entry): drop it,
	// so the killed connection cannot come back as established (see the nft backend).
	for _, p := range gate.Protected {
		if p.Proto == netport.TCP && !seen[p] {
			seen[p] = true
			r = append(r, []string{"-p", "tcp", "--dport", strconv.Itoa(int(p.Num)), "-m", "conntrack", "--ctdir", "REPLY", "-j", "DROP"})
		}
	}
	clear(seen)
	r = append(r, [][]string{
		{"-m", "connmark", "--mark", mark, "-j", "ACCEPT"},
		{"-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "RETURN"},
		{"-m", "set", "--match-set", set, "src,dst", "-j", "CONNMARK", "--set-xmark", mark},
		{"-m", "set", "--match-set", set, "src,dst", "-j", "ACCEPT"},
	}...)
	for _, p := range gate.Protected {
		if seen[p] {
			continue
		}
		seen[p] = true
		r = append(r, []string{"-p", p.Proto.String(), "--dport", strconv.Itoa(int(p.Num)), "-j", "DROP"})
	}
	return append(r, []string{"-j", "RETURN"})
}

// ensureSet creates an ipset unless it exists; an existing one keeps its entries. A set of the
// wrong type or family is an error rather than something to replace behind the admin's back.
func (b *Backend) ensureSet(name string, fam uint8) error {
	res, err := b.h.IpsetList(name)
	if err == nil {
		if res.TypeName != setType || res.Family != fam {
			return fmt.Errorf("firewall ipt: ipset %s exists as %s family %d, want %s family %d: remove it", name, res.TypeName, res.Family, setType, fam)
		}
		if res.Timeout == nil {
			return fmt.Errorf("firewall ipt: ipset %s exists without timeout support: remove it", name)
		}
		return nil
	}
	timeout := uint32(setDefaultTimeout)
	if err := b.h.IpsetCreate(name, setType, netlink.IpsetCreateOptions{Family: fam, Timeout: &timeout}); err != nil {
		return fmt.Errorf("firewall ipt: create ipset %s: %w", name, err)
	}
	return nil
}

// Apply creates the ipsets if missing (keeping live entries), replaces the SESAME chain's rules
// and makes sure INPUT jumps to it first. The replacement never leaves a protected port open: the
// new rules are appended after the old ones, then the old ones are deleted from the last
// (the old final RETURN) to the first, so every port that either version protects stays
// dropped throughout.
func (b *Backend) Apply(ctx context.Context, gate firewall.Gate) error {
	if err := firewall.CheckGate(gate); err != nil {
		return fmt.Errorf("firewall ipt: %w", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return errClosed
	}
	for _, f := range b.families() {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := b.ensureSet(f.set, f.inet); err != nil {
			return err
		}
		if err := b.ensureBanSet(banSet(f.set), f.inet); err != nil {
			return err
		}
		err := b.inNS(func() error { return b.applyChain(f, gate) })
		if err != nil {
			return err
		}
	}
	return nil
}

func (b *Backend) applyChain(f family, gate firewall.Gate) error {
	ok, err := f.ipt.ChainExists(table, b.chain)
	if err != nil {
		return fmt.Errorf("firewall ipt: %s: %w", f.name, err)
	}
	if !ok {
		if err := f.ipt.NewChain(table, b.chain); err != nil {
			return fmt.Errorf("firewall ipt: %s -N %s: %w", f.name, b.chain, err)
		}
	}
	old, err := f.ipt.List(table, b.chain)
	if err != nil {
		return fmt.Errorf("firewall ipt: %s -S %s: %w", f.name, b.chain, err)
	}
	nold := 0
	for _, l := range old {
		if strings.HasPrefix(l, "-A ") {
			nold++
		}
	}
	for _, r := range stealthRules(b.rules(f.set, gate), f.inet, gate) {
		if err := f.ipt.Append(table, b.chain, r...); err != nil {
			return fmt.Errorf("firewall ipt: %s -A %s %s: %w", f.name, b.chain, strings.Join(r, " "), err)
		}
	}
	for i := nold; i >= 1; i-- {
		if err := f.ipt.DeleteById(table, b.chain, i); err != nil {
			return fmt.Errorf("firewall ipt: %s -D %s %d: %w", f.name, b.chain, i, err)
		}
	}
	return b.ensureJump(f)
}

// ensureJump makes "-j SESAME" the first rule of INPUT, and the only jump to it there. A missing
// jump is inserted before extra ones are removed, so there is no moment without one.
func (b *Backend) ensureJump(f family) error {
	jump := "-A " + inputChain + " -j " + b.chain
	rules, err := f.ipt.List(table, inputChain)
	if err != nil {
		return fmt.Errorf("firewall ipt: %s -S INPUT: %w", f.name, err)
	}
	// (go-iptables' ListById panics on an empty chain, so look at -S output instead.)
	if firstRule(rules) != jump {
		if err := f.ipt.Insert(table, inputChain, 1, "-j", b.chain); err != nil {
			return fmt.Errorf("firewall ipt: %s -I INPUT 1 -j %s: %w", f.name, b.chain, err)
		}
	}
	for {
		rules, err := f.ipt.List(table, inputChain)
		if err != nil {
			return fmt.Errorf("firewall ipt: %s -S INPUT: %w", f.name, err)
		}
		i := lastJump(rules, jump)
		if i <= 1 {
			return nil
		}
		if err := f.ipt.DeleteById(table, inputChain, i); err != nil {
			return fmt.Errorf("firewall ipt: %s: remove extra jump: %w", f.name, err)
		}
	}
}

// firstRule returns the first -A line of `iptables -S CHAIN` output, or "".
func firstRule(rules []string) string {
	for _, r := range rules {
		if strings.HasPrefix(r, "-A ") {
			return strings.TrimSpace(r)
		}
	}
	return ""
}

// lastJump returns the rule number (1-based, as in iptables -D INPUT N) of the last rule equal to
// jump, or 0. rules is `iptables -S INPUT` output: a -P line then -A lines.
func lastJump(rules []string, jump string) int {
	n, last := 0, 0
	for _, r := range rules {
		if !strings.HasPrefix(r, "-A ") {
			continue
		}
		n++
		if strings.TrimSpace(r) == jump {
			last = n
		}
	}
	return last
}

var errClosed = errors.New("firewall ipt: backend is closed")

func (b *Backend) setFor(a netip.Addr) string {
	if a.Unmap().Is4() {
		return b.set4
	}
	return b.set6
}

func entry(g firewall.Grant) *netlink.IPSetEntry {
	port := g.Port.Num
	proto := uint8(g.Port.Proto)
	return &netlink.IPSetEntry{IP: net.IP(g.Src.Unmap().AsSlice()), Port: &port, Protocol: &proto}
}

// seconds rounds a timeout up to ipset's whole seconds.
func seconds(d time.Duration) uint32 {
	s := (d + time.Second - 1) / time.Second
	if s > maxTimeout {
		s = maxTimeout
	}
	return uint32(s)
}

// Grant adds or refreshes grants; a refreshed grant gets the new timeout (ipset "-exist").
// Each grant is one netlink request, so a failure can leave earlier grants of the call in place.
func (b *Backend) Grant(ctx context.Context, grants ...firewall.Grant) error {
	if err := firewall.CheckGrants(grants, true); err != nil {
		return fmt.Errorf("firewall ipt: %w", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return errClosed
	}
	for _, g := range grants {
		if err := ctx.Err(); err != nil {
			return err
		}
		e := entry(g)
		t := seconds(g.Timeout)
		e.Timeout = &t
		e.Replace = true
		if err := b.h.IpsetAdd(b.setFor(g.Src), e); err != nil {
			return fmt.Errorf("firewall ipt: grant %s: %w", g, setError(b.setFor(g.Src), err))
		}
	}
	return nil
}

func setError(set string, err error) error {
	if errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("ipset %s is missing (Apply not called?): %w", set, err)
	}
	return err
}

// Revoke removes grants; absent grants (and absent sets) are ignored.
func (b *Backend) Revoke(ctx context.Context, grants ...firewall.Grant) error {
	if err := firewall.CheckGrants(grants, false); err != nil {
		return fmt.Errorf("firewall ipt: revoke: %w", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return errClosed
	}
	for _, g := range grants {
		err := b.h.IpsetDel(b.setFor(g.Src), entry(g))
		if err != nil && !isAbsent(err) {
			return fmt.Errorf("firewall ipt: revoke %s: %w", g, err)
		}
	}
	return nil
}

// isAbsent reports the errors ipset gives for a missing entry or set.
func isAbsent(err error) bool {
	var ie nl.IPSetError
	if errors.As(err, &ie) && ie == nl.IPSET_ERR_EXIST {
		return true
	}
	return errors.Is(err, syscall.ENOENT)
}

// List returns the live grants with whole seconds left.
func (b *Backend) List(ctx context.Context) ([]firewall.LiveGrant, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, errClosed
	}
	var out []firewall.LiveGrant
	for _, set := range []string{b.set4, b.set6} {
		res, err := b.h.IpsetList(set)
		if err != nil {
			return nil, fmt.Errorf("firewall ipt: list %s: %w", set, setError(set, err))
		}
		for _, e := range res.Entries {
			a, ok := netip.AddrFromSlice(e.IP)
			if !ok || e.Port == nil || e.Protocol == nil {
				continue
			}
			lg := firewall.LiveGrant{Src: a.Unmap(), Port: netport.Port{Proto: netport.Proto(*e.Protocol), Num: *e.Port}}
			if e.Timeout != nil {
				lg.Remaining = time.Duration(*e.Timeout) * time.Second
			}
			out = append(out, lg)
		}
	}
	return out, nil
}

// Close releases the netlink handle. With removeRules it deletes the jump, the chain and the
// sets, in that order (a set in use by a rule cannot be destroyed); without, everything stays
// and keeps gating.
func (b *Backend) Close(ctx context.Context, removeRules bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	defer b.h.Close()
	if !removeRules {
		return nil
	}
	var errs []error
	for _, f := range b.families() {
		err := b.inNS(func() error {
			for {
				ok, err := f.ipt.Exists(table, inputChain, "-j", b.chain)
				if err != nil || !ok {
					return err
				}
				if err := f.ipt.Delete(table, inputChain, "-j", b.chain); err != nil {
					return err
				}
			}
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("firewall ipt: %s: remove jump: %w", f.name, err))
			continue
		}
		err = b.inNS(func() error {
			ok, err := f.ipt.ChainExists(table, b.chain)
			if err != nil || !ok {
				return err
			}
			return f.ipt.ClearAndDeleteChain(table, b.chain)
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("firewall ipt: %s: remove chain %s: %w", f.name, b.chain, err))
			continue
		}
		for _, set := range []string{f.set, banSet(f.set)} {
			if err := b.h.IpsetDestroy(set); err != nil && !isAbsent(err) {
				errs = append(errs, fmt.Errorf("firewall ipt: destroy ipset %s: %w", set, err))
			}
		}
	}
	return errors.Join(errs...)
}
