package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/netip"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/sesame-knock/sesame/internal/lograte"
	"github.com/sesame-knock/sesame/internal/server"
)

// MaxNote is the longest note a grant may carry, in bytes.
const MaxNote = 256

// handler serves the API for one Core.
type handler struct {
	core     Core
	rights   rights
	self     int // the daemon's uid, which may always change
	maxGrant time.Duration
	metrics  http.Handler
	log      *slog.Logger
	refusals *lograte.Budget // log lines about refused requests
}

func newHandler(core Core, r rights, self int, maxGrant time.Duration, opts Options) *handler {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &handler{
		core: core, rights: r, self: self, maxGrant: maxGrant, metrics: opts.Metrics, log: log,
		refusals: lograte.NewBudget(1, 10, time.Minute, nil),
	}
}

// route is one endpoint: its method, whether it changes anything, and what serves it.
type route struct {
	method string
	change bool
	serve  func(h *handler, w http.ResponseWriter, r *http.Request, p Peer)
}

// lookup returns the endpoint at path.
func lookup(path string) (route, bool) {
	switch path {
	case "/v1/status":
		return route{http.MethodGet, false, (*handler).status}, true
	case "/v1/grants":
		return route{http.MethodGet, false, (*handler).grants}, true
	case "/v1/stats":
		return route{http.MethodGet, false, (*handler).stats}, true
	case "/metrics":
		return route{http.MethodGet, false, (*handler).serveMetrics}, true
	case "/v1/grant":
		return route{http.MethodPost, true, (*handler).grant}, true
	case "/v1/revoke":
		return route{http.MethodPost, true, (*handler).revoke}, true
	}
	return route{}, false
}

// apiError is the body of every error answer.
type apiError struct {
	Error string `json:"error"`
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rt, ok := lookup(r.URL.Path)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no endpoint %s (see docs/CONTROL.md)", r.URL.Path))
		return
	}
	if r.Method != rt.method {
		w.Header().Set("Allow", rt.method)
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s %s: method not allowed (use %s)", r.Method, r.URL.Path, rt.method))
		return
	}
	p, err := peerFrom(r.Context())
	if err != nil {
		h.refused(r, p, err.Error())
		writeError(w, http.StatusForbidden, "cannot read your credentials: "+err.Error())
		return
	}
	if rt.change && !h.rights.canChange(p, h.self) {
		h.refused(r, p, "not an admin")
		writeError(w, http.StatusForbidden, h.rights.needChange())
		return
	}
	if !rt.change && !h.rights.canRead(p, h.self) {
		h.refused(r, p, "not a reader")
		writeError(w, http.StatusForbidden, h.rights.needRead())
		return
	}
	rt.serve(h, w, r, p)
}

// refused logs a refused request, within the budget.
func (h *handler) refused(r *http.Request, p Peer, reason string) {
	if h.refusals.Allow() {
		h.log.Warn("control: request refused", "method", r.Method, "path", r.URL.Path, "uid", p.UID, "pid", p.PID, "reason", reason)
	}
}

func (h *handler) status(w http.ResponseWriter, r *http.Request, _ Peer) {
	st, err := h.core.Status(r.Context())
	if err != nil {
		writeCoreError(w, "status", err)
		return
	}
	if st.Doors == nil {
		st.Doors = []server.DoorStatus{}
	}
	if st.Grants == nil {
		st.Grants = []server.GrantStatus{}
	}
	writeJSON(w, http.StatusOK, st)
}

// Grants is the body of GET /v1/grants.
type Grants struct {
	Grants []server.GrantStatus `json:"grants"`
}

func (h *handler) grants(w http.ResponseWriter, r *http.Request, _ Peer) {
	gs, err := h.core.Grants(r.Context())
	if err != nil {
		writeCoreError(w, "grants", err)
		return
	}
	if gs == nil {
		gs = []server.GrantStatus{}
	}
	writeJSON(w, http.StatusOK, Grants{gs})
}

func (h *handler) stats(w http.ResponseWriter, _ *http.Request, _ Peer) {
	writeJSON(w, http.StatusOK, h.core.Stats())
}

func (h *handler) serveMetrics(w http.ResponseWriter, r *http.Request, _ Peer) {
	if h.metrics == nil {
		writeError(w, http.StatusNotFound, "this daemon serves no metrics")
		return
	}
	h.metrics.ServeHTTP(w, r)
}

func (h *handler) grant(w http.ResponseWriter, r *http.Request, p Peer) {
	var req server.GrantRequest
	if !h.decode(w, r, &req) {
		return
	}
	req, err := checkGrant(req, h.maxGrant)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	req.UID = p.UID
	if err := h.core.Grant(r.Context(), req); err != nil {
		h.log.Warn("control: operator grant failed", "src", req.Src, "port", req.Port, "for", req.For.Duration(), "note", req.Note, "uid", p.UID, "pid", p.PID, "err", err)
		writeCoreError(w, "grant", err)
		return
	}
	h.log.Info("control: operator grant", "src", req.Src, "port", req.Port, "for", req.For.Duration(), "note", req.Note, "uid", p.UID, "pid", p.PID)
	writeJSON(w, http.StatusOK, req)
}

func (h *handler) revoke(w http.ResponseWriter, r *http.Request, p Peer) {
	var req server.RevokeRequest
	if !h.decode(w, r, &req) {
		return
	}
	req, err := checkRevoke(req)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	req.UID = p.UID
	res, err := h.core.Revoke(r.Context(), req)
	if err != nil {
		h.log.Warn("control: revoke failed", revokeAttrs(req, p, "err", err)...)
		writeCoreError(w, "revoke", err)
		return
	}
	h.log.Info("control: revoke", revokeAttrs(req, p, "grants", res.Grants, "killed", res.Killed)...)
	writeJSON(w, http.StatusOK, res)
}

