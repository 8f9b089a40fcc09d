package replay

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Bucket layout. "keys" maps a replay key to its 8-byte big-endian expiry (Unix nanoseconds);
// "expiry" holds expiry||key with an empty value, so a cursor walks entries oldest first and a
// sweep stops at the first one still live.
var (
	bucketKeys   = []byte("keys")
	bucketExpiry = []byte("expiry")
	bucketMeta   = []byte("meta") // Meta's values, by name
)

// Defaults of a Bolt store.
const (
	// DefaultLockTimeout is how long OpenBolt waits for another process to release the file.
	DefaultLockTimeout = time.Second
	// SweepPerInsert bounds the expired entries one insert removes.
	SweepPerInsert = 16
	// SweepBatch bounds the entries one Sweep call removes.
	SweepBatch = 1024
)

// Bolt is a Store kept in a bbolt file, so that a packet seen before a restart is still refused
// after it. Each insert is one read-write transaction (check and put together) that also
// removes a few expired entries; Sweep removes more.
type Bolt struct {
	db   *bolt.DB
	path string
	now  func() time.Time

	mu   sync.Mutex
	stop chan struct{}
	wg   sync.WaitGroup
}

// Option configures OpenBolt.
type Option func(*boltOptions)

type boltOptions struct {
	now         func() time.Time
	lockTimeout time.Duration
	sweepEvery  time.Duration
	noSync      bool
	syncEvery   time.Duration
}

// WithClock sets the clock that decides expiry (time.Now by default).
func WithClock(now func() time.Time) Option { return func(o *boltOptions) { o.now = now } }

// WithLockTimeout sets how long to wait for a file locked by another process.
func WithLockTimeout(d time.Duration) Option { return func(o *boltOptions) { o.lockTimeout = d } }

// WithSweepEvery starts a background sweep at this interval (0, the default: only the
// opportunistic sweep of each insert).
func WithSweepEvery(d time.Duration) Option { return func(o *boltOptions) { o.sweepEvery = d } }

// WithNoSync skips fsync after each insert: faster, and still persistent across a clean or
// crashed process restart, but an insert may be lost if the machine loses power.
func WithNoSync() Option { return func(o *boltOptions) { o.noSync = true } }

// WithSyncEvery, with WithNoSync, fsyncs the file at this interval in the background, so a power
// loss forgets at most that much of the replay cache.
func WithSyncEvery(d time.Duration) Option { return func(o *boltOptions) { o.syncEvery = d } }

// errSymlink is openNoFollow's refusal of a symbolic link.
var errSymlink = errors.New("symbolic link")

// openNoFollow is the bbolt file opener: it does not follow a symbolic link put in the store's
// place, refuses what is not a regular file, and sets the mode of a file that existed (bbolt
// asks for 0600) through the open file.
func openNoFollow(name string, flag int, perm os.FileMode) (*os.File, error) {
	f, err := os.OpenFile(name, flag|oNoFollow, perm)
	if err != nil {
		if isLoop(err) {
			return nil, fmt.Errorf("%s: %w", name, errSymlink)
		}
		return nil, err
	}
	fi, err := f.Stat()
	switch {
	case err != nil:
	case !fi.Mode().IsRegular():
		err = fmt.Errorf("%s is not a regular file", name)
	case fi.Mode().Perm() != perm:
		err = f.Chmod(perm)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// OpenBolt opens or creates the store file at path (mode 0600), refusing a symbolic link in its
// place. Its directory must exist. A file
// held by another process (another server using the same state directory) is an error after the
// lock timeout.
func OpenBolt(path string, opts ...Option) (*Bolt, error) {
	const op = "replay: open"
	o := boltOptions{now: time.Now, lockTimeout: DefaultLockTimeout}
	for _, fn := range opts {
		fn(&o)
	}
	dir := filepath.Dir(path)
	if st, err := os.Stat(dir); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s: state directory %s does not exist", op, dir)
		}
		return nil, fmt.Errorf("%s: %w", op, err)
	} else if !st.IsDir() {
		return nil, fmt.Errorf("%s: state directory %s is not a directory", op, dir)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: o.lockTimeout, FreelistType: bolt.FreelistMapType, OpenFile: openNoFollow})
	if err != nil {
		if errors.Is(err, errSymlink) {
			return nil, fmt.Errorf("%s: %s is a symbolic link: the replay cache must be a file of its own (remove the link)", op, path)
		}
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("%s: %s is locked by another process (is another sesame server using this state directory?)", op, path)
		}
		return nil, fmt.Errorf("%s: %s: %w", op, path, err)
	}
	db.NoSync = o.noSync
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketKeys, bucketExpiry, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("%s: %s: %w", op, path, err)
	}
	b := &Bolt{db: db, path: path, now: o.now}
	if o.sweepEvery > 0 || o.noSync && o.syncEvery > 0 {
		b.stop = make(chan struct{})
	}
	if o.sweepEvery > 0 {
		b.every(o.sweepEvery, b.sweepExpired)
	}
	if o.noSync && o.syncEvery > 0 {
		b.every(o.syncEvery, func() { b.db.Sync() })
	}
	return b, nil
}

// every runs fn every d in the background until Close.
func (b *Bolt) every(d time.Duration, fn func()) {
	b.wg.Go(func() {
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-b.stop:
				return
			case <-t.C:
				fn()
			}
		}
	})
}

