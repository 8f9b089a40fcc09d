package spapolicy

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/config"
	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/fwknop"
	"github.com/sesame-knock/sesame/internal/netport"
	"github.com/sesame-knock/sesame/internal/replay"
)

// countingStore is an in-memory Deferred store that counts the keys it recorded and the
// PersistSoon calls.
type countingStore struct {
	*replay.Memory
	inserted, persisted int
}

func (s *countingStore) InsertAt(ctx context.Context, key []byte, now, expiry time.Time) (bool, error) {
	ok, err := s.Memory.InsertAt(ctx, key, now, expiry)
	if ok {
		s.inserted++
	}
	return ok, err
}

func (s *countingStore) PersistSoon() { s.persisted++ }

// stanza is fwknop client number n (named as fwknopconf names it) with keys, any port, the test's local sources and an
// open time of its own (10 s plus its number), changed by mods.
func stanza(n int, keys fwknop.Keys, mods ...func(*config.SPAClient)) config.SPAClient {
	c := config.SPAClient{
		Name: "stanza#" + strconv.Itoa(n), Format: config.SPAFormatFwknop, Fwknop: keys, AnyPort: true,
		Sources:        []netip.Prefix{netip.MustParsePrefix("198.18.0.0/16")},
		DefaultOpenFor: 10*time.Second + time.Duration(n)*time.Second, MaxOpenFor: time.Minute,
	}
	for _, m := range mods {
		m(&c)
	}
	return c
}

func openOnly(ps ...netport.Port) func(*config.SPAClient) {
	return func(c *config.SPAClient) { c.AnyPort, c.Open = false, ps }
}

func sources(ps ...string) func(*config.SPAClient) {
	return func(c *config.SPAClient) {
		c.Sources = nil
		for _, p := range ps {
			c.Sources = append(c.Sources, netip.MustParsePrefix(p))
		}
	}
}

