package spapolicy

import (
	"bufio"
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/base64"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/config"
	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/fwknop"
	"github.com/sesame-knock/sesame/internal/netport"
	"github.com/sesame-knock/sesame/internal/replay"
	"github.com/sesame-knock/sesame/internal/spa"
)

var (
	t0      = time.Unix(1_800_000_000, 0)
	client4 = netip.MustParseAddr("198.18.0.2")
	client6 = netip.MustParseAddr("fd5e:5a3e::2")
	outside = netip.MustParseAddr("203.0.113.9")
	ssh     = netport.Port{Proto: netport.TCP, Num: 22}
	https   = netport.Port{Proto: netport.TCP, Num: 443}
	dns     = netport.Port{Proto: netport.UDP, Num: 53}
	telnet  = netport.Port{Proto: netport.TCP, Num: 23}

	vecKey, _  = base64.StdEncoding.DecodeString("iydGYI5G+2uHWjfW+IeiSY2bkRJEJ8xorcw5mENTqJY=")
	vecHMAC, _ = base64.StdEncoding.DecodeString("kRzlTYr0K1R4pc+Vy2hRIOY3ggfgSjsrylbO/9g/VZA9FfhU8R+Xg2cTnNTw+PAyHyeCQL1G64J++Gr4cPhpmg==")
	fwKeys     = fwknop.Keys{Key: vecKey, HMACKey: vecHMAC}
	otherKeys  = fwknop.Keys{Key: []byte("another key"), HMACKey: []byte("another hmac key")}
)

// creds are the test's keys; rng makes packets reproducible.
type creds struct {
	alice, stranger spa.SharedKey
	bob, server     *spa.KeyPair
	serverPub       spa.PublicKey
}

func newCreds(t testing.TB) *creds {
	t.Helper()
	c := &creds{}
	c.alice, _ = spa.GenerateSharedKey(crand.Reader)
	c.stranger, _ = spa.GenerateSharedKey(crand.Reader)
	c.bob, _ = spa.GeneratePair(crand.Reader)
	c.server, _ = spa.GeneratePair(crand.Reader)
	c.serverPub = c.server.Public()
	return c
}

func testConfig(c *creds) *config.SPA {
	bobPub := c.bob.Public()
	local := []netip.Prefix{netip.MustParsePrefix("198.18.0.0/16"), netip.MustParsePrefix("fd5e:5a3e::/64")}
	return &config.SPA{
		Port: 62201, MaxAge: 120 * time.Second, ServerKey: c.server,
		Clients: []config.SPAClient{
			{Name: "alice", Format: config.SPAFormatNative, Shared: &c.alice, Open: []netport.Port{ssh, https},
				Sources: local, DefaultOpenFor: 30 * time.Second, MaxOpenFor: time.Hour},
			{Name: "bob", Format: config.SPAFormatNative, Public: &bobPub, Open: []netport.Port{dns, ssh},
				Sources: config.AnySource, DefaultOpenFor: 10 * time.Second, MaxOpenFor: time.Minute},
			{Name: "strict", Format: config.SPAFormatFwknop, Fwknop: otherKeys, Open: []netport.Port{ssh},
				Sources: local, RequireUsername: "alice", RequireSourceAddress: true,
				DefaultOpenFor: 10 * time.Second, MaxOpenFor: time.Minute},
			{Name: "legacy", Format: config.SPAFormatFwknop, Fwknop: fwKeys, AnyPort: true, Restrict: []netport.Port{telnet},
				Sources: local, DefaultOpenFor: 10 * time.Second, MaxOpenFor: 60 * time.Second},
			{Name: "expired", Format: config.SPAFormatFwknop, Fwknop: fwknop.Keys{Key: []byte("expired key")}, Open: []netport.Port{ssh},
				Sources: config.AnySource, AccessExpire: t0.Add(-time.Hour), DefaultOpenFor: 10 * time.Second, MaxOpenFor: time.Minute},
		},
	}
}