// sweepExpired removes expired entries, at most 64 batches at a time.
func (b *Bolt) sweepExpired() {
	for range 64 {
		n, err := b.Sweep()
		if err != nil || n < SweepBatch {
			return
		}
	}
}

func expiryBytes(t time.Time) []byte {
	return binary.BigEndian.AppendUint64(nil, uint64(max(t.UnixNano(), 0)))
}

// InsertIfAbsent is InsertAt at the store's clock.
func (b *Bolt) InsertIfAbsent(ctx context.Context, key []byte, expiry time.Time) (bool, error) {
	return b.InsertAt(ctx, key, b.now(), expiry)
}

// InsertAt implements Store: one read-write transaction checks the key and records it.
func (b *Bolt) InsertAt(ctx context.Context, key []byte, now, expiry time.Time) (bool, error) {
	const op = "replay: insert"
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("%s: %w", op, err)
	}
	if len(key) == 0 {
		return false, fmt.Errorf("%s: empty key", op)
	}
	nowB := expiryBytes(now)
	inserted := false
	err := b.db.Update(func(tx *bolt.Tx) error {
		var err error
		if inserted, err = insertTx(tx, key, expiry, nowB); err != nil {
			return err
		}
		_, err = sweep(tx, nowB, SweepPerInsert)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("%s: %w", op, err)
	}
	return inserted, nil
}

// insertMany records keys decided elsewhere (WriteBehind) in one transaction; a key already
// live in the file is left as it is.
func (b *Bolt) insertMany(batch []pending) error {
	nowB := expiryBytes(b.now())
	err := b.db.Update(func(tx *bolt.Tx) error {
		for _, p := range batch {
			if _, err := insertTx(tx, p.key, p.expiry, nowB); err != nil {
				return err
			}
		}
		_, err := sweep(tx, nowB, SweepPerInsert)
		return err
	})
	if err != nil {
		return fmt.Errorf("replay: insert %d keys: %w", len(batch), err)
	}
	return nil
}

// insertTx records key with expiry unless it is live at now; it reports whether it did.
func insertTx(tx *bolt.Tx, key []byte, expiry time.Time, now []byte) (bool, error) {
	keys, exp := tx.Bucket(bucketKeys), tx.Bucket(bucketExpiry)
	if old := keys.Get(key); old != nil {
		if bytes.Compare(old, now) > 0 {
			return false, nil // live: a replay
		}
		if err := exp.Delete(append(bytes.Clone(old), key...)); err != nil {
			return false, err
		}
	}
	e := expiryBytes(expiry)
	if err := keys.Put(key, e); err != nil {
		return false, err
	}
	if err := exp.Put(append(e, key...), nil); err != nil {
		return false, err
	}
	return true, nil
}

// sweep removes up to limit entries that expired at or before now.
func sweep(tx *bolt.Tx, now []byte, limit int) (int, error) {
	keys, exp := tx.Bucket(bucketKeys), tx.Bucket(bucketExpiry)
	c := exp.Cursor()
	n := 0
	for k, _ := c.First(); k != nil && n < limit; k, _ = c.First() {
		if len(k) < 8 || bytes.Compare(k[:8], now) > 0 {
			break
		}
		key := k[8:]
		if cur := keys.Get(key); cur != nil && bytes.Equal(cur, k[:8]) {
			if err := keys.Delete(key); err != nil {
				return n, err
			}
		}
		if err := c.Delete(); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// Sweep removes up to SweepBatch expired entries and reports how many it removed.
func (b *Bolt) Sweep() (int, error) {
	var n int
	err := b.db.Update(func(tx *bolt.Tx) error {
		var err error
		n, err = sweep(tx, expiryBytes(b.now()), SweepBatch)
		return err
	})
	if err != nil {
		return n, fmt.Errorf("replay: sweep: %w", err)
	}
	return n, nil
}

// Len returns the number of entries held, live or not yet swept.
func (b *Bolt) Len() (int, error) {
	n := 0
	err := b.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketKeys).Stats().KeyN
		return nil
	})
	return n, err
}

// GetMeta implements Meta.
func (b *Bolt) GetMeta(name string) ([]byte, error) {
	var v []byte
	err := b.db.View(func(tx *bolt.Tx) error {
		v = bytes.Clone(tx.Bucket(bucketMeta).Get([]byte(name)))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("replay: get %s: %w", name, err)
	}
	return v, nil
}

// PutMeta implements Meta: one transaction, synced even with WithNoSync.
func (b *Bolt) PutMeta(name string, v []byte) error {
	err := b.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put([]byte(name), v)
	})
	if err == nil && b.db.NoSync {
		err = b.db.Sync()
	}
	if err != nil {
		return fmt.Errorf("replay: put %s: %w", name, err)
	}
	return nil
}

// Path returns the file name.
func (b *Bolt) Path() string { return b.path }

// Close stops the background sweep and closes the file, releasing its lock.
func (b *Bolt) Close() error {
	b.mu.Lock()
	if b.stop != nil {
		close(b.stop)
		b.stop = nil
	}
	b.mu.Unlock()
	b.wg.Wait()
	if err := b.db.Close(); err != nil {
		return fmt.Errorf("replay: close: %w", err)
	}
	return nil
}
