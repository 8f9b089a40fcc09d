package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/sesame-knock/sesame/internal/netport"
)

// Event kinds.
const (
	KindGrant  = "grant"  // Grants opened by By (a door or SPA client) on Origin
	KindBan    = "ban"    // Src banned until Until
	KindUnban  = "unban"  // Src's ban lifted
	KindRevoke = "revoke" // Src's grants (on Port, or all of them), or every grant (All), removed
)

// Event is what one member tells the others of a group.
type Event struct {
	Kind   string
	ID     string // random, unique: an event is applied once
	Origin string // the member that published it
	Group  string // the group whose stream carries it
	By     string // the door or client that earned a grant
	Grants []Grant
	Src    netip.Addr
	Port   netport.Port
	All    bool
	Kill   bool
	Until  time.Time // a ban's end
	Reason string
}

// Grant is one grant with its absolute expiry: a member applies what is left of it.
type Grant struct {
	Src     netip.Addr
	Port    netport.Port
	Expires time.Time
}

// wireEvent is an Event's JSON form in a stream entry.
type wireEvent struct {
	V      int         `json:"v"`
	Kind   string      `json:"kind"`
	ID     string      `json:"id"`
	Origin string      `json:"origin"`
	Group  string      `json:"group,omitempty"`
	By     string      `json:"by,omitempty"`
	Grants []wireGrant `json:"grants,omitempty"`
	Src    string      `json:"src,omitempty"`
	Port   string      `json:"port,omitempty"`
	All    bool        `json:"all,omitempty"`
	Kill   bool        `json:"kill,omitempty"`
	Until  int64       `json:"until_ms,omitempty"`
	Reason string      `json:"reason,omitempty"`
}

type wireGrant struct {
	Src     string `json:"src"`
	Port    string `json:"port"`
	Expires int64  `json:"expires_ms"`
}

func encodeEvent(ev Event) ([]byte, error) {
	w := wireEvent{V: 1, Kind: ev.Kind, ID: ev.ID, Origin: ev.Origin, Group: ev.Group, By: ev.By, All: ev.All, Kill: ev.Kill, Reason: ev.Reason}
	for _, g := range ev.Grants {
		w.Grants = append(w.Grants, wireGrant{Src: g.Src.String(), Port: g.Port.String(), Expires: g.Expires.UnixMilli()})
	}
	if ev.Src.IsValid() {
		w.Src = ev.Src.String()
	}
	if !ev.Port.IsZero() {
		w.Port = ev.Port.String()
	}
	if !ev.Until.IsZero() {
		w.Until = ev.Until.UnixMilli()
	}
	return json.Marshal(w)
}

// maxEventBytes bounds an entry a member reads.
const maxEventBytes = 64 << 10

func decodeEvent(data []byte) (Event, error) {
	if len(data) > maxEventBytes {
		return Event{}, errors.New("event too large")
	}
	var w wireEvent
	if err := json.Unmarshal(data, &w); err != nil {
		return Event{}, fmt.Errorf("event: %w", err)
	}
	if w.V != 1 {
		return Event{}, fmt.Errorf("event: version %d", w.V)
	}
	ev := Event{Kind: w.Kind, ID: w.ID, Origin: w.Origin, Group: w.Group, By: w.By, All: w.All, Kill: w.Kill, Reason: w.Reason}
	if ev.ID == "" || ev.Origin == "" {
		return Event{}, errors.New("event: no id or origin")
	}
	var err error
	for _, g := range w.Grants {
		var x Grant
		if x.Src, err = netip.ParseAddr(g.Src); err != nil {
			return Event{}, fmt.Errorf("event: grant source: %w", err)
		}
		if x.Port, err = netport.Parse(g.Port); err != nil {
			return Event{}, fmt.Errorf("event: grant port: %w", err)
		}
		x.Expires = time.UnixMilli(g.Expires)
		ev.Grants = append(ev.Grants, x)
	}
	if w.Src != "" {
		if ev.Src, err = netip.ParseAddr(w.Src); err != nil {
			return Event{}, fmt.Errorf("event: source: %w", err)
		}
	}
	if w.Port != "" {
		if ev.Port, err = netport.Parse(w.Port); err != nil {
			return Event{}, fmt.Errorf("event: port: %w", err)
		}
	}
	if w.Until != 0 {
		ev.Until = time.UnixMilli(w.Until)
	}
	switch ev.Kind {
	case KindGrant, KindBan, KindUnban, KindRevoke:
	default:
		return Event{}, fmt.Errorf("event: kind %q", ev.Kind)
	}
	return ev, nil
}

