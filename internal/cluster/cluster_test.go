package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/netport"
	"github.com/sesame-knock/sesame/internal/replay"
)

// fake is an in-memory Backend: one Redis shared by the nodes of a test. down makes every call
// fail at once; hang makes every call wait for its context.
type fake struct {
	mu      sync.Mutex
	keys    map[string]fakeVal
	streams map[string][]Message
	hashes  map[string]map[string]string
	seq     int
	runID   string
	down    atomic.Bool
	hang    atomic.Bool
	now     func() time.Time
	calls   atomic.Int64
}

type fakeVal struct {
	v   string
	exp time.Time
}

var errFakeDown = errors.New("fake: connection refused")

func newFake() *fake {
	return &fake{keys: map[string]fakeVal{}, streams: map[string][]Message{}, hashes: map[string]map[string]string{}, runID: "a", now: time.Now}
}

func (f *fake) gate(ctx context.Context) error {
	f.calls.Add(1)
	if f.hang.Load() {
		<-ctx.Done()
		return ctx.Err()
	}
	if f.down.Load() {
		return errFakeDown
	}
	return nil
}

// restart loses every key, as a redis-server without persistence does.
func (f *fake) restart() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.keys, f.runID = map[string]fakeVal{}, f.runID+"b"
}

func (f *fake) Claim(ctx context.Context, key, member string, ttl time.Duration) (bool, error) {
	if err := f.gate(ctx); err != nil {
		return false, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if v, ok := f.keys[key]; ok && v.exp.After(f.now()) {
		return false, nil
	}
	f.keys[key] = fakeVal{member, f.now().Add(ttl)}
	return true, nil
}

func (f *fake) Holder(ctx context.Context, key string) (string, error) {
	if err := f.gate(ctx); err != nil {
		return "", err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if v, ok := f.keys[key]; ok && v.exp.After(f.now()) {
		return v.v, nil
	}
	return "", nil
}

func (f *fake) Append(ctx context.Context, stream string, maxLen int64, data []byte) (string, error) {
	if err := f.gate(ctx); err != nil {
		return "", err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	id := fmt.Sprintf("%d-%d", f.now().UnixMilli(), f.seq) // time-based, as Redis's
	f.streams[stream] = append(f.streams[stream], Message{Stream: stream, ID: id, Data: data})
	return id, nil
}

// idNum orders stream ids: milliseconds, then sequence.
func idNum(id string) int {
	var ms, seq int
	fmt.Sscanf(id, "%d-%d", &ms, &seq)
	return ms*1000000 + seq
}

func (f *fake) Read(ctx context.Context, after map[string]string, block time.Duration, count int64) ([]Message, error) {
	deadline := time.Now().Add(block)
	for {
		if err := f.gate(ctx); err != nil {
			return nil, err
		}
		f.mu.Lock()
		var out []Message
		for s, id := range after {
			last := idNum(id)
			for _, m := range f.streams[s] {
				if idNum(m.ID) > last {
					out = append(out, m)
				}
			}
		}
		f.mu.Unlock()
		if len(out) > 0 || time.Now().After(deadline) {
			sort.Slice(out, func(i, j int) bool { return idNum(out[i].ID) < idNum(out[j].ID) })
			return out, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func (f *fake) Recent(ctx context.Context, stream string, n int64) ([]Message, error) {
	if err := f.gate(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Message
	s := f.streams[stream]
	for i := len(s) - 1; i >= 0 && int64(len(out)) < n; i-- {
		out = append(out, s[i])
	}
	return out, nil
}

func (f *fake) Beat(ctx context.Context, key, value string, ttl time.Duration) error {
	if err := f.gate(ctx); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.keys[key] = fakeVal{value, f.now().Add(ttl)}
	return nil
}

func (f *fake) Scan(ctx context.Context, prefix string) (map[string]string, error) {
	if err := f.gate(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]string{}
	for k, v := range f.keys {
		if strings.HasPrefix(k, prefix) && v.exp.After(f.now()) {
			out[k] = v.v
		}
	}
	return out, nil
}

func (f *fake) Ack(ctx context.Context, key, field, value string, ttl time.Duration) error {
	if err := f.gate(ctx); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.hashes[key] == nil {
		f.hashes[key] = map[string]string{}
	}
	f.hashes[key][field] = value
	return nil
}

func (f *fake) Hash(ctx context.Context, key string) (map[string]string, error) {
	if err := f.gate(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]string{}
	for k, v := range f.hashes[key] {
		out[k] = v
	}
	return out, nil
}

func (f *fake) ServerID(ctx context.Context) (string, error) {
	if err := f.gate(ctx); err != nil {
		return "", err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.runID, nil
}

func (f *fake) Close() error { return nil }

// member is a node on b with a local memory store, running until the test ends.
type member struct {
	*Node
	store   replay.Store
	applied chan Event
	cancel  context.CancelFunc
	done    chan struct{}
}

func newMember(t *testing.T, b Backend, name, mode string, groups []string, stateDir string, run bool) *member {
	t.Helper()
	m := &member{applied: make(chan Event, 100)}
	m.Node = New(b, Options{Member: name, Groups: groups, Mode: mode, Timeout: 50 * time.Millisecond, StateDir: stateDir,
		Apply: func(_ context.Context, ev Event) error { m.applied <- ev; return nil }})
	m.store = m.Replay(replay.NewMemory(0))
	if run {
		m.start(t)
	}
	return m
}

func (m *member) start(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel, m.done = cancel, make(chan struct{})
	go func() { m.Run(ctx); close(m.done) }()
	t.Cleanup(m.stop)
}

func (m *member) stop() {
	if m.cancel != nil {
		m.cancel()
		<-m.done
		m.cancel = nil
	}
}

func insert(t *testing.T, s replay.Store, key string) (bool, error) {
	t.Helper()
	now := time.Now()
	return s.InsertAt(context.Background(), []byte(key), now, now.Add(time.Minute))
}

// TestReplayAcrossMembers: of many concurrent inserts of one key spread over three members,
// exactly one is accepted, and a key accepted on one member is refused on the others.
func TestReplayAcrossMembers(t *testing.T) {
	b := newFake()
	ms := []*member{newMember(t, b, "a", Refuse, nil, "", false), newMember(t, b, "b", Refuse, nil, "", false), newMember(t, b, "c", Refuse, nil, "", false)}
	for round := range 20 {
		key := fmt.Sprintf("k%d", round)
		var wg sync.WaitGroup
		var accepted atomic.Int64
		for i := range 1000 {
			wg.Go(func() {
				ok, err := insert(t, ms[i%3].store, key)
				if err != nil {
					t.Error(err)
				}
				if ok {
					accepted.Add(1)
				}
			})
		}
		wg.Wait()
		if n := accepted.Load(); n != 1 {
			t.Fatalf("round %d: %d of 1000 parallel replays accepted, want 1", round, n)
		}
	}
}

// TestRedisDown covers both modes while Redis is down, and the bound on a hung Redis.
func TestRedisDown(t *testing.T) {
	for _, tc := range []struct {
		name, mode string
		hang       bool
		wantOK     bool
		wantErr    error
	}{
		{"refuse, down", Refuse, false, false, ErrRedisDown},
		{"refuse, hung", Refuse, true, false, ErrRedisDown},
		{"local, down", Local, false, true, nil},
		{"local, hung", Local, true, true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newFake()
			m := newMember(t, b, "a", tc.mode, nil, "", false)
			b.down.Store(!tc.hang)
			b.hang.Store(tc.hang)
			start := time.Now()
			ok, err := insert(t, m.store, "k1")
			if took := time.Since(start); took > 200*time.Millisecond {
				t.Errorf("insert took %v with Redis %s; the bound is the 50ms timeout", took, tc.name)
			}
			if ok != tc.wantOK || !errors.Is(err, tc.wantErr) {
				t.Fatalf("insert = %v, %v; want %v, %v", ok, err, tc.wantOK, tc.wantErr)
			}
			if m.Up() {
				t.Error("node still up after a failed call")
			}
			// Known down: the next packet does not wait at all.
			calls := b.calls.Load()
			ok, err = insert(t, m.store, "k2")
			if ok != tc.wantOK || !errors.Is(err, tc.wantErr) || b.calls.Load() != calls {
				t.Fatalf("second insert = %v, %v (%d calls); want %v, %v without calling Redis", ok, err, b.calls.Load()-calls, tc.wantOK, tc.wantErr)
			}
		})
	}
}

// TestRecovery: after Redis comes back the health loop marks it up and packets are decided by
// Redis again; in Local mode the claims made during the outage are pushed, and one accepted by
// two members is detected.
func TestRecovery(t *testing.T) {
	for _, mode := range []string{Refuse, Local} {
		t.Run(mode, func(t *testing.T) {
			b := newFake()
			a := newMember(t, b, "a", mode, nil, "", true)
			c := newMember(t, b, "c", mode, nil, "", true)
			if ok, _ := insert(t, a.store, "before"); !ok {
				t.Fatal("first packet refused")
			}
			b.down.Store(true)
			insert(t, a.store, "during") // fails and marks a down
			insert(t, c.store, "during") // the same packet replayed to c
			b.down.Store(false)
			if !waitFor(3*time.Second, func() bool { return a.Up() && c.Up() }) {
				t.Fatal("nodes not up 3s after Redis came back")
			}
			if ok, err := insert(t, c.store, "after"); !ok || err != nil {
				t.Fatalf("after recovery: %v, %v", ok, err)
			}
			if ok, _ := insert(t, c.store, "before"); ok {
				t.Fatal("a packet accepted before the outage was accepted again")
			}
			conflicts := a.Counters.Conflicts.Load() + c.Counters.Conflicts.Load()
			switch mode {
			case Local:
				if conflicts != 1 {
					t.Fatalf("conflicts = %d, want 1: both members accepted 'during' locally", conflicts)
				}
				// Reconciled into Redis: a third member refuses it.
				d := newMember(t, b, "d", mode, nil, "", false)
				if ok, _ := insert(t, d.store, "during"); ok {
					t.Fatal("a packet accepted during the outage was accepted again after it")
				}
			case Refuse:
				if conflicts != 0 || a.Counters.RefusedDown.Load() == 0 {
					t.Fatalf("conflicts %d, refused %d", conflicts, a.Counters.RefusedDown.Load())
				}
			}
		})
	}
}

// TestRedisRestartLosesKeys: a Redis restarted without persistence has lost the claims; each
// member pushes its own back, so a replay of an earlier packet is still refused elsewhere.
func TestRedisRestartLosesKeys(t *testing.T) {
	b := newFake()
	a := newMember(t, b, "a", Refuse, nil, "", true)
	c := newMember(t, b, "c", Refuse, nil, "", false)
	if !waitFor(time.Second, func() bool { return a.serverID.Load() != nil }) {
		t.Fatal("no health check")
	}
	if ok, _ := insert(t, a.store, "p"); !ok {
		t.Fatal("refused")
	}
	b.restart()
	if !waitFor(3*time.Second, func() bool { return a.Counters.Reconciled.Load() > 0 }) {
		t.Fatal("claims not restored after the restart")
	}
	if ok, _ := insert(t, c.store, "p"); ok {
		t.Fatal("packet accepted on c after Redis lost a's claim")
	}
}

func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(5 * time.Millisecond)
	}
	return cond()
}

var (
	client = netip.MustParseAddr("198.18.0.2")
	ssh    = netport.Port{Proto: netport.TCP, Num: 22}
)

func grantEvent(group string, expires time.Time) Event {
	return Event{Kind: KindGrant, Group: group, By: "alice", Grants: []Grant{{Src: client, Port: ssh, Expires: expires}}}
}

func recv(t *testing.T, m *member, d time.Duration) (Event, bool) {
	t.Helper()
	select {
	case ev := <-m.applied:
		return ev, true
	case <-time.After(d):
		return Event{}, false
	}
}

// TestFanOut: a grant published by one member is applied once by the others of its group, with
// its absolute expiry; a member of another group does not see it; a ban published to two
// groups is applied once by a member of both.
func TestFanOut(t *testing.T) {
	b := newFake()
	a := newMember(t, b, "a", Refuse, []string{"web", "db"}, "", true)
	w := newMember(t, b, "w", Refuse, []string{"web", "db"}, "", true)
	d := newMember(t, b, "d", Refuse, []string{"db"}, "", true)
	time.Sleep(100 * time.Millisecond) // consumers positioned at the streams' ends
	exp := time.Now().Add(time.Minute).Truncate(time.Millisecond)
	a.Publish(grantEvent("web", exp))
	ev, ok := recv(t, w, 2*time.Second)
	if !ok || ev.Origin != "a" || ev.By != "alice" || len(ev.Grants) != 1 || !ev.Grants[0].Expires.Equal(exp) || ev.Grants[0].Src != client {
		t.Fatalf("w applied %+v (%v)", ev, ok)
	}
	if ev, ok := recv(t, d, 200*time.Millisecond); ok {
		t.Fatalf("d (group db only) applied %+v", ev)
	}
	if ev, ok := recv(t, a, 100*time.Millisecond); ok {
		t.Fatalf("the origin applied its own event: %+v", ev)
	}
	a.Publish(Event{Kind: KindBan, Src: client, Until: time.Now().Add(time.Minute), Reason: "decoy"})
	if ev, ok := recv(t, w, 2*time.Second); !ok || ev.Kind != KindBan {
		t.Fatalf("w: ban not applied: %+v", ev)
	}
	if ev, ok := recv(t, w, 300*time.Millisecond); ok {
		t.Fatalf("w applied the ban twice (it is on two group streams): %+v", ev)
	}
	if ev, ok := recv(t, d, 2*time.Second); !ok || ev.Kind != KindBan {
		t.Fatalf("d: ban not applied: %+v", ev)
	}
	var st Status
	if !waitFor(2*time.Second, func() bool {
		st = a.Status(context.Background())
		return len(st.Members) == 3 && len(st.Grants) == 1 && strings.Join(st.Grants[0].HeldBy, ",") == "a,w"
	}) {
		t.Fatalf("status: %+v", st)
	}
}

// TestCatchUp: a member away while grants were published applies, when it comes back from its
// saved position, those still valid and only those, each once.
func TestCatchUp(t *testing.T) {
	b := newFake()
	dir := t.TempDir()
	a := newMember(t, b, "a", Refuse, []string{"web"}, "", true)
	w := newMember(t, b, "w", Refuse, []string{"web"}, dir, true)
	time.Sleep(100 * time.Millisecond)
	a.Publish(grantEvent("web", time.Now().Add(time.Minute)))
	if _, ok := recv(t, w, 2*time.Second); !ok {
		t.Fatal("first grant not applied")
	}
	w.stop()
	live := time.Now().Add(time.Minute)
	a.Publish(grantEvent("web", time.Now().Add(150*time.Millisecond))) // expires while w is away
	a.Publish(grantEvent("web", live))
	if !waitFor(time.Second, func() bool { return a.Counters.Published.Load() == 3 }) {
		t.Fatal("not published")
	}
	time.Sleep(200 * time.Millisecond)
	w2 := newMember(t, b, "w", Refuse, []string{"web"}, dir, true)
	ev, ok := recv(t, w2, 2*time.Second)
	if !ok || !ev.Grants[0].Expires.Equal(live.Truncate(time.Millisecond)) {
		t.Fatalf("caught up with %+v (%v), want the live grant", ev, ok)
	}
	if ev, ok := recv(t, w2, 300*time.Millisecond); ok {
		t.Fatalf("applied more than the live grant: %+v", ev)
	}
	if w2.Counters.Skipped.Load() != 1 {
		t.Fatalf("skipped %d expired grants, want 1", w2.Counters.Skipped.Load())
	}
}

// TestPublishWhileDown: events published while Redis is down are sent once it is back, except
// grants that expired meanwhile.
func TestPublishWhileDown(t *testing.T) {
	b := newFake()
	a := newMember(t, b, "a", Refuse, []string{"web"}, "", true)
	w := newMember(t, b, "w", Refuse, []string{"web"}, "", true)
	time.Sleep(100 * time.Millisecond)
	b.down.Store(true)
	insert(t, a.store, "x") // a learns Redis is down
	a.Publish(grantEvent("web", time.Now().Add(50*time.Millisecond)))
	a.Publish(grantEvent("web", time.Now().Add(time.Minute)))
	time.Sleep(150 * time.Millisecond)
	b.down.Store(false)
	ev, ok := recv(t, w, 3*time.Second)
	if !ok || time.Until(ev.Grants[0].Expires) < 30*time.Second {
		t.Fatalf("w applied %+v (%v), want the minute-long grant", ev, ok)
	}
	if ev, ok := recv(t, w, 300*time.Millisecond); ok {
		t.Fatalf("w applied an expired grant: %+v", ev)
	}
}

// TestDecodeEvent refuses entries a member must not apply.
func TestDecodeEvent(t *testing.T) {
	good, _ := encodeEvent(Event{Kind: KindGrant, ID: "x", Origin: "a", Grants: []Grant{{Src: client, Port: ssh, Expires: time.Now()}}})
	if _, err := decodeEvent(good); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{
		`{}`, `{"v":2,"kind":"grant","id":"x","origin":"a"}`, `{"v":1,"kind":"exec","id":"x","origin":"a"}`,
		`{"v":1,"kind":"grant","origin":"a"}`, `{"v":1,"kind":"grant","id":"x","origin":"a","grants":[{"src":"nope","port":"tcp/22"}]}`,
		`{"v":1,"kind":"grant","id":"x","origin":"a","grants":[{"src":"1.2.3.4","port":"tcp/0x"}]}`, `not json`,
		strings.Repeat(" ", maxEventBytes+1),
	} {
		if _, err := decodeEvent([]byte(bad)); err == nil {
			t.Errorf("decoded %.60q", bad)
		}
	}
}

// TestApplyNotReady: an entry Apply is not ready for is read again, not skipped.
func TestApplyNotReady(t *testing.T) {
	b := newFake()
	a := newMember(t, b, "a", Refuse, []string{"web"}, "", true)
	var refusals atomic.Int64
	applied := make(chan Event, 10)
	w := New(b, Options{Member: "w", Groups: []string{"web"}, Timeout: 50 * time.Millisecond,
		Apply: func(_ context.Context, ev Event) error {
			if refusals.Add(1) <= 2 {
				return fmt.Errorf("starting: %w", ErrNotReady)
			}
			applied <- ev
			return nil
		}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	time.Sleep(100 * time.Millisecond)
	a.Publish(grantEvent("web", time.Now().Add(time.Minute)))
	select {
	case <-applied:
	case <-time.After(3 * time.Second):
		t.Fatal("the entry was skipped after Apply was not ready")
	}
	select {
	case ev := <-applied:
		t.Fatalf("applied twice: %+v", ev)
	case <-time.After(300 * time.Millisecond):
	}
}

// TestFreshMemberNoGap: a member without a saved position applies what was published after it
// was created, even before its first read (a server becomes ready, and others publish, before
// the consumer's first XREAD).
func TestFreshMemberNoGap(t *testing.T) {
	b := newFake()
	a := newMember(t, b, "a", Refuse, []string{"web"}, "", true)
	old := grantEvent("web", time.Now().Add(time.Minute))
	b.mu.Lock()
	b.streams["sesame:grants:web"] = append(b.streams["sesame:grants:web"], Message{Stream: "sesame:grants:web",
		ID: fmt.Sprintf("%d-0", time.Now().Add(-time.Minute).UnixMilli()), Data: mustEncode(t, old)})
	b.mu.Unlock()
	w := newMember(t, b, "w", Refuse, []string{"web"}, "", false)
	a.Publish(grantEvent("web", time.Now().Add(time.Minute)))
	if !waitFor(time.Second, func() bool { return a.Counters.Published.Load() == 1 }) {
		t.Fatal("not published")
	}
	w.start(t)
	if ev, ok := recv(t, w, 2*time.Second); !ok || ev.Origin != "a" || ev.ID == old.ID {
		t.Fatalf("applied %+v (%v), want the grant published before the first read", ev, ok)
	}
	if ev, ok := recv(t, w, 300*time.Millisecond); ok {
		t.Fatalf("applied an entry from before the member started: %+v", ev)
	}
}

func mustEncode(t *testing.T, ev Event) []byte {
	t.Helper()
	ev.ID, ev.Origin = "old", "z"
	b, err := encodeEvent(ev)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestClaimTablesBounded: the claims a member keeps for reconciliation are bounded. With Redis
// up, a claim beyond the bound is not kept (counted); with Redis down in Local mode, a packet
// beyond the bound is refused with ErrOutageFull (fail closed, counted) rather than accepted and
// forgotten; expired claims make room again; and every outage claim accepted, also those the
// full claims table did not hold, is pushed to Redis when it is back.
func TestClaimTablesBounded(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	b := newFake()
	a := &member{applied: make(chan Event, 100)}
	a.Node = New(b, Options{Member: "a", Mode: Local, Timeout: 50 * time.Millisecond, Now: clock,
		Apply: func(_ context.Context, ev Event) error { a.applied <- ev; return nil }})
	a.max = 4
	a.store = a.Replay(replay.NewMemory(0))
	ins := func(key string, life time.Duration) (bool, error) {
		t0 := clock()
		return a.store.InsertAt(context.Background(), []byte(key), t0, t0.Add(life))
	}

	// Redis up: 3 short-lived claims and 2 long ones fill the table; the 6th is not kept.
	for i := range 3 {
		if ok, err := ins(fmt.Sprintf("short%d", i), time.Second); !ok || err != nil {
			t.Fatalf("short%d: %v, %v", i, ok, err)
		}
	}
	for _, k := range []string{"long0", "long1", "long2"} {
		if ok, err := ins(k, time.Hour); !ok || err != nil {
			t.Fatalf("%s: %v, %v", k, ok, err)
		}
	}
	if got := a.Counters.NotKept.Load(); got != 2 {
		t.Fatalf("NotKept = %d after 6 claims into a table of 4, want 2", got)
	}

	// Redis down: outage claims up to the bound are accepted, the next is refused.
	b.down.Store(true)
	for i := range 4 {
		if ok, err := ins(fmt.Sprintf("out%d", i), time.Hour); !ok || err != nil {
			t.Fatalf("outage claim %d: %v, %v", i, ok, err)
		}
	}
	if ok, err := ins("out4", time.Hour); ok || !errors.Is(err, ErrOutageFull) {
		t.Fatalf("5th outage claim = %v, %v; want refused with ErrOutageFull", ok, err)
	}
	if got := a.Counters.RefusedFull.Load(); got != 1 {
		t.Fatalf("RefusedFull = %d, want 1", got)
	}
	// Time passes; the outage claims do not expire within it, so it stays full.
	advance(2 * time.Second)
	if ok, err := ins("out5", time.Hour); ok || !errors.Is(err, ErrOutageFull) {
		t.Fatalf("outage claim into a full table after 2s = %v, %v; want refused", ok, err)
	}

	// Redis back: every accepted outage claim reaches Redis, so another member refuses each.
	b.down.Store(false)
	a.start(t)
	if !waitFor(3*time.Second, func() bool { return a.Up() }) {
		t.Fatal("not up 3s after Redis came back")
	}
	c := newMember(t, b, "c", Local, nil, "", false)
	for _, k := range []string{"out0", "out1", "out2", "out3", "long0"} {
		if ok, err := insert(t, c.store, k); ok || err != nil {
			t.Errorf("%s accepted on another member after reconciliation (%v, %v)", k, ok, err)
		}
	}
	// Refused packets were never accepted: a fresh one of them is free in the fleet.
	if ok, err := insert(t, c.store, "out4"); !ok || err != nil {
		t.Errorf("out4, refused during the outage, is not free afterwards: %v, %v", ok, err)
	}
}

// TestOutageTableSweepsExpired: in a long outage, expired outage claims make room for new ones.
func TestOutageTableSweepsExpired(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	b := newFake()
	n := New(b, Options{Member: "a", Mode: Local, Timeout: 50 * time.Millisecond, Now: clock})
	n.max = 2
	store := n.Replay(replay.NewMemory(0))
	b.down.Store(true)
	ins := func(key string, life time.Duration) (bool, error) {
		t0 := clock()
		return store.InsertAt(context.Background(), []byte(key), t0, t0.Add(life))
	}
	for _, k := range []string{"a", "b"} {
		if ok, err := ins(k, time.Second); !ok || err != nil {
			t.Fatalf("%s: %v, %v", k, ok, err)
		}
	}
	if ok, _ := ins("c", time.Second); ok {
		t.Fatal("a third claim was accepted into a table of 2")
	}
	mu.Lock()
	now = now.Add(2 * time.Second) // a and b have expired, and a sweep is due
	mu.Unlock()
	if ok, err := ins("d", time.Second); !ok || err != nil {
		t.Fatalf("after the claims expired: %v, %v; want accepted", ok, err)
	}
}