// TestSPAFwknopStanzasShareKeys checks that a packet that decodes under several stanzas is
// granted by the first of them, in configuration order, that accepts it (as fwknopd does), is
// refused with the first one's reason when none does, and that either way its replay key is
// recorded once and a second delivery is a replay.
func TestSPAFwknopStanzasShareKeys(t *testing.T) {
	alt := netip.MustParseAddr("198.19.0.7") // outside the default sources
	access := func(ports ...netport.Port) fwknop.Message {
		return fwknop.Message{Type: fwknop.TypeAccess, Ports: ports}
	}
	tests := []struct {
		name    string
		stanzas []config.SPAClient
		msg     fwknop.Message
		reason  Reason
		client  string
		want    []firewall.Grant
	}{
		{"port only in the second",
			[]config.SPAClient{stanza(1, fwKeys, openOnly(ssh)), stanza(2, fwKeys, openOnly(https))},
			access(https), ReasonAccepted, "stanza#2", grants(client4, 12*time.Second, https)},
		{"restricted in the first",
			[]config.SPAClient{stanza(1, fwKeys, func(c *config.SPAClient) { c.Restrict = []netport.Port{https} }), stanza(2, fwKeys)},
			access(https), ReasonAccepted, "stanza#2", grants(client4, 12*time.Second, https)},
		{"username only in the first",
			[]config.SPAClient{stanza(1, fwKeys, func(c *config.SPAClient) { c.RequireUsername = "alice" }), stanza(2, fwKeys)},
			access(ssh), ReasonAccepted, "stanza#2", grants(client4, 12*time.Second, ssh)},
		{"the first expired",
			[]config.SPAClient{stanza(1, fwKeys, func(c *config.SPAClient) { c.AccessExpire = t0.Add(-time.Hour) }), stanza(2, fwKeys)},
			access(ssh), ReasonAccepted, "stanza#2", grants(client4, 12*time.Second, ssh)},
		{"source address required by the first",
			[]config.SPAClient{stanza(1, fwKeys, func(c *config.SPAClient) { c.RequireSourceAddress = true }), stanza(2, fwKeys)},
			access(ssh), ReasonAccepted, "stanza#2", grants(client4, 12*time.Second, ssh)},
		{"allow IP in the second's sources only",
			[]config.SPAClient{stanza(1, fwKeys), stanza(2, fwKeys, sources("198.18.0.0/16", "198.19.0.0/16"))},
			fwknop.Message{Type: fwknop.TypeAccess, AllowIP: alt, Ports: []netport.Port{ssh}},
			ReasonAccepted, "stanza#2", grants(alt, 12*time.Second, ssh)},
		{"other keys first, then a refusal, then a grant",
			[]config.SPAClient{stanza(1, otherKeys), stanza(2, fwKeys, openOnly(ssh)), stanza(3, fwKeys, openOnly(https))},
			access(https), ReasonAccepted, "stanza#3", grants(client4, 13*time.Second, https)},
		{"the first's sources exclude the sender",
			[]config.SPAClient{stanza(1, fwKeys, sources("198.18.9.0/24")), stanza(2, fwKeys, openOnly(https))},
			access(https), ReasonAccepted, "stanza#2", grants(client4, 12*time.Second, https)},
		{"the first accepts: its grant, not the second's",
			[]config.SPAClient{stanza(1, fwKeys), stanza(2, fwKeys)},
			access(ssh), ReasonAccepted, "stanza#1", grants(client4, 11*time.Second, ssh)},
		{"none accepts: the first one's reason",
			[]config.SPAClient{stanza(1, fwKeys, openOnly(ssh)), stanza(2, fwKeys, func(c *config.SPAClient) { c.RequireUsername = "alice" })},
			access(https), ReasonPortNotAllowed, "stanza#1", nil},
		{"none accepts, the second's reason differs",
			[]config.SPAClient{stanza(1, fwKeys, func(c *config.SPAClient) { c.RequireUsername = "alice" }), stanza(2, fwKeys, openOnly(ssh))},
			access(https), ReasonUserNotAllowed, "stanza#1", nil},
		{"NAT: every stanza refuses",
			[]config.SPAClient{stanza(1, fwKeys), stanza(2, fwKeys)},
			fwknop.Message{Type: fwknop.TypeNATAccess, NATAccess: "192.168.10.5,22", Ports: []netport.Port{ssh}},
			ReasonNATRefused, "stanza#1", nil},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			now := func() time.Time { return t0 }
			store := &countingStore{Memory: replay.NewMemory(1 << 10)}
			store.SetClock(now)
			logs := &logBuf{}
			cfg := &config.SPA{Port: 62201, MaxAge: 120 * time.Second, Clients: tc.stanzas}
			h, err := New(cfg, store, slog.New(slog.NewTextHandler(logs, nil)), now)
			if err != nil {
				t.Fatal(err)
			}
			pkt := fw(fwKeys, tc.msg, 0)(t, nil, t0, rand.NewChaCha8([32]byte{byte(i)}))
			var granted []firewall.Grant
			var grantedTo string
			got, err := h.HandleNamed(context.Background(), client4, pkt, func(_ context.Context, client string, g []firewall.Grant) error {
				granted, grantedTo = g, client
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) || !slices.Equal(granted, tc.want) {
				t.Errorf("grants = %v (applied %v), want %v", got, granted, tc.want)
			}
			if tc.want != nil && grantedTo != tc.client {
				t.Errorf("granted to %q, want %q", grantedTo, tc.client)
			}
			if n := h.Counts()[tc.reason]; n != 1 {
				t.Errorf("counts = %v, want one %q", h.Counts(), tc.reason)
			}
			line := strings.TrimSpace(logs.String())
			if strings.Contains(line, "\n") || !strings.Contains(line, "client="+tc.client) || !strings.Contains(line, reasonText(tc.reason)) {
				t.Errorf("want one line with client=%s and reason %q, got:\n%s", tc.client, tc.reason, line)
			}
			if store.inserted != 1 || store.persisted != 1 {
				t.Errorf("replay keys recorded %d, persisted %d times; want 1 and 1", store.inserted, store.persisted)
			}
			// Again, from another address the stanzas admit: a replay, whatever the first outcome.
			if again := hg(h.Handle(context.Background(), netip.MustParseAddr("198.18.0.3"), pkt, nil)); again != nil {
				t.Errorf("second delivery granted %v", again)
			}
			if h.Counts()[ReasonReplay] != 1 || store.inserted != 1 {
				t.Errorf("second delivery: counts %v, %d keys recorded; want a replay and still 1", h.Counts(), store.inserted)
			}
		})
	}
}

// reasonText is reason as the text handler writes its attribute.
func reasonText(r Reason) string {
	if strings.ContainsAny(r.String(), " =\"") {
		return `reason="` + r.String() + `"`
	}
	return "reason=" + r.String()
}
