package knock

import (
	"net/netip"
	"slices"
	"time"

	"github.com/sesame-knock/sesame/internal/netport"
)

// Knock is one packet that reached the state machine.
type Knock struct {
	Time     time.Time
	Src, Dst netip.Addr
	Element  Element
	TCPFlags uint8
}

// EventKind says what a knock did.
type EventKind uint8

// Event kinds.
const (
	// Stage: the knock advanced a door's sequence to Event.Stage (1-based).
	Stage EventKind = iota + 1
	// Opened: the knock completed a door's sequence.
	Opened
	// Timeout: a sequence in progress had run out of time before this knock.
	Timeout
	// Failed: the knock was not the next one of a sequence in progress, which is reset.
	Failed
	// TooFast: the knock came sooner than the door's min_gap after the previous one.
	TooFast
	// NotAllowed: the knock would have started a door, but the source may not knock on it.
	NotAllowed
	// Guarded: the source hit a guard port of the sweep guard; it is ignored for a while.
	Guarded
	// Ignored: the source is still guarded (after a guard hit); the knock was not looked at.
	Ignored
)

var eventNames = map[EventKind]string{
	Stage: "stage", Opened: "opened", Timeout: "timeout", Failed: "failed",
	TooFast: "too fast", NotAllowed: "source not allowed", Guarded: "sweep guard", Ignored: "ignored",
}

// String names the kind for logs.
func (k EventKind) String() string { return eventNames[k] }

// Event reports one thing a knock did to one door (Door is -1 for Guarded and Ignored).
type Event struct {
	Kind  EventKind
	Door  int
	Stage int
	Src   netip.Addr
}

// PortRange is an inclusive range of ports of one protocol.
type PortRange struct {
	Proto  netport.Proto
	Lo, Hi uint16
}

// Options tunes a Machine.
type Options struct {
	// MaxSources caps how many sources have state at once; when full, the source seen least
	// recently is forgotten. Values below 1 mean 1.
	MaxSources int
	// GuardWidth is the width of the sweep guard band on each side of every sequence port
	// (0: no guard). Exclude lists ports that are never guard ports (the opened services).
	GuardWidth int
	Exclude    []netport.Port
}

// Stats counts what the machine holds and has dropped.
type Stats struct {
	Sources int    // sources with state now
	Evicted uint64 // sources forgotten because MaxSources was reached
}

// Machine follows knock sequences per source. It is not safe for concurrent use: the server
// feeds it from one goroutine.
//
// The rules, per source and per door:
//   - the door's next element advances its sequence; the last one opens the door;
//   - an element the sequence has already consumed is ignored (a duplicate or a retransmitted
//     SYN never breaks a sequence);
//   - any other knock the machine sees from that source (a port of any door) resets it;
//   - a TCP knock whose flags do not match the door's condition is ignored by that door;
//   - a sequence runs out Timeout after its first knock, or MaxGap after its previous one;
//   - a knock on a guard port (within GuardWidth of a sequence port, but not itself one) resets
//     every sequence of that source and makes the machine ignore it until the longest door
//     timeout has passed since its last guard hit: a sweep cannot walk over the sequence.
//
// State of one source never depends on packets from another source.
type Machine struct {
	doors    []Door
	opts     Options
	guard    [2]*bitmap // TCP, UDP
	guardFor time.Duration
	targets  []netip.Addr // every door's Target: doors without one ignore knocks sent there
	sources  map[netip.Addr]*source
	head     *source // most recently seen
	tail     *source // least recently seen
	evicted  uint64
}

type attempt struct {
	stage       int
	first, last time.Time
}

type source struct {
	addr         netip.Addr
	attempts     []attempt
	guardedUntil time.Time
	lastSeen     time.Time
	prev, next   *source
}

type bitmap [65536 / 64]uint64

func (b *bitmap) set(p uint16)      { b[p>>6] |= 1 << (p & 63) }
func (b *bitmap) has(p uint16) bool { return b[p>>6]&(1<<(p&63)) != 0 }

