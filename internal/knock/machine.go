package knock

import (
	"hash/maphash"
	"math"
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
	// A TCP segment on a guard port counts when some door would count its flags as a knock
	// (see GuardFlags), so a FIN, NULL or ACK sweep is caught as surely as a SYN sweep.
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
//   - a knock on a guard port (within GuardWidth of a sequence port, but not itself one; for
//     TCP, a segment whose flags some door with a TCP knock accepts) resets every sequence of
//     that source and makes the machine ignore it until the longest door
//     timeout has passed since its last guard hit: a sweep cannot walk over the sequence.
//
// State of one source never depends on packets from another source.
type Machine struct {
	doors    []Door
	opts     Options
	guard    [2]*bitmap // TCP, UDP
	guardTCP []TCPFlags // a TCP segment on a guard port counts when it matches one of these
	guardFor time.Duration
	targets  []netip.Addr // every door's Target: doors without one ignore knocks sent there

	// Per-source state lives in slabs that grow up to MaxSources records and never shrink, so
	// that a source costs no allocation once they have grown: srcs holds the records, atts
	// their attempts (record i owns atts[i*len(doors) : (i+1)*len(doors)]), and index (an
	// open-addressing hash table sized with the slabs, see lookup) maps an address to its
	// record (a Go map would do, but under eviction churn it grows to about twice the size).
	// Records are linked by index into an LRU list (head: most recently seen) and, when
	// unused, into a free list through next.
	srcs    []source
	atts    []attempt
	head    int32   // most recently seen, or none
	tail    int32   // least recently seen, or none
	free    int32   // first unused record, or none
	n       int     // records in use
	index   []int32 // record index + 1; 0: empty slot. len is a power of two, at least 2*cap(srcs)
	seed    maphash.Seed
	evicted uint64
}

// none is the null record index.
const none = -1

// Times are kept as nanoseconds since the Unix epoch (see nanos).
type attempt struct {
	stage       int32 // 0: not started
	first, last int64
}

type source struct {
	addr         netip.Addr
	guardedUntil int64 // never: math.MinInt64
	lastSeen     int64
	prev, next   int32
}

type bitmap [65536 / 64]uint64

func (b *bitmap) set(p uint16)      { b[p>>6] |= 1 << (p & 63) }
func (b *bitmap) has(p uint16) bool { return b[p>>6]&(1<<(p&63)) != 0 }

// New returns a machine for doors. A door with an empty sequence is disabled until SetSequence
// gives it one; every other door must already be valid.
func New(doors []Door, opts Options) *Machine {
	if opts.MaxSources < 1 {
		opts.MaxSources = 1
	}
	m := &Machine{doors: slices.Clone(doors), opts: opts, head: none, tail: none, free: none, seed: maphash.MakeSeed()}
	for _, d := range doors {
		m.guardFor = max(m.guardFor, d.Timeout)
		if d.Target.IsValid() && !slices.Contains(m.targets, d.Target) {
			m.targets = append(m.targets, d.Target)
		}
	}
	if opts.GuardWidth > 0 {
		m.guardTCP = GuardFlags(doors)
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

// GuardFlags returns the flag conditions under which a TCP segment on a guard port counts as a
// sweep: the distinct conditions of every door with a TCP knock, since a segment one of those
// doors accepts could walk it. A door with no condition (knockd's default) makes every segment
// count. Nil when no door has a TCP knock.
func GuardFlags(doors []Door) []TCPFlags {
	var out []TCPFlags
	for _, d := range doors {
		if slices.ContainsFunc(d.Sequence, func(e Element) bool { return e.Proto == netport.TCP }) &&
			!slices.Contains(out, d.Flags) {
			out = append(out, d.Flags)
		}
	}
	return out
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
	now := nanos(k.Time)
	si := m.lookup(src)
	if si != none && now < m.srcs[si].guardedUntil {
		if m.isGuard(k) {
			m.srcs[si].guardedUntil = addSat(now, m.guardFor)
		}
		m.touch(si, now)
		emit(Event{Kind: Ignored, Door: -1, Src: src})
		return
	}
	if m.isGuard(k) {
		if si == none {
			si = m.add(src, now)
		}
		clear(m.attempts(si))
		m.srcs[si].guardedUntil = addSat(now, m.guardFor)
		m.touch(si, now)
		emit(Event{Kind: Guarded, Door: -1, Src: src})
		return
	}
	dst := k.Dst.Unmap()
	for i := range m.doors {
		d := &m.doors[i]
		if d.Target.IsValid() && d.Target != dst || !d.Target.IsValid() && slices.Contains(m.targets, dst) {
			continue
		}
		if len(d.Sequence) == 0 || k.Element.Proto == netport.TCP && !d.Flags.Match(k.TCPFlags) {
			continue
		}
		// a points into m.atts, which only add can move: add runs only while a is nil.
		var a *attempt
		if si != none {
			a = &m.atts[int(si)*len(m.doors)+i]
		}
		if a != nil && a.stage > 0 {
			if subSat(now, a.first) > d.Timeout || d.MaxGap > 0 && subSat(now, a.last) > d.MaxGap {
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
			if si == none {
				si = m.add(src, now)
				a = &m.atts[int(si)*len(m.doors)+i]
			}
			*a = attempt{stage: 1, first: now, last: now}
			emit(Event{Kind: Stage, Door: i, Stage: 1, Src: src})
			continue
		}
		switch {
		case k.Element == d.Sequence[a.stage]:
			if d.MinGap > 0 && subSat(now, a.last) < d.MinGap {
				*a = attempt{}
				emit(Event{Kind: TooFast, Door: i, Src: src})
				continue
			}
			a.stage++
			a.last = now
			if int(a.stage) == len(d.Sequence) {
				*a = attempt{}
				emit(Event{Kind: Opened, Door: i, Stage: len(d.Sequence), Src: src})
				continue
			}
			emit(Event{Kind: Stage, Door: i, Stage: int(a.stage), Src: src})
		case slices.Contains(d.Sequence[:a.stage], k.Element):
			// A duplicate or retransmission of a knock already counted.
		default:
			*a = attempt{}
			emit(Event{Kind: Failed, Door: i, Src: src})
		}
	}
	if si != none {
		m.touch(si, now)
		if m.idle(si) {
			m.remove(si)
		}
	}
}

func (m *Machine) isGuard(k Knock) bool {
	b := m.guardBitmap(k.Element.Proto, false)
	if b == nil || !b.has(k.Element.Num) {
		return false
	}
	if k.Element.Proto != netport.TCP {
		return true
	}
	// A TCP segment counts when some door would take its flags as a knock.
	for _, f := range m.guardTCP {
		if f.Match(k.TCPFlags) {
			return true
		}
	}
	return false
}

// nanos returns t as nanoseconds since the Unix epoch (t.UnixNano()), saturated at the bounds
// of int64 rather than undefined outside them: a zero Time is math.MinInt64.
func nanos(t time.Time) int64 { return int64(t.Sub(unixEpoch)) }

var unixEpoch = time.Unix(0, 0)

// addSat returns t+d (nanoseconds), saturated like time arithmetic.
func addSat(t int64, d time.Duration) int64 {
	s := t + int64(d)
	if d > 0 && s < t {
		return math.MaxInt64
	}
	if d < 0 && s > t {
		return math.MinInt64
	}
	return s
}

// subSat returns t-u as a Duration, saturated like time.Time.Sub.
func subSat(t, u int64) time.Duration {
	d := t - u
	if (t >= 0) != (u >= 0) && (d >= 0) != (t >= 0) {
		if t >= 0 {
			return math.MaxInt64
		}
		return math.MinInt64
	}
	return time.Duration(d)
}

// attempts returns the attempts of record si, one per door.
func (m *Machine) attempts(si int32) []attempt {
	n := len(m.doors)
	return m.atts[int(si)*n : int(si)*n+n : int(si)*n+n]
}

func (m *Machine) idle(si int32) bool {
	s := &m.srcs[si]
	if s.lastSeen < s.guardedUntil {
		return false
	}
	for _, a := range m.attempts(si) {
		if a.stage > 0 {
			return false
		}
	}
	return true
}

// Expire forgets sources whose every sequence has run out and whose guard has lapsed by now.
// The server calls it now and then; Observe is correct without it.
func (m *Machine) Expire(now time.Time) {
	t := nanos(now)
	for si := m.tail; si != none; {
		prev := m.srcs[si].prev
		expired := m.expired(si, t)
		if subSat(t, m.srcs[si].lastSeen) <= m.guardFor && !expired {
			// Sources are ordered by last activity, so the rest are younger still.
			return
		}
		if expired {
			m.remove(si)
		}
		si = prev
	}
}

func (m *Machine) expired(si int32, now int64) bool {
	if now < m.srcs[si].guardedUntil {
		return false
	}
	for i, a := range m.attempts(si) {
		if a.stage == 0 {
			continue
		}
		d := &m.doors[i]
		if subSat(now, a.first) <= d.Timeout && (d.MaxGap == 0 || subSat(now, a.last) <= d.MaxGap) {
			return false
		}
	}
	return true
}

// Stats returns counters.
func (m *Machine) Stats() Stats {
	return Stats{Sources: m.n, Evicted: m.evicted}
}

// Progress returns the stage of src on every door (0: not started), for status displays.
func (m *Machine) Progress(src netip.Addr) []int {
	out := make([]int, len(m.doors))
	if si := m.lookup(src.Unmap()); si != none {
		for i, a := range m.attempts(si) {
			out[i] = int(a.stage)
		}
	}
	return out
}

// add gives addr a record, seen now, with no attempt started and no guard. When MaxSources
// records are in use, the least recently seen source is forgotten for it.
func (m *Machine) add(addr netip.Addr, now int64) int32 {
	if m.n >= m.opts.MaxSources && m.tail != none {
		m.remove(m.tail)
		m.evicted++
	}
	si := m.free
	if si != none {
		m.free = m.srcs[si].next
	} else {
		m.grow()
		si = int32(len(m.srcs))
		m.srcs = m.srcs[:si+1]
		m.atts = m.atts[:len(m.atts)+len(m.doors)]
	}
	m.srcs[si] = source{addr: addr, guardedUntil: math.MinInt64, lastSeen: now, prev: none, next: none}
	clear(m.attempts(si))
	m.insert(si)
	m.n++
	m.pushFront(si)
	return si
}

// grow makes room for one more record in the slabs, growing them in chunks (doubling, from
// minChunk) up to MaxSources records and never beyond.
func (m *Machine) grow() {
	if len(m.srcs) < cap(m.srcs) {
		return
	}
	n := min(m.opts.MaxSources, max(minChunk, 2*cap(m.srcs)))
	srcs := make([]source, len(m.srcs), n)
	copy(srcs, m.srcs)
	atts := make([]attempt, len(m.atts), n*len(m.doors))
	copy(atts, m.atts)
	m.srcs, m.atts = srcs, atts
	// Every record is in use (the free list is empty): index them all anew.
	size := 1
	for size < 2*n {
		size *= 2
	}
	m.index = make([]int32, size)
	for si := range m.srcs {
		m.insert(int32(si))
	}
}

const minChunk = 256

func (m *Machine) touch(si int32, now int64) {
	s := &m.srcs[si]
	if now > s.lastSeen {
		s.lastSeen = now
	}
	if m.head == si {
		return
	}
	m.unlink(si)
	m.pushFront(si)
}

// remove forgets record si and puts it on the free list.
func (m *Machine) remove(si int32) {
	m.unlink(si)
	m.unindex(si)
	m.n--
	m.srcs[si] = source{prev: none, next: m.free}
	m.free = si
}

func (m *Machine) pushFront(si int32) {
	s := &m.srcs[si]
	s.prev, s.next = none, m.head
	if m.head != none {
		m.srcs[m.head].prev = si
	}
	m.head = si
	if m.tail == none {
		m.tail = si
	}
}

func (m *Machine) unlink(si int32) {
	s := &m.srcs[si]
	if s.prev != none {
		m.srcs[s.prev].next = s.next
	} else if m.head == si {
		m.head = s.next
	}
	if s.next != none {
		m.srcs[s.next].prev = s.prev
	} else if m.tail == si {
		m.tail = s.prev
	}
	s.prev, s.next = none, none
}

// The index is a linear-probing hash table of record indexes (plus one), at most half full,
// with a per-machine random hash seed so that a flood of chosen addresses cannot pile up on
// one slot. Deletion shifts the following entries back, so no tombstones build up.

func (m *Machine) hash(addr netip.Addr) uint64 {
	b := addr.As16() // the zone, if any, only takes part in comparisons
	return maphash.Bytes(m.seed, b[:])
}

// lookup returns the record of addr, or none.
func (m *Machine) lookup(addr netip.Addr) int32 {
	if len(m.index) == 0 {
		return none
	}
	mask := uint64(len(m.index) - 1)
	for i := m.hash(addr) & mask; ; i = (i + 1) & mask {
		e := m.index[i]
		if e == 0 {
			return none
		}
		if m.srcs[e-1].addr == addr {
			return e - 1
		}
	}
}

// insert indexes record si, which must not be indexed yet.
func (m *Machine) insert(si int32) {
	mask := uint64(len(m.index) - 1)
	i := m.hash(m.srcs[si].addr) & mask
	for m.index[i] != 0 {
		i = (i + 1) & mask
	}
	m.index[i] = si + 1
}

// unindex removes record si from the index.
func (m *Machine) unindex(si int32) {
	mask := uint64(len(m.index) - 1)
	i := m.hash(m.srcs[si].addr) & mask
	for m.index[i] != si+1 {
		i = (i + 1) & mask
	}
	// Move back every following entry of the run that may not stay behind the hole at i.
	for j := (i + 1) & mask; m.index[j] != 0; j = (j + 1) & mask {
		home := m.hash(m.srcs[m.index[j]-1].addr) & mask
		// The entry at j can stay if its home is cyclically within (i, j].
		if i <= j && i < home && home <= j || i > j && (i < home || home <= j) {
			continue
		}
		m.index[i] = m.index[j]
		i = j
	}
	m.index[i] = 0
}

// SetSequence replaces the sequence of door i (an empty one disables the door) and forgets
// every source's progress on that door alone: the other doors' knocks in progress stay. A
// rotating door uses it to move one of its windows on (see internal/rotate).
func (m *Machine) SetSequence(i int, seq []Element) {
	m.doors[i].Sequence = slices.Clone(seq)
	n := len(m.doors)
	for si := range m.srcs {
		m.atts[si*n+i] = attempt{}
	}
}

// GuardRange makes every port of r a guard port except those in keep (the ports of the
// sequences armed in the range), and counts a TCP segment on them that matches flags (see
// Options.GuardWidth). A rotating door guards its whole port range this way, so that a sweep of
// the range hits a guard port long before it could walk a derived sequence; it calls
// GuardRange again each time it arms other sequences.
func (m *Machine) GuardRange(r PortRange, flags TCPFlags, keep []Element) {
	b := m.guardBitmap(r.Proto, true)
	if b == nil || r.Lo == 0 || r.Hi < r.Lo {
		return
	}
	for p := int(r.Lo); p <= int(r.Hi); p++ {
		b.set(uint16(p))
	}
	for _, e := range keep {
		if e.Proto == r.Proto && e.Num >= r.Lo && e.Num <= r.Hi {
			b[e.Num>>6] &^= 1 << (e.Num & 63)
		}
	}
	if r.Proto == netport.TCP && !slices.Contains(m.guardTCP, flags) {
		m.guardTCP = append(m.guardTCP, flags)
	}
}

// Forget drops everything the machine knows of src: its knocks in progress and its sweep guard
// penalty (an operator lifted its ban, or it proved a key).
func (m *Machine) Forget(src netip.Addr) {
	if si := m.lookup(src.Unmap()); si != none {
		m.remove(si)
	}
}
