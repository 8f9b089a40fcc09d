package doctor

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netns"

	"github.com/sesame-knock/sesame/internal/netport"
)

// traceTable is the doctor's own table in the scratch namespace: it marks the probe's packets
// (and the answers to them) for nftrace before any other chain sees them.
const traceTable = "sesame_doctor"

var traceRuleset = fmt.Sprintf(`table inet %[1]s {
	chain pre {
		type filter hook prerouting priority -2147483648; policy accept;
		ip saddr %[2]s meta nftrace set 1
	}
	chain out {
		type filter hook output priority -2147483648; policy accept;
		ip daddr %[2]s meta nftrace set 1
	}
}
`, traceTable, probeNet)

// maxEvents bounds the trace events kept; later ones are counted, not stored.
const maxEvents = 100000

// monitor runs `nft -a monitor trace` in the scratch namespace and keeps its events.
type monitor struct {
	cmd     *exec.Cmd
	mu      sync.Mutex
	events  []event
	dropped int
	done    chan struct{}
}

func startMonitor(ctx context.Context, ns netns.NsHandle) (*monitor, error) {
	m := &monitor{done: make(chan struct{})}
	var out io.ReadCloser
	err := inNS(ns, func() error {
		m.cmd = exec.CommandContext(ctx, "nft", "-a", "monitor", "trace")
		m.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		var err error
		if out, err = m.cmd.StdoutPipe(); err != nil {
			return err
		}
		return m.cmd.Start()
	})
	if err != nil {
		return nil, fmt.Errorf("doctor: nft monitor trace: %w", err)
	}
	go func() {
		defer close(m.done)
		p := newTraceParser()
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			e, ok := p.parse(sc.Text())
			if !ok {
				continue
			}
			m.mu.Lock()
			if len(m.events) < maxEvents {
				m.events = append(m.events, e)
			} else {
				m.dropped++
			}
			m.mu.Unlock()
		}
	}()
	return m, nil
}

func (m *monitor) stop() {
	if m.cmd.Process != nil {
		m.cmd.Process.Kill()
	}
	<-m.done
	m.cmd.Wait()
}

// mark is the number of events so far: events after it come from later packets.
func (m *monitor) mark() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.events)
}

// since returns the events from index i on.
func (m *monitor) since(i int) []event {
	m.mu.Lock()
	defer m.mu.Unlock()
	if i > len(m.events) {
		return nil
	}
	return append([]event(nil), m.events[i:]...)
}

// prober sends the test packets from the scratch client and runs the test service in the
// scratch server.
type prober struct {
	s       *scratch
	mon     *monitor
	timeout time.Duration
	sport   int // the next source port: every probe has its own, which picks its events out
}

func (p *prober) nextPort() int {
	p.sport++
	return p.sport
}

