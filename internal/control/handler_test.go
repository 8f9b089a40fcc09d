package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/control/controltest"
	"github.com/sesame-knock/sesame/internal/netport"
	"github.com/sesame-knock/sesame/internal/server"
)

const (
	readGID  = 64100
	adminGID = 64101
	selfUID  = 4242 // the daemon's uid in these tests
)

var (
	rootPeer   = Peer{PID: 10, UID: 0, GID: 0}
	readerPeer = Peer{PID: 11, UID: 1000, GID: 1000, Groups: []int{readGID}}
	adminPeer  = Peer{PID: 12, UID: 1001, GID: 1001, Groups: []int{readGID, adminGID}}
	primPeer   = Peer{PID: 13, UID: 1002, GID: adminGID} // admin by its primary group
	otherPeer  = Peer{PID: 14, UID: 1003, GID: 1003, Groups: []int{27}}
	selfPeer   = Peer{PID: 15, UID: selfUID, GID: 5000}
)

var testRights = rights{read: group{readGID, "sesame"}, admin: &group{adminGID, "sesame-admin"}}

type invalidErr struct{}

func (invalidErr) Error() string { return "tcp/23 is not a protected port" }
func (invalidErr) Invalid() bool { return true }

// logBuf collects log lines.
type logBuf struct{ bytes.Buffer }

func newTestHandler(core Core, metrics http.Handler, log *logBuf) *handler {
	return newHandler(core, testRights, selfUID, time.Hour, Options{Metrics: metrics, Log: slog.New(slog.NewTextHandler(log, nil))})
}

