package replay

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// WriteBehind decides in memory and persists to a Bolt store shortly behind the decision, so the
// SPA path neither waits for a bbolt transaction (~40-80 µs even without fsync) nor wakes a
// writer thread while the grant it decided is still being made. It is a Deferred store: accepted
// keys wait until PersistSoon (called after the grant), and are then written in one transaction
// FlushDelay later; QueueLen waiting keys are written at once. At open it loads every live key of
// the file, so a packet seen before a restart is still refused after it.
//
// What a crash may lose: keys accepted in the last FlushDelay (plus the write) before a process
// crash, and, on a power loss, whatever the Bolt store had not yet synced.
type WriteBehind struct {
	mem  *Memory
	file *Bolt

	mu      sync.Mutex
	pending []pending
	timer   *time.Timer
	armed   bool // the timer will write pending
	closed  bool

	writeMu sync.Mutex // serializes writes to file, and Close with them
}

type pending struct {
	key    []byte
	expiry time.Time
}

// FlushDelay is how long accepted keys wait after PersistSoon before they are written: long
// enough for the client to connect first, and to gather a burst's keys into one transaction.
const FlushDelay = time.Millisecond

// QueueLen is how many accepted keys may wait for the writer; the insert that reaches it writes
// them all itself.
const QueueLen = 4096

// NewWriteBehind wraps file, holding at most max live keys in memory, and loads its live keys.
func NewWriteBehind(file *Bolt, max int) (*WriteBehind, error) {
	w := &WriteBehind{mem: NewMemory(max), file: file}
	w.mem.SetClock(file.now)
	now := expiryBytes(file.now())
	err := file.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketKeys).ForEach(func(k, v []byte) error {
			if string(v) <= string(now) {
				return nil // expired, not yet swept
			}
			_, err := w.mem.InsertIfAbsent(context.Background(), k, time.Unix(0, int64(beUint64(v))))
			return err
		})
	})
	if err != nil {
		return nil, fmt.Errorf("replay: load %s: %w", file.path, err)
	}
	return w, nil
}

func beUint64(b []byte) uint64 {
	var n uint64
	for _, c := range b[:8] {
		n = n<<8 | uint64(c)
	}
	return n
}

// InsertIfAbsent is InsertAt at the file's clock.
func (w *WriteBehind) InsertIfAbsent(ctx context.Context, key []byte, expiry time.Time) (bool, error) {
	return w.InsertAt(ctx, key, w.file.now(), expiry)
}

// InsertAt decides atomically in memory; the key reaches the file FlushDelay after the next
// PersistSoon.
func (w *WriteBehind) InsertAt(ctx context.Context, key []byte, now, expiry time.Time) (bool, error) {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return false, ErrClosed
	}
	ok, err := w.mem.InsertAt(ctx, key, now, expiry)
	if err != nil || !ok {
		w.mu.Unlock()
		return ok, err
	}
	w.pending = append(w.pending, pending{key: append([]byte(nil), key...), expiry: expiry})
	if len(w.pending) >= QueueLen {
		// The writer is behind: write the batch now rather than let it grow.
		batch := w.take()
		w.mu.Unlock()
		return true, w.write(batch)
	}
	w.mu.Unlock()
	return true, nil
}

// PersistSoon implements Deferred: the keys accepted so far are written FlushDelay from now (or
// with the batch already scheduled).
func (w *WriteBehind) PersistSoon() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || w.armed || len(w.pending) == 0 {
		return
	}
	w.armed = true
	if w.timer == nil {
		w.timer = time.AfterFunc(FlushDelay, w.flush)
	} else {
		w.timer.Reset(FlushDelay)
	}
}

// take returns the pending keys and disarms the timer; w.mu is held.
func (w *WriteBehind) take() []pending {
	batch := w.pending
	w.pending = nil
	if w.armed {
		w.timer.Stop()
		w.armed = false
	}
	return batch
}

func (w *WriteBehind) flush() {
	w.mu.Lock()
	batch := w.take()
	w.mu.Unlock()
	// An error here cannot undo grants already made; the keys stay in memory, so a replay is
	// still refused until a restart.
	_ = w.write(batch)
}

func (w *WriteBehind) write(batch []pending) error {
	if len(batch) == 0 {
		return nil
	}
	w.writeMu.Lock()
	defer w.writeMu.Unlock()
	return w.file.insertMany(batch)
}

// GetMeta implements Meta with the file's values.
func (w *WriteBehind) GetMeta(name string) ([]byte, error) { return w.file.GetMeta(name) }

// PutMeta implements Meta: written to the file at once.
func (w *WriteBehind) PutMeta(name string, v []byte) error {
	w.writeMu.Lock()
	defer w.writeMu.Unlock()
	return w.file.PutMeta(name, v)
}

// Len is the number of live keys held in memory.
func (w *WriteBehind) Len() int { return w.mem.Len() }

// Close writes every pending key, then closes the file.
func (w *WriteBehind) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	batch := w.take()
	w.mu.Unlock()
	err := w.write(batch)
	w.writeMu.Lock() // a flush already running finishes first
	defer w.writeMu.Unlock()
	return errors.Join(err, w.mem.Close(), w.file.Close())
}
