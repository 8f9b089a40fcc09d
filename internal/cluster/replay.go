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
	n.remember(rk, expiry, false)
	return true, nil
}

// whileDown decides a packet while Redis is down: refused in Refuse mode, accepted (local said
// yes) and remembered for reconciliation in Local mode.
func (n *Node) whileDown(rk string, expiry time.Time, err error) (bool, error) {
	if n.o.Mode != Local {
		n.Counters.RefusedDown.Add(1)
		if err != nil {
			return false, fmt.Errorf("%w: %v", ErrRedisDown, err)
		}
		return false, ErrRedisDown
	}
	n.Counters.LocalClaims.Add(1)
	if n.down.Allow() {
		n.log.Warn("fleet: redis is down: SPA packet accepted on this member's local replay cache alone (on_redis_down = local)", "redis", n.o.Redis)
	}
	n.remember(rk, expiry, true)
	return true, nil
}

// remember keeps a claim for reconciliation (bounded: the oldest live claims are kept, the
// overflow counted).
func (n *Node) remember(rk string, expiry time.Time, outage bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.claims) >= maxClaims {
		now := n.o.Now()
		for k, e := range n.claims {
			if !e.After(now) {
				delete(n.claims, k)
			}
		}
		if len(n.claims) >= maxClaims {
			n.Counters.Dropped.Add(1)
			if !outage {
				return
			}
		}
	}
	n.claims[rk] = expiry
	if outage {
		n.outage[rk] = expiry
	}
}