func do(h http.Handler, p *Peer, method, path, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, "http://sesame"+path, strings.NewReader(body))
	if p != nil {
		req = req.WithContext(withPeer(req.Context(), *p, nil))
	} else {
		req = req.WithContext(withPeer(req.Context(), Peer{}, errors.New("getsockopt: bad file descriptor")))
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

func errorOf(t *testing.T, w *httptest.ResponseRecorder) string {
	t.Helper()
	var e apiError
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil {
		t.Fatalf("error body %q is not JSON: %v", w.Body, err)
	}
	return e.Error
}

func TestHandler(t *testing.T) {
	a := netip.MustParseAddr("198.51.100.7")
	ssh := netport.Port{Proto: netport.TCP, Num: 22}
	live := []server.GrantStatus{{Src: a, Port: ssh, Remaining: 25000, By: "ssh", Kind: server.GrantDoor}}
	metrics := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "sesame_up 1\n") })
	tests := []struct {
		name      string
		peer      *Peer
		method    string
		path      string
		body      string
		coreErr   error
		noMetrics bool
		code      int
		want      string // in the body
		log       string // in the log
		granted   int    // Grant calls
		revoked   int    // Revoke calls
	}{
		{name: "status reader", peer: &readerPeer, method: "GET", path: "/v1/status", code: 200, want: `"version": "v9"`},
		{name: "status root", peer: &rootPeer, method: "GET", path: "/v1/status", code: 200, want: `"src": "198.51.100.7"`},
		{name: "status admin", peer: &adminPeer, method: "GET", path: "/v1/status", code: 200, want: `"port": "tcp/22"`},
		{name: "status daemon's uid", peer: &selfPeer, method: "GET", path: "/v1/status", code: 200},
		{name: "status other", peer: &otherPeer, method: "GET", path: "/v1/status", code: 403, want: "reading needs root or group sesame", log: "uid=1003 pid=14"},
		{name: "no credentials", method: "GET", path: "/v1/status", code: 403, want: "cannot read your credentials: getsockopt"},
		{name: "status core error", peer: &readerPeer, method: "GET", path: "/v1/status", coreErr: errors.New("list grants: netlink: EPERM"), code: 500, want: "status: list grants: netlink: EPERM"},
		{name: "status stopping", peer: &readerPeer, method: "GET", path: "/v1/status", coreErr: context.Canceled, code: 503},
		{name: "grants", peer: &readerPeer, method: "GET", path: "/v1/grants", code: 200, want: `"remaining_ms": 25000`},
		{name: "stats", peer: &readerPeer, method: "GET", path: "/v1/stats", code: 200, want: `"received": 77`},
		{name: "metrics", peer: &readerPeer, method: "GET", path: "/metrics", code: 200, want: "sesame_up 1"},
		{name: "metrics other", peer: &otherPeer, method: "GET", path: "/metrics", code: 403},
		{name: "metrics off", peer: &readerPeer, method: "GET", path: "/metrics", noMetrics: true, code: 404, want: "serves no metrics"},
		{name: "unknown path", peer: &rootPeer, method: "GET", path: "/v1/nothing", code: 404, want: "no endpoint /v1/nothing"},
		{name: "GET grant", peer: &rootPeer, method: "GET", path: "/v1/grant", code: 405, want: "GET /v1/grant: method not allowed (use POST)"},
		{name: "POST status", peer: &rootPeer, method: "POST", path: "/v1/status", code: 405, want: "use GET"},
		{name: "DELETE revoke", peer: &rootPeer, method: "DELETE", path: "/v1/revoke", code: 405},

		{name: "grant root", peer: &rootPeer, method: "POST", path: "/v1/grant", body: `{"src":"203.0.113.9","port":"tcp/22","for_ms":60000,"note":"INC-42"}`,
			code: 200, want: `"for_ms": 60000`, log: `msg="control: operator grant" src=203.0.113.9 port=tcp/22 for=1m0s note=INC-42 uid=0 pid=10`, granted: 1},
		{name: "grant admin", peer: &adminPeer, method: "POST", path: "/v1/grant", body: `{"src":"203.0.113.9","port":"udp/53","for_ms":1}`, code: 200, log: "uid=1001 pid=12", granted: 1},
		{name: "grant admin primary group", peer: &primPeer, method: "POST", path: "/v1/grant", body: `{"src":"2001:db8::9","port":"tcp/22","for_ms":3600000}`, code: 200, granted: 1},
		{name: "grant mapped address", peer: &rootPeer, method: "POST", path: "/v1/grant", body: `{"src":"::ffff:203.0.113.9","port":"tcp/22","for_ms":1000}`, code: 200, want: `"src": "203.0.113.9"`, granted: 1},
		{name: "grant reader", peer: &readerPeer, method: "POST", path: "/v1/grant", body: `{"src":"203.0.113.9","port":"tcp/22","for_ms":60000}`, code: 403, want: "changing needs root or group sesame-admin", log: "reason=\"not an admin\""},
		{name: "grant other", peer: &otherPeer, method: "POST", path: "/v1/grant", body: `{}`, code: 403, want: "changing needs root or group sesame-admin"},
		{name: "grant above max", peer: &rootPeer, method: "POST", path: "/v1/grant", body: `{"src":"203.0.113.9","port":"tcp/22","for_ms":3600001}`, code: 400, want: "for_ms: 1h0m0.001s is longer than the maximum grant, 1h0m0s ([control] max_grant)"},
		{name: "grant huge", peer: &rootPeer, method: "POST", path: "/v1/grant", body: `{"src":"203.0.113.9","port":"tcp/22","for_ms":9223372036854775807}`, code: 400, want: "for_ms: 9223372036854775807 ms is longer"},
		{name: "grant no for", peer: &rootPeer, method: "POST", path: "/v1/grant", body: `{"src":"203.0.113.9","port":"tcp/22"}`, code: 400, want: "for_ms: missing or not positive"},
		{name: "grant negative for", peer: &rootPeer, method: "POST", path: "/v1/grant", body: `{"src":"203.0.113.9","port":"tcp/22","for_ms":-5}`, code: 400, want: "for_ms: missing or not positive"},
		{name: "grant no src", peer: &rootPeer, method: "POST", path: "/v1/grant", body: `{"port":"tcp/22","for_ms":5}`, code: 400, want: "src: missing"},
		{name: "grant bad src", peer: &rootPeer, method: "POST", path: "/v1/grant", body: `{"src":"300.1.1.1","port":"tcp/22","for_ms":5}`, code: 400, want: "request body: "},
		{name: "grant unspecified src", peer: &rootPeer, method: "POST", path: "/v1/grant", body: `{"src":"0.0.0.0","port":"tcp/22","for_ms":5}`, code: 400, want: "src: 0.0.0.0 is not a unicast address"},
		{name: "grant multicast src", peer: &rootPeer, method: "POST", path: "/v1/grant", body: `{"src":"ff02::1","port":"tcp/22","for_ms":5}`, code: 400, want: "not a unicast address"},
		{name: "grant zone", peer: &rootPeer, method: "POST", path: "/v1/grant", body: `{"src":"fe80::1%eth0","port":"tcp/22","for_ms":5}`, code: 400, want: "has a zone"},
		{name: "grant no port", peer: &rootPeer, method: "POST", path: "/v1/grant", body: `{"src":"203.0.113.9","for_ms":5}`, code: 400, want: "port: missing"},
		{name: "grant bad port", peer: &rootPeer, method: "POST", path: "/v1/grant", body: `{"src":"203.0.113.9","port":"tcp/0","for_ms":5}`, code: 400, want: "out of range 1-65535"},
		{name: "grant icmp", peer: &rootPeer, method: "POST", path: "/v1/grant", body: `{"src":"203.0.113.9","port":"icmp/0","for_ms":5}`, code: 400, want: "only tcp and udp"},
		{name: "grant unknown field", peer: &rootPeer, method: "POST", path: "/v1/grant", body: `{"src":"203.0.113.9","port":"tcp/22","for_ms":5,"uid":0}`, code: 400, want: `unknown field "uid"`},
		{name: "grant two objects", peer: &rootPeer, method: "POST", path: "/v1/grant", body: `{"src":"203.0.113.9","port":"tcp/22","for_ms":5}{}`, code: 400, want: "more than one JSON value"},
		{name: "grant empty body", peer: &rootPeer, method: "POST", path: "/v1/grant", code: 400, want: "request body: empty"},
		{name: "grant not json", peer: &rootPeer, method: "POST", path: "/v1/grant", body: `src=1.2.3.4`, code: 400, want: "request body: invalid character"},
		{name: "grant array", peer: &rootPeer, method: "POST", path: "/v1/grant", body: `[]`, code: 400, want: "request body: json: cannot unmarshal array"},
		{name: "grant too big", peer: &rootPeer, method: "POST", path: "/v1/grant", body: `{"note":"` + strings.Repeat("x", MaxBody) + `"}`, code: 413, want: "larger than 65536 bytes"},
		{name: "grant long note", peer: &rootPeer, method: "POST", path: "/v1/grant", body: `{"src":"203.0.113.9","port":"tcp/22","for_ms":5,"note":"` + strings.Repeat("x", MaxNote+1) + `"}`, code: 400, want: "note: longer than 256 bytes"},
		{name: "grant note control", peer: &rootPeer, method: "POST", path: "/v1/grant", body: `{"src":"203.0.113.9","port":"tcp/22","for_ms":5,"note":"a\nlevel=ERROR"}`, code: 400, want: "note: a control character at byte 1"},
		{name: "grant core invalid", peer: &rootPeer, method: "POST", path: "/v1/grant", body: `{"src":"203.0.113.9","port":"tcp/23","for_ms":5}`, coreErr: invalidErr{}, code: 400, want: "grant: tcp/23 is not a protected port", log: "operator grant failed", granted: 1},
		{name: "grant core fails", peer: &rootPeer, method: "POST", path: "/v1/grant", body: `{"src":"203.0.113.9","port":"tcp/22","for_ms":5}`, coreErr: errors.New("nft: EPERM"), code: 500, want: "grant: nft: EPERM", granted: 1},

		{name: "revoke one", peer: &rootPeer, method: "POST", path: "/v1/revoke", body: `{"src":"198.51.100.7","port":"tcp/22"}`, code: 200, want: `"grants": 1`, log: `msg="control: revoke" all=false src=198.51.100.7 port=tcp/22 kill=false uid=0 pid=10 grants=1 killed=0`, revoked: 1},
		{name: "revoke source kill", peer: &adminPeer, method: "POST", path: "/v1/revoke", body: `{"src":"198.51.100.7","kill":true}`, code: 200, want: `"killed": 3`, log: "kill=true uid=1001", revoked: 1},
		{name: "revoke all", peer: &rootPeer, method: "POST", path: "/v1/revoke", body: `{"all":true}`, code: 200, want: `"grants": 1`, revoked: 1},
		{name: "revoke none matching", peer: &rootPeer, method: "POST", path: "/v1/revoke", body: `{"src":"192.0.2.1"}`, code: 200, want: `"grants": 0`, revoked: 1},
		{name: "revoke reader", peer: &readerPeer, method: "POST", path: "/v1/revoke", body: `{"all":true}`, code: 403, want: "changing needs root or group sesame-admin"},
		{name: "revoke all and src", peer: &rootPeer, method: "POST", path: "/v1/revoke", body: `{"all":true,"src":"192.0.2.1"}`, code: 400, want: "all: revokes every grant; it goes without src and port"},
		{name: "revoke port only", peer: &rootPeer, method: "POST", path: "/v1/revoke", body: `{"port":"tcp/22"}`, code: 400, want: "src: missing (a port alone names no grant)"},
		{name: "revoke nothing", peer: &rootPeer, method: "POST", path: "/v1/revoke", body: `{}`, code: 400, want: `or "all": true`},
		{name: "revoke core fails", peer: &rootPeer, method: "POST", path: "/v1/revoke", body: `{"all":true}`, coreErr: errors.New("nft: EBUSY"), code: 500, want: "revoke: nft: EBUSY", log: "revoke failed", revoked: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			core := &controltest.Core{
				St:       server.Status{Version: "v9", Firewall: "nftables"},
				Live:     append([]server.GrantStatus(nil), live...),
				Counters: server.Stats{Capture: server.CaptureStats{Received: 77}},
				Err:      tc.coreErr,
				Killed:   3,
			}
			var log logBuf
			var m http.Handler = metrics
			if tc.noMetrics {
				m = nil
			}
			w := do(newTestHandler(core, m, &log), tc.peer, tc.method, tc.path, tc.body)
			if w.Code != tc.code {
				t.Fatalf("code %d, want %d; body %s", w.Code, tc.code, w.Body)
			}
			if tc.code != 200 {
				if msg := errorOf(t, w); !strings.Contains(msg, tc.want) {
					t.Errorf("error %q, want it to contain %q", msg, tc.want)
				}
				if got := w.Header().Get("Content-Type"); got != "application/json" {
					t.Errorf("Content-Type %q", got)
				}
			} else if !strings.Contains(w.Body.String(), tc.want) {
				t.Errorf("body %s, want it to contain %q", w.Body, tc.want)
			}
			if !strings.Contains(log.String(), tc.log) {
				t.Errorf("log %q, want it to contain %q", log.String(), tc.log)
			}
			if len(core.Granted) != tc.granted || len(core.Revoked) != tc.revoked {
				t.Errorf("core saw %d grants and %d revokes, want %d and %d", len(core.Granted), len(core.Revoked), tc.granted, tc.revoked)
			}
			for _, g := range core.Granted {
				if g.UID != tc.peer.UID {
					t.Errorf("grant UID %d, want the caller's %d", g.UID, tc.peer.UID)
				}
			}
			for _, r := range core.Revoked {
				if r.UID != tc.peer.UID {
					t.Errorf("revoke UID %d, want the caller's %d", r.UID, tc.peer.UID)
				}
			}
		})
	}
}

