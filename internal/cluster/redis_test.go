package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/cluster/redistest"
	"github.com/sesame-knock/sesame/internal/replay"
)

// startRedis runs a redis-server of the test's own on a unix socket; stopped when it ends.
func startRedis(t *testing.T, args ...string) *redistest.Server {
	t.Helper()
	dir, err := os.MkdirTemp("", "rds")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s, err := redistest.Start(dir, args...)
	if err != nil {
		t.Fatalf("%v (redis-server is installed by .ci/deps.sh)", err)
	}
	t.Cleanup(s.Stop)
	return s
}

func redisMember(t *testing.T, s *redistest.Server, o RedisOptions, name, mode string, groups []string, dir string) *member {
	t.Helper()
	if o.URL == "" {
		o.URL = s.URL()
	}
	o.Timeout = 200 * time.Millisecond
	b, err := NewRedis(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	m := newMember(t, b, name, mode, groups, dir, true)
	return m
}

// TestIntegrationRedisReplay: with a real redis-server, 1000 parallel inserts of one key over
// three members (three clients) accept it once; while Redis is killed a refuse member refuses
// within the timeout and a local member accepts; after the restart both work again and the
// local member's outage claim is in Redis.
func TestIntegrationRedisReplay(t *testing.T) {
	s := startRedis(t)
	var ms []*member
	for _, n := range []string{"a", "b", "c"} {
		ms = append(ms, redisMember(t, s, RedisOptions{}, n, Refuse, nil, ""))
	}
	for round := range 5 {
		key := fmt.Sprintf("pkt%d", round)
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
			t.Fatalf("round %d: %d of 1000 accepted, want 1", round, n)
		}
	}
	loc := redisMember(t, s, RedisOptions{}, "l", Local, nil, "")
	s.Stop()
	start := time.Now()
	ok, err := insert(t, ms[0].store, "down1")
	if took := time.Since(start); ok || !errors.Is(err, ErrRedisDown) || took > 500*time.Millisecond {
		t.Fatalf("refuse member while Redis is down: %v, %v after %v", ok, err, took)
	}
	if ok, err := insert(t, loc.store, "down1"); !ok || err != nil {
		t.Fatalf("local member while Redis is down: %v, %v", ok, err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if !waitFor(5*time.Second, func() bool { return ms[0].Up() && loc.Up() }) {
		t.Fatal("members not up 5s after Redis came back")
	}
	if ok, err := insert(t, ms[1].store, "down1"); ok || err != nil {
		t.Fatalf("the local member's outage claim was not reconciled: b accepted it (%v, %v)", ok, err)
	}
	if ok, err := insert(t, ms[0].store, "after"); !ok || err != nil {
		t.Fatalf("after the restart: %v, %v", ok, err)
	}
	// The restart lost every key (no persistence); the members pushed theirs back.
	if ok, _ := insert(t, ms[2].store, "pkt0"); ok {
		t.Fatal("a packet accepted before the restart was accepted again")
	}
}

// TestIntegrationRedisACL: an ACL user with a password (from the options, never the URL) works;
// a wrong password fails closed.
func TestIntegrationRedisACL(t *testing.T) {
	// The command list docs/FLEET.md suggests.
	s := startRedis(t, "--user", "default", "off", "--user", "sesame", "on", ">fleet-pass-1", "~sesame:*", "&*", "-@all",
		"+set", "+get", "+xadd", "+xread", "+xrevrange", "+hset", "+hgetall", "+pexpire", "+scan", "+mget", "+info", "+multi", "+exec", "+ping")
	good := redisMember(t, s, RedisOptions{User: "sesame", Password: "fleet-pass-1"}, "a", Refuse, []string{"web"}, "")
	w := redisMember(t, s, RedisOptions{User: "sesame", Password: "fleet-pass-1"}, "w", Refuse, []string{"web"}, "")
	if ok, err := insert(t, good.store, "k"); !ok || err != nil {
		t.Fatalf("with the ACL user: %v, %v", ok, err)
	}
	if ok, err := insert(t, w.store, "k"); ok || err != nil {
		t.Fatalf("replay with the ACL user: %v, %v", ok, err)
	}
	time.Sleep(200 * time.Millisecond)
	good.Publish(grantEvent("web", time.Now().Add(time.Minute)))
	if _, ok := recv(t, w, 3*time.Second); !ok {
		t.Fatal("fan-out with the ACL user: not applied")
	}
	var st Status
	if !waitFor(2*time.Second, func() bool {
		// The origin acks right after its append; the other member may ack first.
		st = good.Status(context.Background())
		return st.Err == "" && len(st.Members) == 2 && len(st.Grants) == 1 && len(st.Grants[0].HeldBy) == 2
	}) {
		t.Fatalf("status with the ACL user: %+v", st)
	}
	bad := redisMember(t, s, RedisOptions{User: "sesame", Password: "wrong"}, "b", Refuse, nil, "")
	ok, err := insert(t, bad.store, "k2")
	if ok || !errors.Is(err, ErrRedisDown) {
		t.Fatalf("with a wrong password: %v, %v", ok, err)
	}
	if strings.Contains(err.Error(), "wrong") {
		t.Fatalf("password in the error: %v", err)
	}
}

// TestIntegrationRedisFanOut: grants go through real streams, and a member restarted while
// grants were published catches up from its saved id.
func TestIntegrationRedisFanOut(t *testing.T) {
	s := startRedis(t)
	dir := t.TempDir()
	a := redisMember(t, s, RedisOptions{}, "a", Refuse, []string{"web"}, "")
	w := redisMember(t, s, RedisOptions{}, "w", Refuse, []string{"web"}, dir)
	time.Sleep(200 * time.Millisecond)
	a.Publish(grantEvent("web", time.Now().Add(time.Minute)))
	if _, ok := recv(t, w, 3*time.Second); !ok {
		t.Fatal("grant not applied")
	}
	w.stop()
	a.Publish(grantEvent("web", time.Now().Add(100*time.Millisecond)))
	live := time.Now().Add(time.Minute).Truncate(time.Millisecond)
	a.Publish(grantEvent("web", live))
	if !waitFor(2*time.Second, func() bool { return a.Counters.Published.Load() == 3 }) {
		t.Fatal("not published")
	}
	time.Sleep(150 * time.Millisecond)
	w2 := redisMember(t, s, RedisOptions{}, "w", Refuse, []string{"web"}, dir)
	ev, ok := recv(t, w2, 3*time.Second)
	if !ok || !ev.Grants[0].Expires.Equal(live) {
		t.Fatalf("caught up with %+v (%v), want the live grant", ev, ok)
	}
	if ev, ok := recv(t, w2, 300*time.Millisecond); ok {
		t.Fatalf("applied more: %+v", ev)
	}
	st := a.Status(context.Background())
	if len(st.Members) != 2 || len(st.Grants) != 2 {
		t.Fatalf("status: %d members, %d grants: %+v", len(st.Members), len(st.Grants), st)
	}
	var _ replay.Store = a.store
}
