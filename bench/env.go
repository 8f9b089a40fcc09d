//go:build linux

package main

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sesame-knock/sesame/internal/benchkit"
	"github.com/sesame-knock/sesame/internal/fwknop"
	"github.com/sesame-knock/sesame/internal/knockclient"
	"github.com/sesame-knock/sesame/internal/netnsbed"
	"github.com/sesame-knock/sesame/internal/netport"
	"github.com/sesame-knock/sesame/internal/spa"
)

// The door every daemon runs: the same sequence, the same protected service.
var (
	knockSeq = []netport.Port{{Proto: netport.TCP, Num: 7000}, {Proto: netport.UDP, Num: 8000}, {Proto: netport.TCP, Num: 9000}}
	svcPort  = uint16(2222)
	spaPort  = uint16(62201)
	service  = netip.AddrPortFrom(netnsbed.Server4, svcPort)
	// spoofNet is where spoofed sources come from; the bed has no route back to it.
	spoofNet = netip.MustParsePrefix("10.0.0.0/8")
)

// Daemons and the ways a legitimate client opens them.
const (
	dSesame  = "sesame"
	dKnockd  = "knockd"
	dFwknopd = "fwknopd"
	mKnock   = "knock"
	mSPA     = "spa"
)

// subject is one daemon opened one way.
type subject struct{ Daemon, Method string }

func (s subject) String() string {
	switch s.Daemon {
	case dSesame:
		if s.Method == mSPA {
			return "sesame (SPA)"
		}
		return "sesame (knock)"
	case dFwknopd:
		return "fwknopd (SPA, UDP)"
	}
	return s.Daemon
}

// registry tracks everything the harness created, so that an interrupt removes it all.
var registry = struct {
	sync.Mutex
	beds    map[*netnsbed.Bed]bool
	daemons map[*daemon]bool
}{beds: map[*netnsbed.Bed]bool{}, daemons: map[*daemon]bool{}}

func cleanupAll() {
	registry.Lock()
	defer registry.Unlock()
	for d := range registry.daemons {
		d.kill()
	}
	for b := range registry.beds {
		b.Close()
	}
	registry.daemons = map[*daemon]bool{}
	registry.beds = map[*netnsbed.Bed]bool{}
}