func TestHandler405Allow(t *testing.T) {
	w := do(newTestHandler(&controltest.Core{}, nil, &logBuf{}), &rootPeer, "PUT", "/v1/revoke", "")
	if got := w.Header().Get("Allow"); got != "POST" {
		t.Errorf("Allow %q, want POST", got)
	}
}

// TestHandlerEmptyLists checks that no grants and no doors are [] in JSON, never null.
func TestHandlerEmptyLists(t *testing.T) {
	h := newTestHandler(&controltest.Core{}, nil, &logBuf{})
	for _, path := range []string{"/v1/status", "/v1/grants"} {
		w := do(h, &rootPeer, "GET", path, "")
		if strings.Contains(w.Body.String(), "null") || !strings.Contains(w.Body.String(), `"grants": []`) {
			t.Errorf("%s: %s", path, w.Body)
		}
	}
}

// TestRefusalLogBounded checks that a flood of refused requests logs a bounded number of lines.
func TestRefusalLogBounded(t *testing.T) {
	var log logBuf
	h := newTestHandler(&controltest.Core{}, nil, &log)
	for range 1000 {
		if w := do(h, &otherPeer, "GET", "/v1/status", ""); w.Code != 403 {
			t.Fatalf("code %d", w.Code)
		}
	}
	if n := strings.Count(log.String(), "request refused"); n < 1 || n > 20 {
		t.Errorf("%d refusal lines for 1000 refused requests, want 1-20", n)
	}
}