// logBuf is a concurrency-safe log sink.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Write(p) }
func (l *logBuf) String() string              { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

func newHandler(t testing.TB, cfg *config.SPA, now func() time.Time) (*Policy, *logBuf) {
	t.Helper()
	store := replay.NewMemory(1 << 16)
	store.SetClock(now)
	buf := &logBuf{}
	h, err := New(cfg, store, slog.New(slog.NewTextHandler(buf, nil)), now)
	if err != nil {
		t.Fatal(err)
	}
	return h, buf
}

// hg drops Handle's error: these tests pass no grant function, so there is none.
func hg(grants []firewall.Grant, _ error) []firewall.Grant { return grants }

// TestSPAGrantsBeforeLogging checks that an accepted packet is granted before its line is
// written, and that a failed grant is returned and logged as such.
func TestSPAGrantsBeforeLogging(t *testing.T) {
	c := newCreds(t)
	rng := rand.NewChaCha8([32]byte{9})
	tests := []struct {
		name     string
		grantErr error
		wantMsg  string
	}{
		{"grant ok", nil, "spa accepted"},
		{"grant fails", errors.New("netlink: no buffer space"), "spa accepted but the grant failed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, logs := newHandler(t, testConfig(c), func() time.Time { return t0 })
			pkt := native(shared, spa.Request{Ports: []netport.Port{ssh}}, 0)(t, c, t0, rng)
			var granted []firewall.Grant
			var logAtGrant string
			got, err := h.Handle(context.Background(), client4, pkt, func(_ context.Context, g ...firewall.Grant) error {
				granted = g
				logAtGrant = logs.String()
				return tc.grantErr
			})
			if !errors.Is(err, tc.grantErr) {
				t.Errorf("err = %v, want %v", err, tc.grantErr)
			}
			if len(got) != 1 || !slices.Equal(got, granted) {
				t.Errorf("returned %v, granted %v", got, granted)
			}
			if logAtGrant != "" {
				t.Errorf("logged before the grant: %s", logAtGrant)
			}
			line := logs.String()
			if !strings.Contains(line, "msg="+strconv.Quote(tc.wantMsg)) || !strings.Contains(line, "src="+client4.String()) {
				t.Errorf("log = %s, want %q with the source", line, tc.wantMsg)
			}
		})
	}
}

type builder func(t *testing.T, c *creds, now time.Time, rng *rand.ChaCha8) []byte

func native(cred func(c *creds) spa.ClientCredential, req spa.Request, skew time.Duration) builder {
	return func(t *testing.T, c *creds, now time.Time, rng *rand.ChaCha8) []byte {
		pkt, err := spa.Seal(req, cred(c), now.Add(skew), rng)
		if err != nil {
			t.Fatal(err)
		}
		return pkt
	}
}

func shared(c *creds) spa.ClientCredential {
	return spa.ClientCredential{ID: "alice", Shared: &c.alice}
}
func pair(c *creds) spa.ClientCredential {
	return spa.ClientCredential{ID: "bob", Pair: c.bob, Server: &c.serverPub}
}

func fw(keys fwknop.Keys, m fwknop.Message, skew time.Duration) builder {
	return func(t *testing.T, c *creds, now time.Time, rng *rand.ChaCha8) []byte {
		if m.User == "" {
			m.User = "root"
		}
		m.Timestamp = now.Add(skew).Truncate(time.Second)
		if !m.AllowIP.IsValid() {
			m.AllowIP = netip.IPv4Unspecified()
		}
		pkt, err := fwknop.Encode(&m, keys, rng)
		if err != nil {
			t.Fatal(err)
		}
		return pkt
	}
}

func grants(src netip.Addr, d time.Duration, ports ...netport.Port) []firewall.Grant {
	var out []firewall.Grant
	for _, p := range ports {
		out = append(out, firewall.Grant{Src: src, Port: p, Timeout: d})
	}
	return out
}

