package replay

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// WriteBehind decides in memory and persists to a Bolt store right behind the decision, so the
// SPA path does not wait for a bbolt transaction (~40-80 µs even without fsync). At open it loads
// every live key of the file, so a packet seen before a restart is still refused after it.
//
// What a crash may lose: keys accepted in the last moments before a process crash that the
// writer had not yet written (it writes each key as soon as it is accepted, in well under a
// millisecond), plus, on a power loss, whatever the Bolt store had not yet synced.
type WriteBehind struct {
	mem   *Memory
	file  *Bolt
	queue chan pending
	wg    sync.WaitGroup

	mu     sync.Mutex
	closed bool
}

type pending struct {
	key    []byte
	expiry time.Time
}

// QueueLen is how many accepted keys may wait for the writer; past it an insert writes itself.
const QueueLen = 4096

// NewWriteBehind wraps file, holding at most max live keys in memory, and loads its live keys.
func NewWriteBehind(file *Bolt, max int) (*WriteBehind, error) {
	w := &WriteBehind{mem: NewMemory(max), file: file, queue: make(chan pending, QueueLen)}
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
	w.wg.Add(1)
	go w.writer()
	return w, nil
}

func beUint64(b []byte) uint64 {
	var n uint64
	for _, c := range b[:8] {
		n = n<<8 | uint64(c)
	}
	return n
}

// InsertIfAbsent decides atomically in memory; the key reaches the file just after.
func (w *WriteBehind) InsertIfAbsent(ctx context.Context, key []byte, expiry time.Time) (bool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return false, ErrClosed
	}
	ok, err := w.mem.InsertIfAbsent(ctx, key, expiry)
	if err != nil || !ok {
		return ok, err
	}
	p := pending{key: append([]byte(nil), key...), expiry: expiry}
	select {
	case w.queue <- p:
	default:
		// The writer is behind: write this one now rather than lose it.
		if _, err := w.file.InsertIfAbsent(ctx, p.key, p.expiry); err != nil {
			return true, err
		}
	}
	return true, nil
}

func (w *WriteBehind) writer() {
	defer w.wg.Done()
	for p := range w.queue {
		// An error here cannot undo a grant already made; the key stays in memory, so a replay
		// is still refused until a restart.
		w.file.InsertIfAbsent(context.Background(), p.key, p.expiry)
	}
}

// Len is the number of live keys held in memory.
func (w *WriteBehind) Len() int { return w.mem.Len() }

// Close writes every queued key, then closes the file.
func (w *WriteBehind) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	close(w.queue)
	w.mu.Unlock()
	w.wg.Wait()
	return errors.Join(w.mem.Close(), w.file.Close())
}
