package server

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	"github.com/sesame-knock/sesame/internal/capture"
	"github.com/sesame-knock/sesame/internal/config"
	"github.com/sesame-knock/sesame/internal/knock"
	"github.com/sesame-knock/sesame/internal/netport"
	"github.com/sesame-knock/sesame/internal/rotate"
)

// Rotating doors (docs/PROTOCOL.md, "Rotating knock sequences"). Each rotating door of a
// configuration has, in the state's knock machine, 3 × Uses doors after the configuration's
// own: slot s = window mod 3 holds the Uses sequences of one window. At any time the slots hold
// the previous, the current and the next window, so the capture filter passes the next
// window's knocks before its boundary and the previous window's while they are valid; moving
// on re-arms only the slot of the window that expired, and knocks in progress on the others
// stay.

// rotDoor is one rotating door of a state; the server's mu guards it.
type rotDoor struct {
	cfg   int // index in cfg.Doors
	door  *config.Door
	base  int      // machine index of slot 0, counter 0
	armed [3]int64 // window armed in slot s
	seqs  [3][][]knock.Element
	isSet [3]bool
}

// rotation is the rotating doors of a state.
type rotation struct {
	doors []rotDoor
	guard bool   // the sweep guard is on: the whole range of each door is guarded
	gen   uint64 // counts changes of the armed sequences, for the capture filter
	// failedGen is the generation whose filter the kernel last refused (0: none).
	failedGen uint64
}

// newRotation lists cfg's rotating doors; machine doors base onward are theirs.
func newRotation(cfg *config.Config, base int) (*rotation, []knock.Door) {
	r := &rotation{guard: cfg.Server.SweepGuard > 0}
	var extra []knock.Door
	for i := range cfg.Doors {
		d := &cfg.Doors[i]
		if d.Rotate == nil {
			continue
		}
		r.doors = append(r.doors, rotDoor{cfg: i, door: d, base: base + len(extra)})
		kd := d.Door
		kd.Sequence = nil
		for range 3 * d.Rotate.Uses {
			extra = append(extra, kd)
		}
	}
	return r, extra
}

// slot returns s = w mod 3 (0-2, also for negative w).
func slot(w int64) int { return int(((w % 3) + 3) % 3) }

// arm puts the previous, current and next window of now into m, re-deriving only the slots
// whose window changed; it reports whether any did.
func (r *rotation) arm(m *knock.Machine, now time.Time) bool {
	changed := false
	for i := range r.doors {
		rd := &r.doors[i]
		rot := rd.door.Rotate
		w := rot.Window(now)
		doorChanged := false
		for ww := w - 1; ww <= w+1; ww++ {
			s := slot(ww)
			if rd.isSet[s] && rd.armed[s] == ww {
				continue
			}
			rd.armed[s], rd.isSet[s], doorChanged = ww, true, true
			rd.seqs[s] = rd.seqs[s][:0]
			for c := range rot.Uses {
				seq, err := rotate.Sequence(rot.Secret[:], rot.Params, ww, uint32(c))
				if err != nil { // not with a validated configuration: the door stays shut
					seq = nil
				}
				rd.seqs[s] = append(rd.seqs[s], seq)
				m.SetSequence(rd.base+s*rot.Uses+c, seq)
			}
		}
		if doorChanged && r.guard {
			var keep []knock.Element
			for _, seqs := range rd.seqs {
				for _, seq := range seqs {
					keep = append(keep, seq...)
				}
			}
			m.GuardRange(knock.PortRange{Proto: rot.Proto, Lo: rot.Lo, Hi: rot.Hi}, rd.door.Flags, keep)
		}
		changed = changed || doorChanged
	}
	if changed {
		r.gen++
	}
	return changed
}

// lookup returns the rotating door of machine door i, with the window and counter of its
// sequence; ok is false when i is a door of the configuration itself.
func (r *rotation) lookup(i int) (rd *rotDoor, window int64, counter int, ok bool) {
	for j := range r.doors {
		rd := &r.doors[j]
		n := 3 * rd.door.Rotate.Uses
		if i >= rd.base && i < rd.base+n {
			k := i - rd.base
			s := k / rd.door.Rotate.Uses
			return rd, rd.armed[s], k % rd.door.Rotate.Uses, true
		}
	}
	return nil, 0, 0, false
}

// addFilter adds the armed sequences (and, with the sweep guard, each door's range) to f.
func (r *rotation) addFilter(f *capture.Filter) {
	for _, rd := range r.doors {
		rot := rd.door.Rotate
		for _, seqs := range rd.seqs {
			for _, seq := range seqs {
				for _, e := range seq {
					k := capture.Knock{Port: e}
					if e.Proto == netport.TCP {
						k.Flags = rd.door.Flags
					}
					if !slices.Contains(f.Knocks, k) {
						f.Knocks = append(f.Knocks, k)
					}
				}
			}
		}
		if r.guard {
			f.Guards = append(f.Guards, capture.PortRange{Proto: rot.Proto, Lo: rot.Lo, Hi: rot.Hi})
			if rot.Proto == netport.TCP && !slices.Contains(f.GuardFlags, rd.door.Flags) {
				f.GuardFlags = append(f.GuardFlags, rd.door.Flags)
			}
		}
	}
}

