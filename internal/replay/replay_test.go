package replay

import (
	"context"
	"errors"
	"fmt"
	bolt "go.etcd.io/bbolt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newClock() *clock { return &clock{t: time.Unix(1_800_000_000, 0)} }

type store interface {
	Store
	InsertIfAbsent(ctx context.Context, key []byte, expiry time.Time) (bool, error)
}

// stores returns each Store implementation on clk.
func stores(t *testing.T, clk *clock) map[string]store {
	t.Helper()
	b, err := OpenBolt(filepath.Join(t.TempDir(), "replay.db"), WithClock(clk.now))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	m := NewMemory(1000)
	m.SetClock(clk.now)
	return map[string]store{"bolt": b, "memory": m}
}

func TestReplayInsertIfAbsent(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	for name, s := range stores(t, clk) {
		t.Run(name, func(t *testing.T) {
			steps := []struct {
				key     string
				advance time.Duration
				expiry  time.Duration // from the clock after advancing
				want    bool
			}{
				{"a", 0, time.Minute, true},
				{"a", 0, time.Minute, false},
				{"b", 0, time.Minute, true},
				{"a", 30 * time.Second, time.Minute, false},
				{"a", 31 * time.Second, time.Minute, true}, // "a" expired
				{"b", 0, time.Minute, true},                // "b" too
				{"b", 0, time.Minute, false},
			}
			for i, st := range steps {
				clk.add(st.advance)
				got, err := s.InsertIfAbsent(ctx, []byte(name+st.key), clk.now().Add(st.expiry))
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				if got != st.want {
					t.Fatalf("step %d: insert %q = %v, want %v", i, st.key, got, st.want)
				}
			}
		})
	}
}

func TestReplayConcurrentInsertsOneWins(t *testing.T) {
	clk := newClock()
	for name, s := range stores(t, clk) {
		t.Run(name, func(t *testing.T) {
			for k := range 5 {
				var wins atomic.Int32
				var wg sync.WaitGroup
				key := []byte(fmt.Sprintf("key-%d", k))
				for range 16 {
					wg.Go(func() {
						ok, err := s.InsertIfAbsent(context.Background(), key, clk.now().Add(time.Minute))
						if err != nil {
							t.Error(err)
						}
						if ok {
							wins.Add(1)
						}
					})
				}
				wg.Wait()
				if n := wins.Load(); n != 1 {
					t.Fatalf("key %d: %d inserts won, want exactly 1", k, n)
				}
			}
		})
	}
}

func TestReplayBoltPersistsAcrossReopen(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	path := filepath.Join(t.TempDir(), "replay.db")
	b, err := OpenBolt(path, WithClock(clk.now))
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := b.InsertIfAbsent(ctx, []byte("nonce"), clk.now().Add(time.Minute)); !ok || err != nil {
		t.Fatalf("first insert: %v %v", ok, err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode().Perm())
	}
	b, err = OpenBolt(path, WithClock(clk.now))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if ok, err := b.InsertIfAbsent(ctx, []byte("nonce"), clk.now().Add(time.Minute)); ok || err != nil {
		t.Fatalf("insert after reopen: %v %v, want refused", ok, err)
	}
	clk.add(2 * time.Minute)
	if ok, err := b.InsertIfAbsent(ctx, []byte("nonce"), clk.now().Add(time.Minute)); !ok || err != nil {
		t.Fatalf("insert after expiry: %v %v, want inserted", ok, err)
	}
}

func TestReplayBoltSweep(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	b, err := OpenBolt(filepath.Join(t.TempDir(), "replay.db"), WithClock(clk.now))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	const n = 100
	for i := range n {
		if _, err := b.InsertIfAbsent(ctx, []byte(fmt.Sprint("old", i)), clk.now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	clk.add(2 * time.Second)
	// One insert sweeps at most SweepPerInsert entries.
	if _, err := b.InsertIfAbsent(ctx, []byte("new"), clk.now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got, _ := b.Len(); got != n+1-SweepPerInsert {
		t.Errorf("after one insert: %d entries, want %d", got, n+1-SweepPerInsert)
	}
	if removed, err := b.Sweep(); err != nil || removed != n-SweepPerInsert {
		t.Errorf("Sweep removed %d (%v), want %d", removed, err, n-SweepPerInsert)
	}
	if got, _ := b.Len(); got != 1 {
		t.Errorf("after sweep: %d entries, want 1", got)
	}
	if ok, _ := b.InsertIfAbsent(ctx, []byte("new"), clk.now().Add(time.Hour)); ok {
		t.Error("live entry was swept")
	}
}

func TestReplayBoltErrors(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name string
		path func() string
		want string
	}{
		{"missing dir", func() string { return filepath.Join(dir, "nope", "replay.db") }, "does not exist"},
		{"locked", func() string {
			p := filepath.Join(dir, "locked.db")
			b, err := OpenBolt(p)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { b.Close() })
			return p
		}, "locked by another process"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, err := OpenBolt(tc.path(), WithLockTimeout(100*time.Millisecond))
			if err == nil {
				b.Close()
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "replay: open: ") {
				t.Errorf("error %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestReplayMemoryBounded(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	m := NewMemory(3)
	m.SetClock(clk.now)
	for i := range 3 {
		if ok, err := m.InsertIfAbsent(ctx, []byte{byte(i)}, clk.now().Add(time.Second)); !ok || err != nil {
			t.Fatal(ok, err)
		}
	}
	if _, err := m.InsertIfAbsent(ctx, []byte{9}, clk.now().Add(time.Second)); !errors.Is(err, ErrFull) {
		t.Fatalf("full store: err %v, want ErrFull", err)
	}
	clk.add(time.Second)
	if ok, err := m.InsertIfAbsent(ctx, []byte{9}, clk.now().Add(time.Second)); !ok || err != nil {
		t.Fatalf("after expiry: %v %v", ok, err)
	}
	if m.Len() != 1 {
		t.Errorf("Len %d, want 1", m.Len())
	}
	m.Close()
	if _, err := m.InsertIfAbsent(ctx, []byte{1}, clk.now()); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: %v", err)
	}
}

// benchInsert inserts a new key per op into s, and closes s at the end.
func benchInsert(b *testing.B, s Store) {
	b.Helper()
	defer s.Close()
	exp := time.Now().Add(time.Hour)
	for i := 0; b.Loop(); i++ {
		if _, err := s.InsertAt(context.Background(), fmt.Appendf(nil, "k%d", i), time.Now(), exp); err != nil {
			b.Fatal(err)
		}
	}
}

func openBenchBolt(b *testing.B, opts ...Option) *Bolt {
	b.Helper()
	s, err := OpenBolt(filepath.Join(b.TempDir(), "replay.db"), opts...)
	if err != nil {
		b.Fatal(err)
	}
	return s
}

func BenchmarkReplayBoltInsert(b *testing.B) { benchInsert(b, openBenchBolt(b)) }

func BenchmarkReplayBoltInsertNoSync(b *testing.B) {
	benchInsert(b, openBenchBolt(b, WithNoSync(), WithSyncEvery(time.Second)))
}

func TestWriteBehindPersists(t *testing.T) {
	path := filepath.Join(t.TempDir(), "replay.db")
	ctx := context.Background()
	exp := time.Now().Add(time.Hour)
	open := func() *WriteBehind {
		b, err := OpenBolt(path, WithNoSync())
		if err != nil {
			t.Fatal(err)
		}
		w, err := NewWriteBehind(b, 1000)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	w := open()
	for i := 0; i < 100; i++ {
		if ok, err := w.InsertIfAbsent(ctx, fmt.Appendf(nil, "k%d", i), exp); !ok || err != nil {
			t.Fatalf("insert k%d: %v, %v", i, ok, err)
		}
	}
	if ok, _ := w.InsertIfAbsent(ctx, []byte("k7"), exp); ok {
		t.Fatal("a replay was accepted")
	}
	if ok, _ := w.InsertIfAbsent(ctx, []byte("gone"), time.Now().Add(-time.Second)); !ok {
		t.Fatal("an expired key could not be inserted")
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w = open()
	defer w.Close()
	for i := 0; i < 100; i++ {
		if ok, _ := w.InsertIfAbsent(ctx, fmt.Appendf(nil, "k%d", i), exp); ok {
			t.Fatalf("after reopen: k%d accepted again", i)
		}
	}
	if w.Len() != 100 {
		t.Errorf("after reopen %d live keys in memory, want 100 (expired ones are not loaded)", w.Len())
	}
}

// TestWriteBehindWritesBehind checks that accepted keys reach the file a FlushDelay after
// PersistSoon, not before it, and at once when QueueLen of them are waiting.
func TestWriteBehindWritesBehind(t *testing.T) {
	b, err := OpenBolt(filepath.Join(t.TempDir(), "replay.db"), WithNoSync())
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewWriteBehind(b, 2*QueueLen)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ctx := context.Background()
	exp := time.Now().Add(time.Hour)
	inFile := func() int {
		n := 0
		b.db.View(func(tx *bolt.Tx) error {
			n = tx.Bucket(bucketKeys).Stats().KeyN
			return nil
		})
		return n
	}
	for i := range 3 {
		w.InsertIfAbsent(ctx, fmt.Appendf(nil, "a%d", i), exp)
	}
	time.Sleep(10 * FlushDelay)
	if n := inFile(); n != 0 {
		t.Fatalf("%d keys written before PersistSoon", n)
	}
	w.PersistSoon()
	deadline := time.Now().Add(5 * time.Second)
	for inFile() < 3 && time.Now().Before(deadline) {
		time.Sleep(FlushDelay)
	}
	if n := inFile(); n != 3 {
		t.Fatalf("%d keys in the file after 5 s, want 3", n)
	}
	// QueueLen waiting keys are written by the insert that makes them QueueLen.
	w.mu.Lock()
	for i := range QueueLen - 1 {
		k := fmt.Appendf(nil, "b%d", i)
		w.mem.InsertIfAbsent(ctx, k, exp)
		w.pending = append(w.pending, pending{key: k, expiry: exp})
	}
	w.mu.Unlock()
	if ok, err := w.InsertIfAbsent(ctx, []byte("last"), exp); !ok || err != nil {
		t.Fatalf("insert: %v, %v", ok, err)
	}
	if n := inFile(); n != 3+QueueLen {
		t.Errorf("%d keys in the file right after the QueueLen-th insert, want %d", n, 3+QueueLen)
	}
}

func BenchmarkReplayWriteBehindInsert(b *testing.B) {
	w, err := NewWriteBehind(openBenchBolt(b, WithNoSync()), 1<<20)
	if err != nil {
		b.Fatal(err)
	}
	benchInsert(b, w)
}

// TestReplayBoltNoFollow: a symbolic link (or anything but a regular file) in the store's place
// is refused, and the file it points to is left as it was; an existing store of another mode is
// made 0600.
func TestReplayBoltNoFollow(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "precious")
	if err := os.WriteFile(target, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		make func(path string) error
		err  string
	}{
		{"link to a file", func(p string) error { return os.Symlink(target, p) }, "is a symbolic link"},
		{"dangling link", func(p string) error { return os.Symlink(filepath.Join(dir, "nothing"), p) }, "is a symbolic link"},
		{"directory", func(p string) error { return os.Mkdir(p, 0o700) }, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "replay.db")
			if err := tc.make(path); err != nil {
				t.Fatal(err)
			}
			b, err := OpenBolt(path, WithLockTimeout(100*time.Millisecond))
			if err == nil {
				b.Close()
				t.Fatal("opened")
			}
			if !strings.Contains(err.Error(), tc.err) {
				t.Errorf("err = %v, want %q", err, tc.err)
			}
		})
	}
	if data, err := os.ReadFile(target); err != nil || string(data) != "keep me" {
		t.Errorf("the link's target changed: %q, %v", data, err)
	}
	if st, err := os.Stat(target); err != nil || st.Mode().Perm() != 0o644 {
		t.Errorf("the link's target mode changed: %v, %v", st, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "nothing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the dangling link's target was created: %v", err)
	}

	path := filepath.Join(t.TempDir(), "replay.db")
	b, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err = OpenBolt(path); err != nil {
		t.Fatal(err)
	}
	b.Close()
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("reopened store: %v, %v; want mode 0600", st, err)
	}
}

// TestReplayInsertAtTakesTheCallersClock: a store judges liveness at the clock reading it is
// given, not at its own, so the caller's age check and replay check read one clock once.
func TestReplayInsertAtTakesTheCallersClock(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	for name, s := range stores(t, clk) {
		t.Run(name, func(t *testing.T) {
			t0 := clk.now()
			clk.add(time.Hour) // the store's own clock is far ahead of the caller's
			steps := []struct {
				at   time.Duration // the caller's reading, from t0
				want bool
			}{
				{0, true},
				{time.Minute - time.Nanosecond, false}, // live until expiry, exclusive
				{time.Minute, true},                    // expired exactly at expiry
			}
			for i, st := range steps {
				got, err := s.InsertAt(ctx, []byte(name+"k"), t0.Add(st.at), t0.Add(time.Minute))
				if err != nil || got != st.want {
					t.Fatalf("step %d: InsertAt at +%v = %v, %v; want %v", i, st.at, got, err, st.want)
				}
				if st.want { // re-inserted with a new expiry a minute later
					t0 = t0.Add(st.at)
				}
			}
		})
	}
}

// TestReplayMeta: Bolt keeps meta values across a reopen, and WriteBehind reads and writes them
// through.
func TestReplayMeta(t *testing.T) {
	path := filepath.Join(t.TempDir(), "replay.db")
	b, err := OpenBolt(path, WithNoSync())
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewWriteBehind(b, 10)
	if err != nil {
		t.Fatal(err)
	}
	var _ Meta = w
	if v, err := w.GetMeta("x"); v != nil || err != nil {
		t.Fatalf("unset: %q, %v", v, err)
	}
	if err := w.PutMeta("x", []byte("one")); err != nil {
		t.Fatal(err)
	}
	w.Close()
	b, err = OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if v, err := b.GetMeta("x"); string(v) != "one" || err != nil {
		t.Errorf("after reopen: %q, %v", v, err)
	}
}