// New returns a machine for doors. The doors must already be valid (non-empty sequences).
func New(doors []Door, opts Options) *Machine {
	if opts.MaxSources < 1 {
		opts.MaxSources = 1
	}
	m := &Machine{doors: slices.Clone(doors), opts: opts, sources: make(map[netip.Addr]*source)}
	for _, d := range doors {
		m.guardFor = max(m.guardFor, d.Timeout)
		if d.Target.IsValid() && !slices.Contains(m.targets, d.Target) {
			m.targets = append(m.targets, d.Target)
		}
	}
	if opts.GuardWidth > 0 {
		for _, r := range GuardRanges(doors, opts.GuardWidth, opts.Exclude) {
			b := m.guardBitmap(r.Proto, true)
			for p := int(r.Lo); p <= int(r.Hi); p++ {
				b.set(uint16(p))
			}
		}
	}
	return m
}

func (m *Machine) guardBitmap(p netport.Proto, create bool) *bitmap {
	i := 0
	switch p {
	case netport.TCP:
	case netport.UDP:
		i = 1
	default:
		return nil
	}
	if m.guard[i] == nil && create {
		m.guard[i] = new(bitmap)
	}
	return m.guard[i]
}

// GuardRanges returns the guard ports of doors for width: every TCP or UDP port within width of
// a sequence port of that protocol, except the sequence ports of every door and the excluded
// ports. The ranges are sorted and do not overlap.
func GuardRanges(doors []Door, width int, exclude []netport.Port) []PortRange {
	if width <= 0 {
		return nil
	}
	var out []PortRange
	for _, proto := range []netport.Proto{netport.TCP, netport.UDP} {
		var in, skip bitmap
		any := false
		for _, d := range doors {
			for _, e := range d.Sequence {
				if e.Proto != proto {
					continue
				}
				any = true
				skip.set(e.Num)
				lo, hi := max(1, int(e.Num)-width), min(65535, int(e.Num)+width)
				for p := lo; p <= hi; p++ {
					in.set(uint16(p))
				}
			}
		}
		if !any {
			continue
		}
		for _, e := range exclude {
			if e.Proto == proto {
				skip.set(e.Num)
			}
		}
		start := -1
		for p := 1; p <= 65536; p++ {
			on := p <= 65535 && in.has(uint16(p)) && !skip.has(uint16(p))
			switch {
			case on && start < 0:
				start = p
			case !on && start >= 0:
				out = append(out, PortRange{Proto: proto, Lo: uint16(start), Hi: uint16(p - 1)})
				start = -1
			}
		}
	}
	return out
}

// Observe feeds one knock to the machine and calls emit for everything it did, in order.
func (m *Machine) Observe(k Knock, emit func(Event)) {
	src := k.Src.Unmap()
	s := m.sources[src]
	if s != nil && k.Time.Before(s.guardedUntil) {
		if m.isGuard(k) {
			s.guardedUntil = k.Time.Add(m.guardFor)
		}
		m.touch(s, k.Time)
		emit(Event{Kind: Ignored, Door: -1, Src: src})
		return
	}
	if m.isGuard(k) {
		if s == nil {
			s = m.add(src, k.Time)
		}
		clear(s.attempts)
		s.guardedUntil = k.Time.Add(m.guardFor)
		m.touch(s, k.Time)
		emit(Event{Kind: Guarded, Door: -1, Src: src})
		return
	}
	for i := range m.doors {
		d := &m.doors[i]
		if d.Target.IsValid() && d.Target != k.Dst.Unmap() || !d.Target.IsValid() && slices.Contains(m.targets, k.Dst.Unmap()) {
			continue
		}
		if k.Element.Proto == netport.TCP && !d.Flags.Match(k.TCPFlags) {
			continue
		}
		var a *attempt
		if s != nil {
			a = &s.attempts[i]
		}
		if a != nil && a.stage > 0 {
			if k.Time.Sub(a.first) > d.Timeout || d.MaxGap > 0 && k.Time.Sub(a.last) > d.MaxGap {
				*a = attempt{}
				emit(Event{Kind: Timeout, Door: i, Src: src})
			}
		}
		if a == nil || a.stage == 0 {
			if k.Element != d.Sequence[0] {
				continue
			}
			if !d.AllowsSource(src) {
				emit(Event{Kind: NotAllowed, Door: i, Src: src})
				continue
			}
			if len(d.Sequence) == 1 {
				emit(Event{Kind: Opened, Door: i, Stage: 1, Src: src})
				continue
			}
			if s == nil {
				s = m.add(src, k.Time)
				a = &s.attempts[i]
			}
			*a = attempt{stage: 1, first: k.Time, last: k.Time}
			emit(Event{Kind: Stage, Door: i, Stage: 1, Src: src})
			continue
		}
		switch {
		case k.Element == d.Sequence[a.stage]:
			if d.MinGap > 0 && k.Time.Sub(a.last) < d.MinGap {
				*a = attempt{}
				emit(Event{Kind: TooFast, Door: i, Src: src})
				continue
			}
			a.stage++
			a.last = k.Time
			if a.stage == len(d.Sequence) {
				*a = attempt{}
				emit(Event{Kind: Opened, Door: i, Stage: len(d.Sequence), Src: src})
				continue
			}
			emit(Event{Kind: Stage, Door: i, Stage: a.stage, Src: src})
		case slices.Contains(d.Sequence[:a.stage], k.Element):
			// A duplicate or retransmission of a knock already counted.
		default:
			*a = attempt{}
			emit(Event{Kind: Failed, Door: i, Src: src})
		}
	}
	if s != nil {
		m.touch(s, k.Time)
		if s.idle() {
			m.remove(s)
		}
	}
}

