// Package cluster shares a fleet's SPA replay cache, grants, bans and revocations through Redis.
package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sesame-knock/sesame/internal/lograte"
)

// What a member does with SPA packets while Redis cannot be reached.
const (
	Refuse = "refuse" // refuse every SPA packet (fail closed)
	Local  = "local"  // decide with the local replay cache; reconcile on reconnect
)

// ErrRedisDown is the error of a replay claim refused because Redis cannot be reached (in
// Refuse mode).
var ErrRedisDown = errors.New("fleet replay cache unavailable: redis is down (on_redis_down = refuse)")

// ErrOutageFull is the error of a replay claim refused in Local mode because Redis has been
// down for so long that this member already holds the most claims it keeps for reconciliation:
// accepting more would grow memory without bound or forget what it must push back.
var ErrOutageFull = errors.New("fleet replay cache unavailable: redis is down and this member holds the most local claims it keeps (on_redis_down = local)")

// Options configure a Node.
type Options struct {
	// Member names this server; Groups are the groups it belongs to.
	Member string
	Groups []string
	// Prefix starts every key (default "sesame").
	Prefix string
	// Mode is Refuse (default) or Local.
	Mode string
	// Timeout bounds every Redis call on the packet path (default 200ms).
	Timeout time.Duration
	// MaxLen bounds each group's stream (default 10000).
	MaxLen int64
	// StateDir keeps the last stream ids seen (fleet-streams), for catching up after a
	// restart; empty keeps them in memory only.
	StateDir string
	// Redis is the server's URL with credentials removed, for status and logs.
	Redis string
	// Apply applies another member's event to this member (the server's ApplyFleet).
	Apply func(ctx context.Context, ev Event) error
	Log   *slog.Logger
	Now   func() time.Time
}

// Timing of the health loop.
const (
	beatEvery      = time.Second
	beatTTL        = 5 * time.Second
	backoffMin     = 50 * time.Millisecond
	backoffMax     = 500 * time.Millisecond
	readBlock      = time.Second
	readCount      = 256
	maxClaims      = 1 << 17 // keys remembered for reconciliation, and outage claims at most
	sweepEvery     = time.Second
	maxOutbox      = 4096 // events waiting for Redis
	maxSeenEvents  = 8192 // event ids remembered against duplicates
	downLogEvery   = 10 * time.Second
	recentPerGroup = 200 // stream entries status looks at
	// startMargin is how long before its start a member without a saved stream position
	// reads from (Redis's and the member's clocks may differ by that much).
	startMargin = 10 * time.Second
)

// Node is one member of a fleet. Its methods are safe for concurrent use.
type Node struct {
	b    Backend
	o    Options
	log  *slog.Logger
	down *lograte.Budget // "redis is down" lines

	up       atomic.Bool
	serverID atomic.Pointer[string]
	kick     chan struct{} // wakes the health loop after a failure

	mu       sync.Mutex
	claims   map[string]time.Time // keys this member claimed, live, for reconciliation
	outage   map[string]time.Time // keys claimed locally while Redis was down (Local)
	outbox   []Event              // events not yet appended
	wake     chan struct{}        // wakes the publisher
	lastIDs  map[string]string    // stream → last id seen
	seen     map[string]time.Time // event ids applied or published → expiry
	downFrom time.Time
	swept    time.Time // when remember last dropped expired claims
	max      int       // claims and outage claims kept at most (maxClaims; tests lower it)

	Counters Counters
}

// Counters are a node's running totals.
type Counters struct {
	Claimed, Replays, RefusedDown, LocalClaims, Reconciled, Conflicts atomic.Uint64
	Published, Applied, Skipped, Dropped, ApplyErrors                 atomic.Uint64
	// NotKept counts claims made with Redis up that were not remembered for reconciliation
	// (the table was full of live claims); RefusedFull counts packets refused in Local mode
	// because the outage table was full.
	NotKept, RefusedFull atomic.Uint64
}

