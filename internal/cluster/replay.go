package cluster

import (
	"context"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/sesame-knock/sesame/internal/replay"
)

// Replay returns a replay store that accepts a key only when both local (this member's own
// store, which it also keeps for restarts) and the fleet accept it: the key is claimed in Redis
// with SET NX PX (its remaining life) before the caller grants. Concurrent inserts of one key
// on one member reach Redis once (local decides first); across members Redis decides. While
// Redis is down, Refuse mode refuses with ErrRedisDown and Local mode keeps local's decision
// and reconciles it later. No call waits longer than the node's Timeout.
func (n *Node) Replay(local replay.Store) replay.Store {
	r := &replayStore{n: n, local: local}
	d, isDeferred := local.(replay.Deferred)
	m, isMeta := local.(replay.Meta)
	switch {
	case isDeferred && isMeta:
		return &replayDeferredMeta{replayStore: r, d: d, m: m}
	case isDeferred:
		return &replayDeferred{replayStore: r, d: d}
	}
	return r
}

type replayStore struct {
	n     *Node
	local replay.Store
}

// InsertAt implements replay.Store.
func (r *replayStore) InsertAt(ctx context.Context, key []byte, now, expiry time.Time) (bool, error) {
	ok, err := r.local.InsertAt(ctx, key, now, expiry)
	if err != nil || !ok {
		return ok, err
	}
	return r.n.claim(ctx, key, now, expiry)
}

// Close implements replay.Store: it closes local.
func (r *replayStore) Close() error { return r.local.Close() }

// Len is local's number of keys, when it counts them.
func (r *replayStore) Len() int {
	if l, ok := r.local.(interface{ Len() int }); ok {
		return l.Len()
	}
	return 0
}

type replayDeferred struct {
	*replayStore
	d replay.Deferred
}

func (r *replayDeferred) PersistSoon() { r.d.PersistSoon() }

type replayDeferredMeta struct {
	*replayStore
	d replay.Deferred
	m replay.Meta
}

func (r *replayDeferredMeta) PersistSoon()                        { r.d.PersistSoon() }
func (r *replayDeferredMeta) GetMeta(name string) ([]byte, error) { return r.m.GetMeta(name) }
func (r *replayDeferredMeta) PutMeta(name string, v []byte) error { return r.m.PutMeta(name, v) }

// claim claims key in Redis for the packet path; local has accepted it already.
func (n *Node) claim(ctx context.Context, key []byte, now, expiry time.Time) (bool, error) {
	rk := n.key("replay", hex.EncodeToString(key))
	if !n.up.Load() {
		return n.whileDown(rk, expiry, nil)
	}
	cctx, cancel := context.WithTimeout(ctx, n.o.Timeout)
	ok, err := n.b.Claim(cctx, rk, n.o.Member, expiry.Sub(now))
	cancel()
	if err != nil {
		n.markDown(err)
		return n.whileDown(rk, expiry, err)
	}
	if !ok {
		n.Counters.Replays.Add(1)
		return false, nil
	}
	n.Counters.Claimed.Add(1)
	_ = n.remember(rk, expiry, false) // never false for a claim made with Redis up
	return true, nil
}

// whileDown decides a packet while Redis is down: refused in Refuse mode, accepted (local said
// yes) and remembered for reconciliation in Local mode, unless the outage table is full.
func (n *Node) whileDown(rk string, expiry time.Time, err error) (bool, error) {
	if n.o.Mode != Local {
		n.Counters.RefusedDown.Add(1)
		if err != nil {
			return false, fmt.Errorf("%w: %v", ErrRedisDown, err)
		}
		return false, ErrRedisDown
	}
	if !n.remember(rk, expiry, true) {
		n.Counters.RefusedFull.Add(1)
		if n.down.Allow() {
			n.log.Error("fleet: redis is down and the local claims table is full: SPA packets are refused until redis is back",
				"redis", n.o.Redis, "max_claims", n.max)
		}
		return false, ErrOutageFull
	}
	n.Counters.LocalClaims.Add(1)
	if n.down.Allow() {
		n.log.Warn("fleet: redis is down: SPA packet accepted on this member's local replay cache alone (on_redis_down = local)", "redis", n.o.Redis)
	}
	return true, nil
}

// remember keeps a claim for reconciliation. Both tables are bounded by n.max: when one is
// full, expired claims are dropped (at most once per sweepEvery, so a full table costs no scan
// per packet). A claim made with Redis up that still finds no room is not kept (counted in
// NotKept: only a Redis restart that loses it makes that matter); an outage claim that finds
// no room is refused (false), because it must be pushed when Redis is back.
func (n *Node) remember(rk string, expiry time.Time, outage bool) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.claims) >= n.max || (outage && len(n.outage) >= n.max) {
		if now := n.o.Now(); now.Sub(n.swept) >= sweepEvery {
			n.swept = now
			for _, m := range []map[string]time.Time{n.claims, n.outage} {
				for k, e := range m {
					if !e.After(now) {
						delete(m, k)
					}
				}
			}
		}
	}
	if outage {
		if len(n.outage) >= n.max {
			return false
		}
		n.outage[rk] = expiry
	}
	if len(n.claims) >= n.max {
		if !outage {
			n.Counters.NotKept.Add(1)
		}
		return true // an outage claim is pushed from n.outage (reconcile)
	}
	n.claims[rk] = expiry
	return true
}