func TestSPAHandleReasons(t *testing.T) {
	explicit := netip.MustParseAddr("198.18.7.7")
	tests := []struct {
		name   string
		src    netip.Addr
		build  builder
		reason Reason
		client string
		want   []firewall.Grant
	}{
		// Native, shared key.
		{"native shared accepted", client4, native(shared, spa.Request{Ports: []netport.Port{ssh, https}}, 0),
			ReasonAccepted, "alice", grants(client4, 30*time.Second, ssh, https)},
		{"native shared ipv6", client6, native(shared, spa.Request{Ports: []netport.Port{ssh}, Duration: 2 * time.Hour}, 0),
			ReasonAccepted, "alice", grants(client6, time.Hour, ssh)},
		{"native explicit address", client4, native(shared, spa.Request{Ports: []netport.Port{ssh}, Addr: explicit, Duration: 5 * time.Second}, 0),
			ReasonAccepted, "alice", grants(explicit, 5*time.Second, ssh)},
		{"native address outside sources", client4, native(shared, spa.Request{Ports: []netport.Port{ssh}, Addr: outside}, 0),
			ReasonAddrNotAllowed, "alice", nil},
		{"native port not allowed", client4, native(shared, spa.Request{Ports: []netport.Port{ssh, dns}}, 0),
			ReasonPortNotAllowed, "alice", nil},
		{"native source not allowed", outside, native(shared, spa.Request{Ports: []netport.Port{ssh}}, 0),
			ReasonSourceNotAllowed, "alice", nil},
		{"native stale", client4, native(shared, spa.Request{Ports: []netport.Port{ssh}}, -121*time.Second),
			ReasonStale, "alice", nil},
		{"native future", client4, native(shared, spa.Request{Ports: []netport.Port{ssh}}, 121*time.Second),
			ReasonFuture, "alice", nil},
		{"native unknown client", client4, native(func(c *creds) spa.ClientCredential {
			return spa.ClientCredential{ID: "alice", Shared: &c.stranger}
		}, spa.Request{Ports: []netport.Port{ssh}}, 0), ReasonUnknownClient, "", nil},
		{"native other identity", client4, native(func(c *creds) spa.ClientCredential {
			return spa.ClientCredential{ID: "mallory", Shared: &c.alice}
		}, spa.Request{Ports: []netport.Port{ssh}}, 0), ReasonUnknownClient, "alice", nil},
		{"native tampered", client4, func(t *testing.T, c *creds, now time.Time, rng *rand.ChaCha8) []byte {
			p := native(shared, spa.Request{Ports: []netport.Port{ssh}}, 0)(t, c, now, rng)
			p[len(p)-1] ^= 1
			return p
		}, ReasonBadMAC, "alice", nil},
		{"native truncated", client4, func(t *testing.T, c *creds, now time.Time, rng *rand.ChaCha8) []byte {
			return native(shared, spa.Request{Ports: []netport.Port{ssh}}, 0)(t, c, now, rng)[:100]
		}, ReasonTooShort, "alice", nil},
		{"native oversized", client4, func(t *testing.T, c *creds, now time.Time, rng *rand.ChaCha8) []byte {
			return append(native(shared, spa.Request{Ports: []netport.Port{ssh}}, 0)(t, c, now, rng), make([]byte, 400)...)
		}, ReasonTooLong, "alice", nil},
		{"native bad kind", client4, func(*testing.T, *creds, time.Time, *rand.ChaCha8) []byte {
			return append([]byte("SSM1\x09"), make([]byte, 200)...)
		}, ReasonMalformed, "", nil},
		// Native, key pair.
		{"native pair accepted", client4, native(pair, spa.Request{Ports: []netport.Port{dns}, Duration: 20 * time.Second}, 0),
			ReasonAccepted, "bob", grants(client4, 20*time.Second, dns)},
		{"native pair ipv6 capped", client6, native(pair, spa.Request{Ports: []netport.Port{dns, ssh}, Duration: time.Hour}, 0),
			ReasonAccepted, "bob", grants(client6, time.Minute, dns, ssh)},
		{"native pair port", client4, native(pair, spa.Request{Ports: []netport.Port{https}}, 0),
			ReasonPortNotAllowed, "bob", nil},
		{"native pair tampered", client4, func(t *testing.T, c *creds, now time.Time, rng *rand.ChaCha8) []byte {
			p := native(pair, spa.Request{Ports: []netport.Port{dns}}, 0)(t, c, now, rng)
			p[spa.HeaderLen+3] ^= 1
			return p
		}, ReasonBadMAC, "bob", nil},
		{"native pair wrong server key", client4, native(func(c *creds) spa.ClientCredential {
			other := c.bob.Public() // not the server's key
			return spa.ClientCredential{ID: "bob", Pair: c.bob, Server: &other}
		}, spa.Request{Ports: []netport.Port{dns}}, 0), ReasonUnknownClient, "", nil},
		// fwknop.
		{"fwknop accepted source", client4, fw(fwKeys, fwknop.Message{Type: fwknop.TypeAccess, Ports: []netport.Port{ssh}}, 0),
			ReasonAccepted, "legacy", grants(client4, 10*time.Second, ssh)},
		{"fwknop explicit allow ip", client4, fw(fwKeys, fwknop.Message{Type: fwknop.TypeAccess, AllowIP: explicit, Ports: []netport.Port{ssh}}, 0),
			ReasonAccepted, "legacy", grants(explicit, 10*time.Second, ssh)},
		// The allow IP is checked against sources, as a native explicit address is.
		{"fwknop allow ip outside sources", client4, fw(fwKeys, fwknop.Message{Type: fwknop.TypeAccess, AllowIP: netip.MustParseAddr("192.0.2.1"), Ports: []netport.Port{ssh}}, 0),
			ReasonAddrNotAllowed, "legacy", nil},
		{"fwknop allow ip broadcast", client4, fw(fwKeys, fwknop.Message{Type: fwknop.TypeAccess, AllowIP: netip.MustParseAddr("255.255.255.255"), Ports: []netport.Port{ssh}}, 0),
			ReasonAddrNotAllowed, "legacy", nil},
		{"fwknop ipv6 source", client6, fw(fwKeys, fwknop.Message{Type: fwknop.TypeAccess, Ports: []netport.Port{https}}, 0),
			ReasonAccepted, "legacy", grants(client6, 10*time.Second, https)},
		{"fwknop client timeout capped", client4, fw(fwKeys, fwknop.Message{Type: fwknop.TypeClientTimeoutAccess, ClientTimeout: 100 * time.Second, Ports: []netport.Port{ssh, dns}}, 0),
			ReasonAccepted, "legacy", grants(client4, 60*time.Second, ssh, dns)},
		{"fwknop client timeout", client4, fw(fwKeys, fwknop.Message{Type: fwknop.TypeClientTimeoutAccess, ClientTimeout: 4 * time.Second, Ports: []netport.Port{ssh}}, 0),
			ReasonAccepted, "legacy", grants(client4, 4*time.Second, ssh)},
		{"fwknop restricted port", client4, fw(fwKeys, fwknop.Message{Type: fwknop.TypeAccess, Ports: []netport.Port{ssh, telnet}}, 0),
			ReasonPortNotAllowed, "legacy", nil},
		{"fwknop source not allowed", outside, fw(fwKeys, fwknop.Message{Type: fwknop.TypeAccess, Ports: []netport.Port{ssh}}, 0),
			ReasonBadMAC, "", nil}, // only "expired" matches SOURCE ANY, and its key differs
		{"fwknop stale", client4, fw(fwKeys, fwknop.Message{Type: fwknop.TypeAccess, Ports: []netport.Port{ssh}}, -10*time.Minute),
			ReasonStale, "legacy", nil},
		{"fwknop future", client4, fw(fwKeys, fwknop.Message{Type: fwknop.TypeAccess, Ports: []netport.Port{ssh}}, 10*time.Minute),
			ReasonFuture, "legacy", nil},
		{"fwknop wrong key", client4, fw(fwknop.Keys{Key: []byte("wrong"), HMACKey: []byte("wrong hmac")}, fwknop.Message{Type: fwknop.TypeAccess, Ports: []netport.Port{ssh}}, 0),
			ReasonBadMAC, "", nil},
		{"fwknop wrong hmac digest", client4, fw(fwknop.Keys{Key: vecKey, HMACKey: vecHMAC, HMACDigest: fwknop.DigestSHA512}, fwknop.Message{Type: fwknop.TypeAccess, Ports: []netport.Port{ssh}}, 0),
			ReasonBadMAC, "", nil},
		{"fwknop tampered", client4, func(t *testing.T, c *creds, now time.Time, rng *rand.ChaCha8) []byte {
			p := fw(fwKeys, fwknop.Message{Type: fwknop.TypeAccess, Ports: []netport.Port{ssh}}, 0)(t, c, now, rng)
			p[0] = map[bool]byte{true: 'B', false: 'A'}[p[0] == 'A']
			return p
		}, ReasonBadMAC, "", nil},
		{"fwknop nat", client4, fw(fwKeys, fwknop.Message{Type: fwknop.TypeNATAccess, NATAccess: "192.168.10.5,22", Ports: []netport.Port{ssh}}, 0),
			ReasonNATRefused, "legacy", nil},
		{"fwknop command", client4, fw(fwKeys, fwknop.Message{Type: fwknop.TypeCommand, Command: "touch /tmp/x"}, 0),
			ReasonCommandRefused, "legacy", nil},
		{"fwknop username", client4, fw(otherKeys, fwknop.Message{Type: fwknop.TypeAccess, AllowIP: client4, User: "root", Ports: []netport.Port{ssh}}, 0),
			ReasonUserNotAllowed, "strict", nil},
		{"fwknop require source address", client4, fw(otherKeys, fwknop.Message{Type: fwknop.TypeAccess, User: "alice", Ports: []netport.Port{ssh}}, 0),
			ReasonSourceAddrNeeded, "strict", nil},
		{"fwknop strict accepted", client4, fw(otherKeys, fwknop.Message{Type: fwknop.TypeAccess, AllowIP: client4, User: "alice", Ports: []netport.Port{ssh}}, 0),
			ReasonAccepted, "strict", grants(client4, 10*time.Second, ssh)},
		{"fwknop strict port", client4, fw(otherKeys, fwknop.Message{Type: fwknop.TypeAccess, AllowIP: client4, User: "alice", Ports: []netport.Port{https}}, 0),
			ReasonPortNotAllowed, "strict", nil},
		{"fwknop access expired", outside, fw(fwknop.Keys{Key: []byte("expired key")}, fwknop.Message{Type: fwknop.TypeAccess, Ports: []netport.Port{ssh}}, 0),
			ReasonAccessExpired, "expired", nil},
		{"fwknop too short", client4, func(*testing.T, *creds, time.Time, *rand.ChaCha8) []byte { return []byte(strings.Repeat("A", 100)) },
			ReasonTooShort, "", nil},
		{"fwknop too long", client4, func(*testing.T, *creds, time.Time, *rand.ChaCha8) []byte { return []byte(strings.Repeat("A", 1600)) },
			ReasonTooLong, "", nil},
		{"garbage", client4, func(*testing.T, *creds, time.Time, *rand.ChaCha8) []byte { return bytes.Repeat([]byte{0xff}, 300) },
			ReasonMalformed, "", nil},
		{"salted prefix", client4, func(t *testing.T, c *creds, now time.Time, rng *rand.ChaCha8) []byte {
			return append([]byte("U2FsdGVkX1"), fw(fwKeys, fwknop.Message{Type: fwknop.TypeAccess, Ports: []netport.Port{ssh}}, 0)(t, c, now, rng)...)
		}, ReasonMalformed, "", nil},
	}
	c := newCreds(t)
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, logs := newHandler(t, testConfig(c), func() time.Time { return t0 })
			rng := rand.NewChaCha8([32]byte{byte(i)})
			pkt := tc.build(t, c, t0, rng)
			got := hg(h.Handle(context.Background(), tc.src, pkt, nil))
			if !slices.Equal(got, tc.want) {
				t.Errorf("grants = %v, want %v", got, tc.want)
			}
			if n := h.Counts()[tc.reason]; n != 1 {
				t.Errorf("counts = %v, want one %q", h.Counts(), tc.reason)
			}
			line := strings.TrimSpace(logs.String())
			if strings.Count(line, "\n") != 0 {
				t.Errorf("want exactly one log line, got:\n%s", line)
			}
			if !strings.Contains(line, "src="+tc.src.String()) || !strings.Contains(line, "reason="+strconv.Quote(tc.reason.String())) && !strings.Contains(line, "reason="+tc.reason.String()) {
				t.Errorf("log line lacks src or reason %q:\n%s", tc.reason, line)
			}
			if tc.client != "" && !strings.Contains(line, "client="+tc.client) {
				t.Errorf("log line lacks client %q:\n%s", tc.client, line)
			}
			if tc.client == "" && strings.Contains(line, "client=") {
				t.Errorf("log line names a client it cannot know:\n%s", line)
			}
			if strings.Contains(line, "iydGYI5G") || strings.Contains(line, base64.StdEncoding.EncodeToString(c.alice[:])) {
				t.Errorf("log reveals a key:\n%s", line)
			}
			// The same packet again: accepted packets are replays; refused ones are refused again.
			again := hg(h.Handle(context.Background(), tc.src, pkt, nil))
			if again != nil {
				t.Errorf("second delivery granted %v", again)
			}
			if tc.reason == ReasonAccepted && h.Counts()[ReasonReplay] != 1 {
				t.Errorf("second delivery of an accepted packet: counts %v, want a replay", h.Counts())
			}
		})
	}
}