// sync sends a marker datagram and waits (bounded) until the monitor has traced it: every
// packet sent before it has been traced by then.
func (p *prober) sync(ctx context.Context) error {
	sport := p.nextPort()
	from := p.mon.mark()
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		err := inNS(p.s.cli, func() error {
			c, err := net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(probeGranted, uint16(sport))),
				net.UDPAddrFromAddrPort(netip.AddrPortFrom(p.s.dst, 9)))
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte("sync"))
			return err
		})
		if err != nil {
			return fmt.Errorf("doctor: marker packet: %w", err)
		}
		for range 10 {
			for _, e := range p.mon.since(from) {
				if e.pkt.proto == "udp" && e.pkt.sport == sport {
					return nil
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return errors.New("doctor: nft monitor trace shows no events (is nftrace supported by this kernel?)")
}

// service is the test service on one port of the scratch server: it greets each TCP
// connection and echoes every line or datagram.
type service struct {
	ln net.Listener
	pc net.PacketConn
}

func (p *prober) serve(port netport.Port) (*service, error) {
	sv := &service{}
	addr := netip.AddrPortFrom(netip.IPv4Unspecified(), port.Num).String()
	err := inNS(p.s.srv, func() (err error) {
		if port.Proto == netport.UDP {
			sv.pc, err = net.ListenPacket("udp4", addr)
			return err
		}
		sv.ln, err = net.Listen("tcp4", addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("doctor: test service on %s: %w", port, err)
	}
	if sv.pc != nil {
		go func() {
			buf := make([]byte, 512)
			for {
				n, from, err := sv.pc.ReadFrom(buf)
				if err != nil {
					return
				}
				sv.pc.WriteTo(append([]byte("echo "), buf[:n]...), from)
			}
		}()
		return sv, nil
	}
	go func() {
		for {
			c, err := sv.ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(time.Minute))
				fmt.Fprintln(c, "sesame-doctor")
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					fmt.Fprintf(c, "echo %s\n", sc.Text())
				}
			}()
		}
	}()
	return sv, nil
}

func (sv *service) close() {
	if sv.ln != nil {
		sv.ln.Close()
	}
	if sv.pc != nil {
		sv.pc.Close()
	}
}

// flow is one test connection (or UDP flow) from the scratch client.
type flow struct {
	c     net.Conn
	rd    *bufio.Reader
	src   netip.Addr
	sport int
	port  netport.Port
}

// result is how a probe ended, as the client saw it.
type result int

const (
	silent   result = iota // no answer before the timeout
	answered               // refused: a TCP reset or an ICMP error
	open                   // data both ways
)

// open starts a flow from src to port and proves it with data both ways: for TCP the
// greeting and an echo, for UDP an echo.
func (p *prober) open(port netport.Port, src netip.Addr, sport int) (*flow, result, error) {
	f := &flow{src: src, sport: sport, port: port}
	local := netip.AddrPortFrom(src, uint16(f.sport))
	dst := netip.AddrPortFrom(p.s.dst, port.Num)
	err := inNS(p.s.cli, func() (err error) {
		if port.Proto == netport.UDP {
			f.c, err = net.DialUDP("udp4", net.UDPAddrFromAddrPort(local), net.UDPAddrFromAddrPort(dst))
			return err
		}
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(local), Timeout: p.timeout}
		f.c, err = d.Dial("tcp4", dst.String())
		return err
	})
	if err != nil {
		return nil, classify(err), err
	}
	f.rd = bufio.NewReader(f.c)
	if port.Proto == netport.TCP {
		f.c.SetReadDeadline(time.Now().Add(p.timeout))
		if line, err := f.rd.ReadString('\n'); err != nil || line != "sesame-doctor\n" {
			f.close()
			return nil, classify(err), fmt.Errorf("greeting: read %q: %w", line, err)
		}
	}
	if err := f.talk("ping", p.timeout); err != nil {
		f.close()
		return nil, classify(err), err
	}
	return f, open, nil
}

// talk sends a line and waits for its echo.
func (f *flow) talk(what string, timeout time.Duration) error {
	f.c.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintf(f.c, "%s\n", what); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if f.port.Proto == netport.UDP {
		buf := make([]byte, 512)
		n, err := f.c.Read(buf)
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		if got := string(buf[:n]); got != "echo "+what+"\n" {
			return fmt.Errorf("read %q, want the echo", got)
		}
		return nil
	}
	line, err := f.rd.ReadString('\n')
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if line != "echo "+what+"\n" {
		return fmt.Errorf("read %q, want the echo", line)
	}
	return nil
}

func (f *flow) close() { f.c.Close() }

// classify tells a refusal (reset, ICMP error) from silence.
func classify(err error) result {
	switch {
	case err == nil:
		return open
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.EHOSTUNREACH),
		errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EACCES),
		errors.Is(err, syscall.EPERM), errors.Is(err, io.EOF):
		return answered
	}
	return silent
}

// trail is what the trace shows of the packets of one probe.
type trail struct {
	seen    bool
	drop    *event  // the rule or policy that dropped (or rejected) the packet
	dnat    *event  // a rule that rewrote the destination
	forward bool    // the packet went through a forward-hook chain
	accepts []event // accepts on the input hook
}

// follow collects the trail of the inbound packets from src:sport; syn picks the first packet
// of a connection (true) or later ones (false); for UDP every packet counts.
func follow(evs []event, hooks map[chainName]string, src netip.Addr, sport int, syn bool) trail {
	var p trail
	for i := range evs {
		e := evs[i]
		if e.table == traceTable || e.pkt.saddr != src.String() || e.pkt.sport != sport {
			continue
		}
		if e.pkt.proto == "tcp" && e.pkt.syn != syn {
			continue
		}
		p.seen = true
		if hooks[e.base] == "forward" {
			p.forward = true
		}
		switch {
		case e.isDNAT() && p.dnat == nil:
			p.dnat = &evs[i]
		case e.drops() && p.drop == nil:
			p.drop = &evs[i]
		case e.accepts() && hooks[e.base] == "input" && len(p.accepts) < 8:
			if !containsChain(p.accepts, e.base) {
				p.accepts = append(p.accepts, e)
			}
		}
	}
	return p
}

func containsChain(evs []event, c chainName) bool {
	for _, e := range evs {
		if e.base == c {
			return true
		}
	}
	return false
}

// reject reports whether the dropping rule answers (reject) instead of dropping silently.
func (p trail) rejects() bool {
	return p.drop != nil && strings.Contains(p.drop.rule, "reject")
}