// revokeAttrs are a revoke's log attributes, then extra.
func revokeAttrs(req server.RevokeRequest, p Peer, extra ...any) []any {
	a := []any{"all", req.All}
	if req.Src.IsValid() {
		a = append(a, "src", req.Src)
	}
	if !req.Port.IsZero() {
		a = append(a, "port", req.Port)
	}
	a = append(a, "kill", req.Kill, "uid", p.UID, "pid", p.PID)
	return append(a, extra...)
}

// decode reads r's body (at most MaxBody bytes) into v, or answers the error and returns false.
func (h *handler) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	err := decodeBody(http.MaxBytesReader(w, r.Body, MaxBody), v)
	var tooBig *http.MaxBytesError
	switch {
	case err == nil:
		return true
	case errors.As(err, &tooBig):
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body: larger than %d bytes", MaxBody))
	default:
		writeError(w, http.StatusBadRequest, err.Error())
	}
	return false
}

// decodeBody decodes exactly one JSON object from rd into v; unknown fields are errors.
func decodeBody(rd io.Reader, v any) error {
	dec := json.NewDecoder(rd)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return errors.New("request body: empty (want a JSON object)")
		}
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return err
		}
		return fmt.Errorf("request body: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return err
		}
		return errors.New("request body: more than one JSON value")
	}
	return nil
}

// checkAddr checks a request's source address and returns it unmapped.
func checkAddr(a netip.Addr) (netip.Addr, error) {
	a = a.Unmap()
	switch {
	case !a.IsValid():
		return a, errors.New(`src: missing (the client's address, as in "198.51.100.7")`)
	case a.Zone() != "":
		return a, fmt.Errorf("src: %s has a zone; give the address alone", a)
	case a.IsUnspecified(), a.IsMulticast():
		return a, fmt.Errorf("src: %s is not a unicast address", a)
	}
	return a, nil
}

// checkGrant checks a grant request against the limits, and returns it with its address
// unmapped.
func checkGrant(req server.GrantRequest, maxGrant time.Duration) (server.GrantRequest, error) {
	var err error
	if req.Src, err = checkAddr(req.Src); err != nil {
		return req, err
	}
	switch {
	case req.Port.IsZero():
		return req, errors.New(`port: missing (as in "tcp/22")`)
	case req.For <= 0:
		return req, errors.New("for_ms: missing or not positive (how long, in milliseconds)")
	case req.For > server.MillisOf(maxGrant):
		return req, fmt.Errorf("for_ms: %s is longer than the maximum grant, %v ([control] max_grant)", fmtMillis(req.For), maxGrant)
	}
	return req, checkNote(req.Note)
}

// fmtMillis shows m as a duration, or as milliseconds when it is too long for one.
func fmtMillis(m server.Millis) string {
	if m > math.MaxInt64/server.Millis(time.Millisecond) {
		return fmt.Sprintf("%d ms", m)
	}
	return m.Duration().String()
}

// checkNote checks an operator's note: at most MaxNote bytes of printable UTF-8.
func checkNote(s string) error {
	if len(s) > MaxNote {
		return fmt.Errorf("note: longer than %d bytes", MaxNote)
	}
	if !utf8.ValidString(s) {
		return errors.New("note: not UTF-8")
	}
	if i := strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }); i >= 0 {
		return fmt.Errorf("note: a control character at byte %d", i)
	}
	return nil
}

// checkRevoke checks a revoke request: every grant (all) or one source's, optionally on one port.
func checkRevoke(req server.RevokeRequest) (server.RevokeRequest, error) {
	if req.Ban {
		if req.All || !req.Port.IsZero() || req.Kill {
			return req, errors.New("ban: lifts one source's ban; it goes without all, port and kill")
		}
		if !req.Src.IsValid() {
			return req, errors.New("src: missing (the banned address)")
		}
		var err error
		req.Src, err = checkAddr(req.Src)
		return req, err
	}
	if req.All {
		if req.Src.IsValid() || !req.Port.IsZero() {
			return req, errors.New("all: revokes every grant; it goes without src and port")
		}
		return req, nil
	}
	if !req.Src.IsValid() {
		if !req.Port.IsZero() {
			return req, errors.New("src: missing (a port alone names no grant)")
		}
		return req, errors.New(`src: missing (the address whose grants to revoke, or "all": true)`)
	}
	var err error
	req.Src, err = checkAddr(req.Src)
	return req, err
}

// writeJSON answers v with status code.
func writeJSON(w http.ResponseWriter, code int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		writeError(w, http.StatusInternalServerError, "encode answer: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	w.Write(buf.Bytes())
}

// writeError answers the error message msg with status code.
func writeError(w http.ResponseWriter, code int, msg string) {
	b, _ := json.Marshal(apiError{msg}) // a struct of one string always encodes
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

// writeCoreError answers an error of the Core: 400 when it is the request's fault, 503 when
// the server is stopping or too slow, 500 otherwise.
func writeCoreError(w http.ResponseWriter, op string, err error) {
	code := http.StatusInternalServerError
	var inv interface{ Invalid() bool }
	switch {
	case errors.As(err, &inv) && inv.Invalid():
		code = http.StatusBadRequest
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		code = http.StatusServiceUnavailable
	}
	writeError(w, code, op+": "+err.Error())
}