func TestSPAReplayAcrossRestart(t *testing.T) {
	c := newCreds(t)
	path := filepath.Join(t.TempDir(), "replay.db")
	now := func() time.Time { return t0 }
	rng := rand.NewChaCha8([32]byte{7})
	pkts := [][]byte{
		native(shared, spa.Request{Ports: []netport.Port{ssh}}, 0)(t, c, t0, rng),
		native(pair, spa.Request{Ports: []netport.Port{dns}}, 0)(t, c, t0, rng),
		fw(fwKeys, fwknop.Message{Type: fwknop.TypeAccess, Ports: []netport.Port{ssh}}, 0)(t, c, t0, rng),
	}
	for round, want := range []Reason{ReasonAccepted, ReasonReplay} {
		store, err := replay.OpenBolt(path, replay.WithClock(now))
		if err != nil {
			t.Fatal(err)
		}
		h, err := New(testConfig(c), store, nil, now)
		if err != nil {
			t.Fatal(err)
		}
		for i, p := range pkts {
			hg(h.Handle(context.Background(), client4, p, nil))
			if h.Counts()[want] != uint64(i+1) {
				t.Errorf("round %d packet %d: counts %v, want %q", round, i, h.Counts(), want)
			}
		}
		store.Close()
	}
}

func TestSPALogRateLimited(t *testing.T) {
	c := newCreds(t)
	now := t0
	h, logs := newHandler(t, testConfig(c), func() time.Time { return now })
	garbage := bytes.Repeat([]byte{1}, 200)
	for range 100 {
		hg(h.Handle(context.Background(), client4, garbage, nil))
	}
	hg(h.Handle(context.Background(), client6, garbage, nil)) // another source has its own budget
	now = now.Add(time.Second)
	hg(h.Handle(context.Background(), client4, garbage, nil))
	out := logs.String()
	if n := strings.Count(out, "src="+client4.String()); n != 11 {
		t.Errorf("%d lines about %s, want 10 (burst) + 1", n, client4)
	}
	if !strings.Contains(out, "suppressed=90") {
		t.Errorf("no suppressed count in:\n%s", out)
	}
	if !strings.Contains(out, "src="+client6.String()) {
		t.Error("a second source was silenced by the first one's flood")
	}
	if h.Counts()[ReasonMalformed] != 102 {
		t.Errorf("counts %v", h.Counts())
	}
}

