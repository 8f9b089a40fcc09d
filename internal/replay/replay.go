// Package replay remembers authenticated SPA packets so that each is accepted at most once.
package replay

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Store records replay keys until they expire. InsertAt is atomic: of any number of
// concurrent inserts of one key, exactly one reports inserted.
type Store interface {
	// InsertAt records key until expiry and reports true, or reports false when key is
	// already recorded and live at now (its expiry is after now). The caller passes the clock
	// reading it judged the packet's age with, so that the age check and the replay check read
	// one clock once.
	InsertAt(ctx context.Context, key []byte, now, expiry time.Time) (inserted bool, err error)
	Close() error
}

// Deferred is a Store that persists accepted keys later, once told that the work they allowed
// is done (WriteBehind): its caller calls PersistSoon after the grant, so that neither the write
// nor the arming of its timer delays the grant.
type Deferred interface {
	Store
	// PersistSoon schedules the write of the keys accepted so far.
	PersistSoon()
}

// Meta is implemented by stores that keep a few small named values across restarts, next to the
// keys, for their user's own state (the SPA handler keeps its age window there, so that a
// restart with a larger max_age does not revive packets whose keys were kept for the smaller).
type Meta interface {
	// GetMeta returns the value of name, or nil when it is unset.
	GetMeta(name string) ([]byte, error)
	// PutMeta sets name to v, durably before it returns.
	PutMeta(name string, v []byte) error
}

// ErrFull is returned by a Memory store that holds max live keys: the packet is refused rather
// than a live key forgotten (which would let its packet be replayed).
var ErrFull = errors.New("replay store is full")

// ErrClosed is returned after Close.
var ErrClosed = errors.New("replay store is closed")

// Memory is a bounded in-memory Store, for tests and for servers without a state directory.
// Its keys do not survive a restart.
type Memory struct {
	mu   sync.Mutex
	max  int
	now  func() time.Time
	keys map[string]time.Time
	exp  expHeap
	done bool
}

// NewMemory returns a Memory store holding at most max live keys (max < 1 means 65536).
func NewMemory(max int) *Memory {
	if max < 1 {
		max = 65536
	}
	return &Memory{max: max, now: time.Now, keys: map[string]time.Time{}}
}

// SetClock replaces the clock used to decide expiry (time.Now by default).
func (m *Memory) SetClock(now func() time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.now = now
}

// InsertIfAbsent is InsertAt at the store's clock.
func (m *Memory) InsertIfAbsent(ctx context.Context, key []byte, expiry time.Time) (bool, error) {
	m.mu.Lock()
	now := m.now
	m.mu.Unlock()
	return m.InsertAt(ctx, key, now(), expiry)
}

// InsertAt implements Store.
func (m *Memory) InsertAt(_ context.Context, key []byte, now, expiry time.Time) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.done {
		return false, fmt.Errorf("replay: insert: %w", ErrClosed)
	}
	if e, ok := m.keys[string(key)]; ok && e.After(now) {
		return false, nil
	}
	m.sweep(now)
	if len(m.keys) >= m.max {
		return false, fmt.Errorf("replay: insert: %w (%d live keys)", ErrFull, len(m.keys))
	}
	k := string(key)
	m.keys[k] = expiry
	heap.Push(&m.exp, entry{key: k, expiry: expiry})
	return true, nil
}

// sweep drops expired keys; m.mu is held.
func (m *Memory) sweep(now time.Time) {
	for len(m.exp) > 0 && !m.exp[0].expiry.After(now) {
		e := heap.Pop(&m.exp).(entry)
		if cur, ok := m.keys[e.key]; ok && cur.Equal(e.expiry) {
			delete(m.keys, e.key)
		}
	}
}

// Len returns the number of keys held, live or not yet swept.
func (m *Memory) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.keys)
}

// Close implements Store.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.done = true
	m.keys, m.exp = nil, nil
	return nil
}

type entry struct {
	key    string
	expiry time.Time
}

type expHeap []entry

func (h expHeap) Len() int           { return len(h) }
func (h expHeap) Less(i, j int) bool { return h[i].expiry.Before(h[j].expiry) }
func (h expHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expHeap) Push(x any)        { *h = append(*h, x.(entry)) }
func (h *expHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}