func (m *Machine) isGuard(k Knock) bool {
	b := m.guardBitmap(k.Element.Proto, false)
	if b == nil || !b.has(k.Element.Num) {
		return false
	}
	// Only connection attempts count for TCP: a SYN without ACK.
	return k.Element.Proto != netport.TCP || k.TCPFlags&(SYN|ACK) == SYN
}

func (s *source) idle() bool {
	if !s.guardedUntil.IsZero() && s.lastSeen.Before(s.guardedUntil) {
		return false
	}
	for _, a := range s.attempts {
		if a.stage > 0 {
			return false
		}
	}
	return true
}

// Expire forgets sources whose every sequence has run out and whose guard has lapsed by now.
// The server calls it now and then; Observe is correct without it.
func (m *Machine) Expire(now time.Time) {
	for s := m.tail; s != nil; {
		prev := s.prev
		if now.Sub(s.lastSeen) <= m.guardFor && !s.expired(now, m.doors) {
			// Sources are ordered by last activity, so the rest are younger still.
			return
		}
		if s.expired(now, m.doors) {
			m.remove(s)
		}
		s = prev
	}
}

func (s *source) expired(now time.Time, doors []Door) bool {
	if now.Before(s.guardedUntil) {
		return false
	}
	for i, a := range s.attempts {
		if a.stage == 0 {
			continue
		}
		d := &doors[i]
		if now.Sub(a.first) <= d.Timeout && (d.MaxGap == 0 || now.Sub(a.last) <= d.MaxGap) {
			return false
		}
	}
	return true
}

// Stats returns counters.
func (m *Machine) Stats() Stats {
	return Stats{Sources: len(m.sources), Evicted: m.evicted}
}

// Progress returns the stage of src on every door (0: not started), for status displays.
func (m *Machine) Progress(src netip.Addr) []int {
	out := make([]int, len(m.doors))
	if s := m.sources[src.Unmap()]; s != nil {
		for i, a := range s.attempts {
			out[i] = a.stage
		}
	}
	return out
}

func (m *Machine) add(addr netip.Addr, now time.Time) *source {
	if len(m.sources) >= m.opts.MaxSources && m.tail != nil {
		m.remove(m.tail)
		m.evicted++
	}
	s := &source{addr: addr, attempts: make([]attempt, len(m.doors)), lastSeen: now}
	m.sources[addr] = s
	m.pushFront(s)
	return s
}

func (m *Machine) touch(s *source, now time.Time) {
	if now.After(s.lastSeen) {
		s.lastSeen = now
	}
	if m.head == s {
		return
	}
	m.unlink(s)
	m.pushFront(s)
}

func (m *Machine) remove(s *source) {
	m.unlink(s)
	delete(m.sources, s.addr)
}

func (m *Machine) pushFront(s *source) {
	s.prev, s.next = nil, m.head
	if m.head != nil {
		m.head.prev = s
	}
	m.head = s
	if m.tail == nil {
		m.tail = s
	}
}

func (m *Machine) unlink(s *source) {
	if s.prev != nil {
		s.prev.next = s.next
	} else if m.head == s {
		m.head = s.next
	}
	if s.next != nil {
		s.next.prev = s.prev
	} else if m.tail == s {
		m.tail = s.prev
	}
	s.prev, s.next = nil, nil
}