// vector is one fwknop test vector file: "name: value" lines.
type vector map[string]string

func loadVectors(t testing.TB) map[string]vector {
	t.Helper()
	files, _ := filepath.Glob("../fwknop/testdata/vectors/*.txt")
	if len(files) == 0 {
		t.Fatal("no vectors in ../fwknop/testdata/vectors")
	}
	out := map[string]vector{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		v := vector{}
		sc := bufio.NewScanner(bytes.NewReader(data))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			if k, val, ok := strings.Cut(sc.Text(), ": "); ok && !strings.HasPrefix(k, "#") {
				v[k] = val
			}
		}
		out[strings.TrimSuffix(filepath.Base(f), ".txt")] = v
	}
	return out
}

func (v vector) client(t testing.TB) config.SPAClient {
	t.Helper()
	c := config.SPAClient{Name: "vec", Format: config.SPAFormatFwknop, AnyPort: true, Sources: config.AnySource,
		DefaultOpenFor: 30 * time.Second, MaxOpenFor: 300 * time.Second}
	var err error
	switch v["enc_key_kind"] {
	case "b64":
		c.Fwknop.Key, err = base64.StdEncoding.DecodeString(v["KEY_BASE64"])
	default:
		c.Fwknop.Key = []byte(v["KEY"])
	}
	if err != nil {
		t.Fatal(err)
	}
	switch v["hmac_key_kind"] {
	case "b64":
		c.Fwknop.HMACKey, err = base64.StdEncoding.DecodeString(v["HMAC_KEY_BASE64"])
	case "pass":
		c.Fwknop.HMACKey = []byte(v["HMAC_KEY"])
	}
	if err != nil {
		t.Fatal(err)
	}
	if ht := v["hmac_type"]; ht != "none" && ht != "" {
		if c.Fwknop.HMACDigest, err = fwknop.ParseDigest(ht); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// TestSPAFwknopVectors feeds every packet the real fwknop client built to a handler.
func TestSPAFwknopVectors(t *testing.T) {
	vecs := loadVectors(t)
	src := netip.MustParseAddr("10.0.0.2")
	for name, v := range vecs {
		t.Run(name, func(t *testing.T) {
			ts, err := strconv.ParseInt(v["field.Timestamp"], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			now := time.Unix(ts, 0).Add(3 * time.Second)
			h, logs := newHandler(t, &config.SPA{Port: 62201, MaxAge: 120 * time.Second, Clients: []config.SPAClient{v.client(t)}},
				func() time.Time { return now })
			got := hg(h.Handle(context.Background(), src, []byte(v["packet"]), nil))
			typ, _, _ := strings.Cut(v["field.Message Type"], " ")
			want := ReasonAccepted
			switch typ {
			case "0":
				want = ReasonCommandRefused
			case "2", "4", "5", "6":
				want = ReasonNATRefused
			}
			if h.Counts()[want] != 1 {
				t.Fatalf("counts %v, want %q; log:\n%s", h.Counts(), want, logs)
			}
			if want != ReasonAccepted {
				return
			}
			allow, spec, _ := strings.Cut(v["field.Message String"], ",")
			addr := netip.MustParseAddr(allow)
			if addr.IsUnspecified() {
				addr = src
			}
			d := 30 * time.Second
			if ct, _ := strconv.Atoi(v["field.Client Timeout"]); ct > 0 {
				d = min(time.Duration(ct)*time.Second, 300*time.Second)
			}
			var ports []netport.Port
			for s := range strings.SplitSeq(spec, ",") {
				p, err := netport.Parse(s)
				if err != nil {
					t.Fatal(err)
				}
				ports = append(ports, p)
			}
			if w := grants(addr, d, ports...); !slices.Equal(got, w) {
				t.Errorf("grants %v, want %v", got, w)
			}
		})
	}
}

func TestSPANewErrors(t *testing.T) {
	c := newCreds(t)
	if _, err := New(nil, replay.NewMemory(1), nil, nil); err == nil {
		t.Error("nil config accepted")
	}
	cfg := testConfig(c)
	cfg.Clients = append(cfg.Clients, cfg.Clients[0])
	cfg.Clients[len(cfg.Clients)-1].Name = "alias"
	if _, err := New(cfg, replay.NewMemory(1), nil, nil); err == nil || !strings.Contains(err.Error(), "key already used") {
		t.Errorf("two clients with one key: %v", err)
	}
}

// nopStore accepts every key, so a benchmark can verify one packet again and again.
type nopStore struct{}

func (nopStore) InsertAt(context.Context, []byte, time.Time, time.Time) (bool, error) {
	return true, nil
}
func (nopStore) Close() error { return nil }

func benchHandler(b *testing.B, c *creds) *Policy {
	h, err := New(testConfig(c), nopStore{}, slog.New(slog.DiscardHandler), func() time.Time { return t0 })
	if err != nil {
		b.Fatal(err)
	}
	return h
}

func BenchmarkSPAGarbage(b *testing.B) {
	c := newCreds(b)
	h := benchHandler(b, c)
	rng := rand.NewChaCha8([32]byte{1})
	cases := map[string][]byte{
		"random":        make([]byte, 200),
		"native-header": append([]byte("SSM1\x01"), make([]byte, 150)...),
		"base64":        []byte(strings.Repeat("QUJD", 60)),
	}
	rng.Read(cases["random"])
	rng.Read(cases["native-header"][5:])
	for name, pkt := range cases {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if hg(h.Handle(context.Background(), client4, pkt, nil)) != nil {
					b.Fatal("garbage granted")
				}
			}
		})
	}
}