// New returns a node on b. Nothing runs until Run; the replay store (Replay) may be used
// before.
func New(b Backend, o Options) *Node {
	if o.Prefix == "" {
		o.Prefix = "sesame"
	}
	if o.Mode == "" {
		o.Mode = Refuse
	}
	if o.Timeout <= 0 {
		o.Timeout = 200 * time.Millisecond
	}
	if o.MaxLen <= 0 {
		o.MaxLen = 10000
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	n := &Node{
		b: b, o: o, log: o.Log,
		down:    lograte.NewBudget(1, 1, downLogEvery, o.Now),
		kick:    make(chan struct{}, 1),
		claims:  map[string]time.Time{},
		outage:  map[string]time.Time{},
		wake:    make(chan struct{}, 1),
		lastIDs: map[string]string{},
		seen:    map[string]time.Time{},
		max:     maxClaims,
	}
	n.up.Store(true) // until a call fails: the first packet need not wait for the health loop
	// Without a saved position, entries from a little before the start on: a time-based id
	// rather than "$", which would skip what is added between the start and the first read.
	first := fmt.Sprintf("%d-0", o.Now().Add(-startMargin).UnixMilli())
	for _, g := range o.Groups {
		n.lastIDs[n.stream(g)] = first
	}
	n.loadLastIDs()
	return n
}

func (n *Node) key(kind, name string) string { return n.o.Prefix + ":" + kind + ":" + name }
func (n *Node) stream(group string) string   { return n.key("grants", group) }

// Member is this node's name.
func (n *Node) Member() string { return n.o.Member }

// Up reports whether Redis answered the last call.
func (n *Node) Up() bool { return n.up.Load() }

// markDown records a failed call: the health loop reconnects with backoff.
func (n *Node) markDown(err error) {
	if n.up.CompareAndSwap(true, false) {
		n.mu.Lock()
		n.downFrom = n.o.Now()
		n.mu.Unlock()
		what := "SPA packets are refused until it is back (on_redis_down = refuse)"
		if n.o.Mode == Local {
			what = "SPA packets are decided by this member's local replay cache alone: a packet accepted here may also be accepted by another member until redis is back (on_redis_down = local)"
		}
		n.log.Error("fleet: redis is down; "+what, "redis", n.o.Redis, "err", err)
	}
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// Run keeps the node in the fleet until ctx ends: heartbeats, reconnection with backoff and
// reconciliation, the publisher and the consumer of the groups' streams.
func (n *Node) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(func() { n.health(ctx) })
	wg.Go(func() { n.publisher(ctx) })
	wg.Go(func() { n.consumer(ctx) })
	wg.Wait()
	n.beatOff()
	return nil
}

// health beats while Redis is up, and probes it with backoff while it is down; on the way up
// (or when the server restarted) it reconciles the claims this member made.
func (n *Node) health(ctx context.Context) {
	wait := time.Duration(0)
	backoff := backoffMin
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		case <-n.kick:
		}
		cctx, cancel := context.WithTimeout(ctx, n.o.Timeout*5)
		id, err := n.b.ServerID(cctx)
		if err == nil {
			err = n.beat(cctx)
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			n.markDown(err)
			if n.down.Allow() {
				n.log.Warn("fleet: redis still down, retrying", "redis", n.o.Redis, "retry_in", backoff, "err", err)
			}
			wait = backoff
			backoff = min(2*backoff, backoffMax)
			continue
		}
		backoff = backoffMin
		wait = beatEvery
		prev := n.serverID.Swap(&id)
		restarted := prev != nil && *prev != id
		if !n.up.Load() || restarted {
			n.reconcile(ctx, restarted)
		}
		n.poke()
	}
}

// poke wakes the publisher.
func (n *Node) poke() {
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

func (n *Node) beat(ctx context.Context) error {
	v, err := json.Marshal(heartbeat{Member: n.o.Member, Groups: n.o.Groups, Seen: n.o.Now().UnixMilli()})
	if err != nil {
		return err
	}
	return n.b.Beat(ctx, n.key("member", n.o.Member), string(v), beatTTL)
}

// heartbeat is the value of a member's heartbeat key.
type heartbeat struct {
	Member string   `json:"member"`
	Groups []string `json:"groups"`
	Seen   int64    `json:"seen"`
}

// beatOff removes this member's heartbeat at the end of Run.
func (n *Node) beatOff() {
	ctx, cancel := context.WithTimeout(context.Background(), n.o.Timeout)
	defer cancel()
	_ = n.b.Beat(ctx, n.key("member", n.o.Member), "", time.Millisecond)
}

// reconcile pushes this member's live claims into Redis with set-if-absent (after an outage, or
// a Redis restart that may have lost them), then marks Redis up. A claim made locally during
// the outage that another member holds is a packet accepted twice: it is logged.
func (n *Node) reconcile(ctx context.Context, restarted bool) {
	now := n.o.Now()
	n.mu.Lock()
	all := make(map[string]time.Time, len(n.claims))
	for k, e := range n.claims {
		if e.After(now) {
			all[k] = e
		} else {
			delete(n.claims, k)
		}
	}
	outage := n.outage
	n.outage = map[string]time.Time{}
	for k, e := range outage {
		if e.After(now) {
			all[k] = e // an outage claim the full claims table did not hold
		}
	}
	from := n.downFrom
	n.mu.Unlock()
	var pushed, conflicts int
	for k, e := range all {
		cctx, cancel := context.WithTimeout(ctx, n.o.Timeout)
		ok, err := n.b.Claim(cctx, k, n.o.Member, e.Sub(now))
		if !ok && err == nil {
			if _, local := outage[k]; local {
				holder, herr := n.b.Holder(cctx, k)
				if herr == nil && holder != "" && holder != n.o.Member {
					conflicts++
					n.Counters.Conflicts.Add(1)
					n.log.Error("fleet: a packet accepted here while redis was down was also accepted by another member",
						"member", holder, "key", k[len(k)-min(16, len(k)):])
				}
			}
		}
		cancel()
		if err != nil {
			// Down again: keep the outage's claims for the next try.
			n.mu.Lock()
			for k, e := range outage {
				n.outage[k] = e
			}
			n.mu.Unlock()
			n.markDown(err)
			return
		}
		if ok {
			pushed++
		}
	}
	n.Counters.Reconciled.Add(uint64(pushed))
	n.up.Store(true)
	args := []any{"redis", n.o.Redis, "claims_restored", pushed, "conflicts", conflicts}
	if !from.IsZero() {
		args = append(args, "down_for", now.Sub(from).Round(time.Millisecond))
	}
	if restarted {
		args = append(args, "redis_restarted", true)
	}
	n.log.Warn("fleet: redis is back", args...)
}