// expires is when an event stops mattering (for deduplication and acks).
func (ev Event) expires(now time.Time) time.Time {
	switch ev.Kind {
	case KindGrant:
		var e time.Time
		for _, g := range ev.Grants {
			if g.Expires.After(e) {
				e = g.Expires
			}
		}
		return e
	case KindBan:
		return ev.Until
	}
	return now.Add(time.Hour)
}

func newID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Publish queues ev for the fleet without waiting: a grant to its group's stream, a ban,
// unban or revoke to every group of this member. The queue is bounded; overflow is counted
// and logged. It fills in ID and Origin.
func (n *Node) Publish(ev Event) {
	ev.ID, ev.Origin = newID(), n.o.Member
	var evs []Event
	if ev.Kind == KindGrant {
		if ev.Group == "" {
			return
		}
		evs = []Event{ev}
	} else {
		for _, g := range n.o.Groups {
			e := ev
			e.Group = g
			evs = append(evs, e)
		}
	}
	n.mu.Lock()
	n.seen[ev.ID] = ev.expires(n.o.Now())
	dropped := 0
	for _, e := range evs {
		if len(n.outbox) >= maxOutbox {
			dropped++
			continue
		}
		n.outbox = append(n.outbox, e)
	}
	n.mu.Unlock()
	if dropped > 0 {
		n.Counters.Dropped.Add(uint64(dropped))
		if n.down.Allow() {
			n.log.Error("fleet: publish queue full: events not shared with the fleet", "dropped", dropped, "queue", maxOutbox)
		}
	}
	n.poke()
}

// publisher appends queued events while Redis is up; grants that expired meanwhile are
// dropped, not sent.
func (n *Node) publisher(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.wake:
		}
		for n.up.Load() && ctx.Err() == nil {
			n.mu.Lock()
			if len(n.outbox) == 0 {
				n.mu.Unlock()
				break
			}
			ev := n.outbox[0]
			n.mu.Unlock()
			now := n.o.Now()
			if ev.Kind == KindGrant && !ev.expires(now).After(now) {
				n.pop()
				continue
			}
			data, err := encodeEvent(ev)
			if err == nil {
				cctx, cancel := context.WithTimeout(ctx, n.o.Timeout)
				_, err = n.b.Append(cctx, n.stream(ev.Group), n.o.MaxLen, data)
				if err == nil && ev.Kind == KindGrant {
					n.ack(cctx, ev, now)
				}
				cancel()
				if err != nil {
					n.markDown(err)
					break
				}
			}
			n.pop()
			n.Counters.Published.Add(1)
		}
	}
}

func (n *Node) pop() {
	n.mu.Lock()
	n.outbox = n.outbox[1:]
	n.mu.Unlock()
}

// ack records in the grant's hash that this member holds it until it expires.
func (n *Node) ack(ctx context.Context, ev Event, now time.Time) {
	exp := ev.expires(now)
	if err := n.b.Ack(ctx, n.key("held", ev.ID), n.o.Member, fmt.Sprint(exp.UnixMilli()), exp.Sub(now)+time.Second); err != nil {
		n.markDown(err)
	}
}

// consumer reads the groups' streams from the last ids seen and applies other members' events.
func (n *Node) consumer(ctx context.Context) {
	if len(n.o.Groups) == 0 {
		return
	}
	for ctx.Err() == nil {
		if !n.up.Load() {
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoffMin):
			}
			continue
		}
		n.mu.Lock()
		after := make(map[string]string, len(n.lastIDs))
		for s, id := range n.lastIDs {
			after[s] = id
		}
		n.mu.Unlock()
		cctx, cancel := context.WithTimeout(ctx, readBlock+n.o.Timeout+time.Second)
		msgs, err := n.b.Read(cctx, after, readBlock, readCount)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			n.markDown(err)
			continue
		}
		for _, m := range msgs {
			if !n.handle(ctx, m) {
				break // not ready: read it again
			}
			n.mu.Lock()
			n.lastIDs[m.Stream] = m.ID
			n.mu.Unlock()
		}
		n.saveLastIDs()
	}
}