func BenchmarkSPAValid(b *testing.B) {
	c := newCreds(b)
	h := benchHandler(b, c)
	rng := rand.NewChaCha8([32]byte{2})
	t := &testing.T{}
	cases := []struct {
		name string
		pkt  []byte
	}{
		{"native-shared", native(shared, spa.Request{Ports: []netport.Port{ssh}}, 0)(t, c, t0, rng)},
		{"native-pair", native(pair, spa.Request{Ports: []netport.Port{dns}}, 0)(t, c, t0, rng)},
		{"fwknop-hmac-sha256", fw(fwKeys, fwknop.Message{Type: fwknop.TypeAccess, Ports: []netport.Port{ssh}}, 0)(t, c, t0, rng)},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				if hg(h.Handle(context.Background(), client4, tc.pkt, nil)) == nil {
					b.Fatal("refused")
				}
			}
		})
	}
}

// TestSPAReload checks that Reload swaps clients and limits, refuses a broken configuration
// while keeping the running one, and keeps replay keys across the swap.
func TestSPAReload(t *testing.T) {
	c := newCreds(t)
	rng := rand.NewChaCha8([32]byte{11})
	h, _ := newHandler(t, testConfig(c), func() time.Time { return t0 })
	aliceSSH := func() []byte { return native(shared, spa.Request{Ports: []netport.Port{ssh}}, 0)(t, c, t0, rng) }
	accepted := aliceSSH()
	if g := hg(h.Handle(context.Background(), client4, accepted, nil)); len(g) != 1 {
		t.Fatalf("before the reload: grants %v, want one", g)
	}

	noAlice := testConfig(c)
	noAlice.Clients = noAlice.Clients[1:]
	broken := testConfig(c)
	broken.ServerKey = nil // bob has a public key: no usable key without the server's
	tests := []struct {
		name    string
		cfg     *config.SPA
		wantErr bool
		reason  Reason // of a fresh alice packet after the reload
	}{
		{"broken config refused", broken, true, ReasonAccepted},
		{"nil config refused", nil, true, ReasonAccepted},
		{"alice removed", noAlice, false, ReasonUnknownClient},
		{"alice back", testConfig(c), false, ReasonAccepted},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := h.Reload(tc.cfg); (err != nil) != tc.wantErr {
				t.Fatalf("Reload: %v, want error %v", err, tc.wantErr)
			}
			before := h.Counts()[tc.reason]
			hg(h.Handle(context.Background(), client4, aliceSSH(), nil))
			if h.Counts()[tc.reason] != before+1 {
				t.Errorf("fresh alice packet: counts %v, want one more %q", h.Counts(), tc.reason)
			}
		})
	}
	before := h.Counts()[ReasonReplay]
	hg(h.Handle(context.Background(), client4, accepted, nil))
	if h.Counts()[ReasonReplay] != before+1 {
		t.Errorf("a packet accepted before the reloads was not refused as a replay: %v", h.Counts())
	}
}