// daemon is one started daemon process.
type daemon struct {
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b.Len() > 1<<20 {
		return len(p), nil // keep memory bounded under chatty daemons
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startDaemon(ns, name string, args ...string) (*daemon, error) {
	return startDaemonEnv(ns, nil, name, args...)
}

// startDaemonEnv starts name in ns with env added to the environment.
func startDaemonEnv(ns string, env []string, name string, args ...string) (*daemon, error) {
	d := &daemon{name: filepath.Base(name), out: &syncBuffer{}, done: make(chan struct{})}
	// ip netns exec execs the program: the PID is the daemon's own.
	d.cmd = netnsbed.Command(context.Background(), ns, name, args...)
	if env != nil {
		d.cmd.Env = append(os.Environ(), env...)
	}
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	registry.Lock()
	registry.daemons[d] = true
	registry.Unlock()
	go func() { d.err = d.cmd.Wait(); close(d.done) }()
	return d, nil
}

func (d *daemon) pid() int { return d.cmd.Process.Pid }

func (d *daemon) alive() bool {
	select {
	case <-d.done:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM, waits up to 5 s, then SIGKILL.
func (d *daemon) stop() {
	registry.Lock()
	delete(registry.daemons, d)
	registry.Unlock()
	if !d.alive() {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(5 * time.Second):
		d.kill()
	}
}

func (d *daemon) kill() {
	if d.alive() {
		_ = d.cmd.Process.Kill()
		select {
		case <-d.done:
		case <-time.After(2 * time.Second):
		}
	}
}

func (d *daemon) usage() benchkit.ProcUsage {
	u, _ := benchkit.ReadProc(d.pid())
	return u
}

// env is one bed with one daemon running in its server namespace.
type env struct {
	h      *harness
	bed    *netnsbed.Bed
	link   benchkit.Link
	dir    string
	daemon string
	d      *daemon
	spaOK  bool
	pool   []netip.Addr // fresh client addresses
	ctx    context.Context
	cancel context.CancelFunc
}

// newEnv builds a bed and starts daemon in it.
func (h *harness) newEnv(daemonName string, addrs int) (*env, error) {
	ctx, cancel := context.WithCancel(h.ctx)
	t0 := time.Now()
	defer func() { h.res.SetupSeconds += time.Since(t0).Seconds() }()
	// Beds are reused (a new one costs about 2 s of IPv6 link-local DAD): between daemons the
	// server namespace's whole ruleset is flushed.
	var bed *netnsbed.Bed
	if n := len(h.idle); n > 0 {
		bed, h.idle = h.idle[n-1], h.idle[:n-1]
	} else {
		var err error
		if bed, err = netnsbed.New(ctx); err != nil {
			cancel()
			return nil, err
		}
		registry.Lock()
		registry.beds[bed] = true
		registry.Unlock()
	}
	e := &env{h: h, bed: bed, daemon: daemonName, ctx: ctx, cancel: cancel}
	if err := e.setup(addrs); err != nil {
		e.close()
		return nil, fmt.Errorf("%s: %w", daemonName, err)
	}
	return e, nil
}

func (e *env) close() {
	if e.d != nil {
		e.d.stop()
	}
	if err := e.run(e.bed.Server, "nft", "flush", "ruleset"); err != nil {
		// A bed that cannot be cleaned is not reused.
		registry.Lock()
		delete(registry.beds, e.bed)
		registry.Unlock()
		e.bed.Close()
	} else {
		e.h.idle = append(e.h.idle, e.bed)
	}
	e.cancel()
	if e.dir != "" {
		os.RemoveAll(e.dir)
	}
}

func (e *env) run(ns string, args ...string) error {
	out, err := netnsbed.Command(e.ctx, ns, args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (e *env) runInput(ns, input string, args ...string) error {
	cmd := netnsbed.Command(e.ctx, ns, args[0], args[1:]...)
	cmd.Stdin = strings.NewReader(input)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (e *env) setup(addrs int) error {
	dir, err := os.MkdirTemp("", "sesame-bench-")
	if err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	e.dir = dir
	srv := e.bed.Server
	// Spoofed sources: no reverse-path check (fwknopd's UDP socket must see them) and no
	// conntrack entries (a flood of random sources would otherwise fill the table and break
	// every daemon's legitimate connections alike; that is a host limit, not the daemon's).
	for _, k := range []string{"net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0", "net.ipv4.conf.eth0.rp_filter=0"} {
		if err := e.run(srv, "sysctl", "-qw", k); err != nil {
			return err
		}
	}
	base := `table inet benchbed {
	chain pre { type filter hook prerouting priority raw; policy accept; ip saddr 10.0.0.0/8 notrack; }
}
`
	if err := e.runInput(srv, base, "nft", "-f", "-"); err != nil {
		return err
	}
	if _, err := netnsbed.Listen(e.ctx, srv, service); err != nil {
		return err
	}
	if e.link, err = benchkit.LinkBetween(e.bed.Client, e.bed.ClientIf, srv, e.bed.ServerIf); err != nil {
		return err
	}
	if addrs > 0 {
		if err := e.addAddrs(addrs); err != nil {
			return err
		}
	}
	switch e.daemon {
	case dSesame:
		return e.startSesame()
	case dKnockd:
		return e.startKnockd()
	case dFwknopd:
		return e.startFwknopd()
	case "none":
		return nil
	}
	return fmt.Errorf("unknown daemon %q", e.daemon)
}

// addAddrs adds n client addresses to the pool. The server learns their MAC statically: the
// ARP table is shared by all namespaces and holds 1024 dynamic entries by default, which
// thousands of fresh clients would overflow ("neighbor table overflow") and so break the
// bed rather than the daemon.
func (e *env) addAddrs(n int) error {
	more, err := e.bed.AddClientAddrs(e.ctx, n, false)
	if err != nil {
		return err
	}
	var b strings.Builder
	for _, a := range more {
		fmt.Fprintf(&b, "neigh replace %s lladdr %s dev %s nud permanent\n", a, e.link.Src, e.bed.ServerIf)
	}
	if err := e.runInput(e.bed.Server, b.String(), "ip", "-batch", "-"); err != nil {
		return err
	}
	e.pool = append(e.pool, more...)
	return nil
}

// addr takes a fresh client address.
func (e *env) addr() (netip.Addr, error) {
	if len(e.pool) == 0 {
		if err := e.addAddrs(50); err != nil {
			return netip.Addr{}, err
		}
	}
	a := e.pool[0]
	e.pool = e.pool[1:]
	return a, nil
}

func (e *env) startSesame() error {
	h := e.h
	key, err := spa.GenerateSharedKey(crand.Reader)
	if err != nil {
		return err
	}
	keyText, _ := key.MarshalText()
	keyFile := filepath.Join(e.dir, "bench.key")
	if err := os.WriteFile(keyFile, append(keyText, '\n'), 0o600); err != nil {
		return err
	}
	h.sesameKey = key
	door := fmt.Sprintf(`[server]
firewall = "nftables"
state_dir = %q

[[door]]
name = "ssh"
sequence = ["7000/tcp", "8000/udp", "9000/tcp"]
sequence_timeout = "5s"
open = ["tcp/2222"]
open_for = "10m"
`, filepath.Join(e.dir, "state"))
	spaConf := fmt.Sprintf(`
[spa]
listen = "udp/%d"

[[spa.client]]
name = "bench"
key_file = %q
open = ["tcp/2222"]
default_open_for = "5m"
`, spaPort, keyFile)
	path := filepath.Join(e.dir, "sesame.toml")
	withSPA := h.spaAvailable != "no"
	conf := door
	if withSPA {
		conf += spaConf
	}
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return err
	}
	start := func() error {
		d, err := startDaemonEnv(e.bed.Server, h.sesameEnv, h.sesameBin, "server", "-c", path, "--log-level", "warn")
		if err != nil {
			return err
		}
		e.d = d
		// Ready once the gate exists.
		ok := waitFor(10*time.Second, func() bool {
			return d.alive() && e.run(e.bed.Server, "nft", "list", "set", "inet", "sesame", "grants4") == nil
		})
		if !ok {
			d.stop()
			e.d = nil
			return fmt.Errorf("sesame did not start: %s", d.out.String())
		}
		return nil
	}
	err = start()
	if err != nil && withSPA && h.spaAvailable == "" {
		// This sesame does not take an [spa] section yet: run the door alone.
		h.spaAvailable = "no"
		h.spaNote = firstLine(err.Error())
		if err := os.WriteFile(path, []byte(door), 0o600); err != nil {
			return err
		}
		return start()
	}
	if err != nil {
		return err
	}
	if withSPA && h.spaAvailable == "" {
		// The section parsed; check that SPA actually opens the gate.
		a, err := e.addr()
		if err != nil {
			return err
		}
		if _, err := e.open(subject{dSesame, mSPA}, a, 3*time.Second); err != nil {
			h.spaAvailable = "no"
			h.spaNote = "sesame server accepted [spa] but a valid SPA packet did not open the gate: " + err.Error()
		} else {
			h.spaAvailable = "yes"
		}
	}
	e.spaOK = h.spaAvailable == "yes"
	return nil
}

func (e *env) startKnockd() error {
	knockd, err := exec.LookPath("knockd")
	if err != nil {
		return errors.New("knockd not installed")
	}
	for _, args := range [][]string{
		{"iptables", "-A", "INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"},
		{"iptables", "-A", "INPUT", "-p", "tcp", "--dport", "2222", "-j", "DROP"},
	} {
		if err := e.run(e.bed.Server, args...); err != nil {
			return err
		}
	}
	conf := fmt.Sprintf(`[options]
	LogFile = %s/knockd.log

[openSSH]
	sequence    = 7000,8000:udp,9000
	seq_timeout = 5
	tcpflags    = syn
	command     = /usr/sbin/iptables -I INPUT -s %%IP%% -p tcp --dport 2222 -j ACCEPT
`, e.dir)
	path := filepath.Join(e.dir, "knockd.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return err
	}
	d, err := startDaemon(e.bed.Server, knockd, "-i", e.bed.ServerIf, "-c", path)
	if err != nil {
		return err
	}
	e.d = d
	if !waitFor(10*time.Second, func() bool {
		b, _ := os.ReadFile(filepath.Join(e.dir, "knockd.log"))
		return len(b) > 0
	}) {
		return fmt.Errorf("knockd did not start: %s", d.out.String())
	}
	return nil
}

func (e *env) startFwknopd() error {
	h := e.h
	fw, err := exec.LookPath("fwknopd")
	if err != nil {
		return errors.New("fwknopd not installed")
	}
	if err := e.run(e.bed.Server, "iptables", "-A", "INPUT", "-p", "tcp", "--dport", "2222", "-j", "DROP"); err != nil {
		return err
	}
	run := filepath.Join(e.dir, "run")
	if err := os.MkdirAll(run, 0o700); err != nil {
		return err
	}
	conf := fmt.Sprintf(`ENABLE_UDP_SERVER           Y;
UDPSERV_PORT                %d;
ENABLE_SPA_PACKET_AGING     Y;
MAX_SPA_PACKET_AGE          120;
ENABLE_DIGEST_PERSISTENCE   Y;
FWKNOP_RUN_DIR              %s;
FLUSH_IPT_AT_INIT           Y;
FLUSH_IPT_AT_EXIT           Y;
`, spaPort, run)
	access := fmt.Sprintf(`SOURCE              ANY
KEY_BASE64          %s
HMAC_KEY_BASE64     %s
FW_ACCESS_TIMEOUT   300
MAX_FW_TIMEOUT      600
`, base64.StdEncoding.EncodeToString(h.fwKeys.Key), base64.StdEncoding.EncodeToString(h.fwKeys.HMACKey))
	cf, af := filepath.Join(e.dir, "fwknopd.conf"), filepath.Join(e.dir, "access.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(af, []byte(access), 0o600); err != nil {
		return err
	}
	d, err := startDaemon(e.bed.Server, fw, "-f", "-c", cf, "-a", af,
		"-d", filepath.Join(run, "digest.cache"), "-p", filepath.Join(run, "fwknopd.pid"))
	if err != nil {
		return err
	}
	e.d = d
	// Ready once its UDP port is taken and its chain exists.
	if !waitFor(15*time.Second, func() bool {
		return d.alive() && udpBound(e.bed.Server, spaPort) && e.run(e.bed.Server, "iptables", "-S", "FWKNOP_INPUT") == nil
	}) {
		return fmt.Errorf("fwknopd did not start: %s", d.out.String())
	}
	return nil
}

// udpBound reports whether something in ns listens on UDP port.
func udpBound(ns string, port uint16) bool {
	bound := false
	_ = netnsbed.Do(ns, func() error {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{Port: int(port)})
		if err != nil {
			bound = errors.Is(err, syscall.EADDRINUSE)
			return nil
		}
		c.Close()
		return nil
	})
	return bound
}

func waitFor(limit time.Duration, f func() bool) bool {
	end := time.Now().Add(limit)
	for time.Now().Before(end) {
		if f() {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

// spaPacket builds a valid SPA packet of s's daemon asking for the service for src.
func (h *harness) spaPacket(daemon string, src netip.Addr) ([]byte, error) {
	if daemon == dFwknopd {
		m := &fwknop.Message{User: "bench", Timestamp: time.Now(), Type: fwknop.TypeAccess, AllowIP: src,
			Ports: []netport.Port{{Proto: netport.TCP, Num: svcPort}}}
		return fwknop.Encode(m, h.fwKeys, crand.Reader)
	}
	k := h.sesameKey
	return spa.Seal(spa.Request{Ports: []netport.Port{{Proto: netport.TCP, Num: svcPort}}},
		spa.ClientCredential{ID: "bench", Shared: &k}, time.Now(), crand.Reader)
}

// wrongKeyPackets returns n well-formed packets of daemon's format under a wrong key. sesame's
// carry the right key hint, so each one costs the server a full AEAD open.
func (h *harness) wrongKeyPackets(daemon string, n int) ([][]byte, error) {
	out := make([][]byte, 0, n)
	if daemon == dFwknopd {
		bad := fwknop.Keys{Key: randBytes(32), HMACKey: randBytes(64)}
		for range n {
			m := &fwknop.Message{User: "bench", Timestamp: time.Now(), Type: fwknop.TypeAccess,
				AllowIP: netip.IPv4Unspecified(), Ports: []netport.Port{{Proto: netport.TCP, Num: svcPort}}}
			p, err := fwknop.Encode(m, bad, crand.Reader)
			if err != nil {
				return nil, err
			}
			out = append(out, p)
		}
		return out, nil
	}
	bad, err := spa.GenerateSharedKey(crand.Reader)
	if err != nil {
		return nil, err
	}
	hint := h.sesameKey.Hint()
	for range n {
		p, err := spa.Seal(spa.Request{Ports: []netport.Port{{Proto: netport.TCP, Num: svcPort}}},
			spa.ClientCredential{ID: "bench", Shared: &bad}, time.Now(), crand.Reader)
		if err != nil {
			return nil, err
		}
		copy(p[spa.HeaderLen-len(hint):spa.HeaderLen], hint[:])
		out = append(out, p)
	}
	return out, nil
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = crand.Read(b)
	return b
}

// open makes one legitimate open of subject s from src and returns the time from the last
// packet leaving to a TCP connection to the service succeeding.
func (e *env) open(s subject, src netip.Addr, limit time.Duration) (time.Duration, error) {
	var pkt []byte
	if s.Method == mSPA {
		var err error
		if pkt, err = e.h.spaPacket(s.Daemon, src); err != nil {
			return 0, err
		}
	}
	var lat time.Duration
	err := netnsbed.Do(e.bed.Client, func() error {
		// The clock starts as the SPA packet or the last knock leaves.
		var start time.Time
		if s.Method == mSPA {
			c, err := net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)),
				net.UDPAddrFromAddrPort(netip.AddrPortFrom(netnsbed.Server4, spaPort)))
			if err != nil {
				return err
			}
			start = time.Now()
			_, err = c.Write(pkt)
			c.Close()
			if err != nil {
				return err
			}
		} else {
			for _, el := range knockSeq {
				start = time.Now()
				if err := knockclient.SendOne(e.ctx, src, netnsbed.Server4, el); err != nil {
					return err
				}
			}
		}
		var err error
		lat, err = benchkit.ProbeConnect(src, service, start, limit)
		return err
	})
	return lat, err
}
