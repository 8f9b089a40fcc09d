package control

import (
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/control/controltest"
)

// FuzzRequest sends arbitrary bodies to the grant and revoke endpoints: the answer is always
// 200, 400 or 413 with a JSON error, never a panic, and what reaches the Core is valid.
func FuzzRequest(f *testing.F) {
	for _, s := range []string{
		`{"src":"203.0.113.9","port":"tcp/22","for_ms":60000,"note":"INC-42"}`,
		`{"src":"198.51.100.7","kill":true}`,
		`{"all":true}`,
		`{"src":"::ffff:1.2.3.4","port":"udp/53"}`,
		`{"src":"fe80::1%eth0","port":"tcp/22","for_ms":1}`,
		`{"for_ms":1e400}`,
		`{"src":null,"port":null}`,
		`[`,
		``,
	} {
		f.Add(false, s)
		f.Add(true, s)
	}
	const maxGrant = time.Hour
	f.Fuzz(func(t *testing.T, revoke bool, body string) {
		core := &controltest.Core{}
		h := newHandler(core, testRights, selfUID, maxGrant, Options{})
		path := "/v1/grant"
		if revoke {
			path = "/v1/revoke"
		}
		w := do(h, &rootPeer, "POST", path, body)
		switch w.Code {
		case 200:
		case 400, 413:
			if msg := errorOf(t, w); msg == "" {
				t.Fatalf("empty error for %q", body)
			}
		default:
			t.Fatalf("code %d for %q: %s", w.Code, body, w.Body)
		}
		for _, g := range core.Granted {
			checkValidAddr(t, g.Src.String(), g.Src.IsValid() && !g.Src.IsUnspecified() && !g.Src.IsMulticast() && g.Src.Zone() == "" && !g.Src.Is4In6())
			if g.Port.IsZero() || g.For <= 0 || g.For.Duration() > maxGrant || len(g.Note) > MaxNote || strings.ContainsAny(g.Note, "\n\r\x00") {
				t.Fatalf("invalid grant reached the core: %+v", g)
			}
		}
		for _, r := range core.Revoked {
			if r.All == r.Src.IsValid() || r.All && !r.Port.IsZero() {
				t.Fatalf("invalid revoke reached the core: %+v", r)
			}
			if r.Src.IsValid() {
				checkValidAddr(t, r.Src.String(), !r.Src.IsUnspecified() && !r.Src.IsMulticast() && r.Src.Zone() == "" && !r.Src.Is4In6())
			}
		}
		if n := len(core.Granted) + len(core.Revoked); n > 1 || n == 1 && w.Code != 200 {
			t.Fatalf("%d core calls with code %d", n, w.Code)
		}
	})
}

func checkValidAddr(t *testing.T, a string, ok bool) {
	t.Helper()
	if !ok {
		t.Fatalf("invalid address %q reached the core", a)
	}
}