// rotationExclude lists every port of cfg's rotation ranges: the static doors' guard bands
// leave them to the rotating doors' own guard.
func rotationExclude(cfg *config.Config) []netport.Port {
	var out []netport.Port
	for _, d := range cfg.Doors {
		if r := d.Rotate; r != nil {
			for p := int(r.Lo); p <= int(r.Hi); p++ {
				out = append(out, netport.Port{Proto: r.Proto, Num: uint16(p)})
			}
		}
	}
	return out
}

// burnKey names one derived sequence.
type burnKey struct {
	door    string
	window  int64
	counter int
}

// burns are the sequences of rotating doors already used: each opens once. Only the windows
// still accepted are kept (the newest one seen per door and the one before), so the set holds at
// most 2 × Uses entries per door. The server's mu guards it; it outlives reloads.
type burns struct {
	spent map[burnKey]struct{}
	high  map[string]int64 // newest window seen per door
}

// Why a complete rotated sequence opens nothing.
const (
	burnOK     = iota
	burnSpent  // used already
	burnWindow // its window is not the current or the previous one
	burnStart  // its window began before the server started
)

// use decides whether the complete sequence (door, w, c), seen at window cur, opens: it must
// be of window cur or cur-1, of a window after floor (the one the server started in: which
// sequences were used before is not kept across restarts, so none that could have been is
// taken), and not used before; then it is used.
func (b *burns) use(door string, w, cur, floor int64, c int) int {
	if b.spent == nil {
		b.spent, b.high = map[burnKey]struct{}{}, map[string]int64{}
	}
	high, seen := b.high[door]
	if !seen || cur > high {
		high = cur
		b.high[door] = cur
		for k := range b.spent {
			if k.door == door && k.window < cur-1 {
				delete(b.spent, k)
			}
		}
	}
	if w != cur && w != cur-1 || w < high-1 {
		return burnWindow
	}
	if w <= floor {
		return burnStart
	}
	k := burnKey{door, w, c}
	if _, ok := b.spent[k]; ok {
		return burnSpent
	}
	b.spent[k] = struct{}{}
	return burnOK
}

// rotRefusal is a complete rotated sequence that opened nothing.
type rotRefusal struct {
	door   string
	src    netip.Addr
	reason KnockReason
}

// settleRotated turns the machine's events on rotating doors into events on the configuration's
// doors, deciding under s.mu whether a complete sequence opens (once) or is refused.
func (s *Server) settleRotated(st *state, t time.Time, evs []knock.Event, refusals []rotRefusal) ([]knock.Event, []rotRefusal) {
	out := evs[:0]
	for _, e := range evs {
		if e.Door < 0 {
			out = append(out, e)
			continue
		}
		rd, w, c, ok := st.rot.lookup(e.Door)
		if !ok {
			out = append(out, e)
			continue
		}
		e.Door = rd.cfg
		if e.Kind == knock.Opened {
			rot := rd.door.Rotate
			switch s.burns.use(rd.door.Name, w, rot.Window(t), rot.Window(s.started), c) {
			case burnSpent:
				refusals = append(refusals, rotRefusal{rd.door.Name, e.Src, KnockSpent})
				continue
			case burnWindow:
				refusals = append(refusals, rotRefusal{rd.door.Name, e.Src, KnockWindow})
				continue
			case burnStart:
				refusals = append(refusals, rotRefusal{rd.door.Name, e.Src, KnockStartWindow})
				continue
			}
		}
		out = append(out, e)
	}
	return out, refusals
}

// refuseRotated counts and logs (within the budgets) a complete rotated sequence that opened
// nothing.
func (s *Server) refuseRotated(ctx context.Context, r rotRefusal) {
	s.Counters.Refused.Add(1)
	s.stats.knockRefused[r.reason].Add(1)
	if !s.log.Enabled(ctx, slog.LevelInfo) {
		return
	}
	ok, suppressed := s.limiter.Allow(r.src)
	if !ok {
		return
	}
	args := []any{"src", r.src, "door", r.door, "reason", r.reason.String()}
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	s.log.Info("knock refused", args...)
}

// rotateNow moves the rotating doors of the running state on to the windows of now and, when
// their sequences changed, sets the capture filter that passes them.
func (s *Server) rotateNow(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.cur
	st.rot.arm(st.machine, now)
	if st.rot.gen == st.filterGen {
		return
	}
	if err := s.deps.Intake.SetFilter(st.filter()); err != nil {
		// Tried again every tick; logged once per change of the sequences.
		if st.rot.failedGen != st.rot.gen {
			st.rot.failedGen = st.rot.gen
			s.log.Error("rotating door: set capture filter (knocks of the new window are not seen until it succeeds)", "err", err)
		}
		return
	}
	st.filterGen = st.rot.gen
}