// deferredStore is an in-memory store that counts PersistSoon calls.
type deferredStore struct {
	*replay.Memory
	persisted int
}

func (s *deferredStore) PersistSoon() { s.persisted++ }

// TestSPAPersistsAfterAccepting checks that a Deferred replay store is told to persist once per
// accepted packet, after the grant, and not for refusals that recorded no key (replays, garbage;
// TestSPARefusedKeyPersisted covers policy refusals, which do record one).
func TestSPAPersistsAfterAccepting(t *testing.T) {
	c := newCreds(t)
	rng := rand.NewChaCha8([32]byte{12})
	now := func() time.Time { return t0 }
	store := &deferredStore{Memory: replay.NewMemory(1 << 10)}
	store.SetClock(now)
	h, err := New(testConfig(c), store, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	pkt := native(shared, spa.Request{Ports: []netport.Port{ssh}}, 0)(t, c, t0, rng)
	var persistedAtGrant int
	h.Handle(context.Background(), client4, pkt, func(context.Context, ...firewall.Grant) error {
		persistedAtGrant = store.persisted
		return nil
	})
	if persistedAtGrant != 0 || store.persisted != 1 {
		t.Errorf("PersistSoon calls: %d at the grant, %d after; want 0 and 1", persistedAtGrant, store.persisted)
	}
	h.Handle(context.Background(), client4, pkt, nil) // a replay
	h.Handle(context.Background(), client4, []byte("garbage"), nil)
	if store.persisted != 1 {
		t.Errorf("PersistSoon called %d times after two refusals, want still 1", store.persisted)
	}
}