// ErrNotReady is returned (wrapped) by an Apply that cannot take events yet or any more (the
// server is starting or stopping): the entry is read again later, not skipped.
var ErrNotReady = errors.New("not ready for fleet events")

// handle applies one stream entry from another member, once, with the time it has left; false
// when Apply was not ready (the entry stays unread).
func (n *Node) handle(ctx context.Context, m Message) bool {
	ev, err := decodeEvent(m.Data)
	if err != nil {
		n.Counters.Skipped.Add(1)
		if n.down.Allow() {
			n.log.Warn("fleet: bad stream entry ignored", "stream", m.Stream, "id", m.ID, "err", err)
		}
		return true
	}
	now := n.o.Now()
	if ev.Origin == n.o.Member {
		return true
	}
	n.mu.Lock()
	_, dup := n.seen[ev.ID]
	if !dup {
		if len(n.seen) >= maxSeenEvents {
			for id, e := range n.seen {
				if !e.After(now) {
					delete(n.seen, id)
				}
			}
		}
		if len(n.seen) < maxSeenEvents {
			n.seen[ev.ID] = ev.expires(now)
		}
	}
	n.mu.Unlock()
	if dup {
		return true
	}
	switch ev.Kind {
	case KindGrant:
		live := ev.Grants[:0:0]
		for _, g := range ev.Grants {
			if g.Expires.After(now) {
				live = append(live, g)
			}
		}
		if len(live) == 0 {
			n.Counters.Skipped.Add(1)
			return true
		}
		ev.Grants = live
	case KindBan:
		if !ev.Until.After(now) {
			n.Counters.Skipped.Add(1)
			return true
		}
	}
	if n.o.Apply == nil {
		return true
	}
	if err := n.o.Apply(context.WithoutCancel(ctx), ev); errors.Is(err, ErrNotReady) {
		n.mu.Lock()
		delete(n.seen, ev.ID)
		n.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
		return false
	} else if err != nil {
		n.Counters.ApplyErrors.Add(1)
		n.log.Warn("fleet: event from another member not applied", "kind", ev.Kind, "origin", ev.Origin, "group", ev.Group, "by", ev.By, "err", err)
		return true
	}
	n.Counters.Applied.Add(1)
	if ev.Kind == KindGrant {
		cctx, cancel := context.WithTimeout(ctx, n.o.Timeout)
		n.ack(cctx, ev, now)
		cancel()
	}
	return true
}

// lastIDsFile keeps the last stream ids across restarts.
const lastIDsFile = "fleet-streams.json"

func (n *Node) loadLastIDs() {
	if n.o.StateDir == "" {
		return
	}
	data, err := os.ReadFile(filepath.Join(n.o.StateDir, lastIDsFile))
	if err != nil {
		return
	}
	var m map[string]string
	if json.Unmarshal(data, &m) != nil {
		n.log.Warn("fleet: saved stream positions unreadable: starting from the streams' ends", "file", lastIDsFile)
		return
	}
	for s, id := range m {
		if _, ok := n.lastIDs[s]; ok && id != "" {
			n.lastIDs[s] = id
		}
	}
}

func (n *Node) saveLastIDs() {
	if n.o.StateDir == "" {
		return
	}
	n.mu.Lock()
	m := make(map[string]string, len(n.lastIDs))
	for s, id := range n.lastIDs {
		m[s] = id
	}
	n.mu.Unlock()
	data, _ := json.Marshal(m)
	path := filepath.Join(n.o.StateDir, lastIDsFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		n.log.Warn("fleet: save stream positions", "err", err)
		return
	}
	if err := os.Rename(tmp, path); err != nil {
		n.log.Warn("fleet: save stream positions", "err", err)
	}
}

// LastIDs returns the last entry id seen of each group's stream.
func (n *Node) LastIDs() map[string]string {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make(map[string]string, len(n.lastIDs))
	for s, id := range n.lastIDs {
		out[s] = id
	}
	return out
}
