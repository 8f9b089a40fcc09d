// Package spapolicy decides what single packet authorization requests, native or fwknop, are granted.
package spapolicy

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sesame-knock/sesame/internal/capture"
	"github.com/sesame-knock/sesame/internal/config"
	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/fwknop"
	"github.com/sesame-knock/sesame/internal/lograte"
	"github.com/sesame-knock/sesame/internal/netport"
	"github.com/sesame-knock/sesame/internal/replay"
	"github.com/sesame-knock/sesame/internal/spa"
)

// Replay key prefixes keep the two formats' keys apart in one store. fwknop keys are 'F' since
// they are the digest of the decrypted plaintext ('f' was the digest of the wire text).
const (
	prefixNative = 'n'
	prefixFwknop = 'F'
)

// Policy checks SPA packets against a configuration. It is safe for concurrent use, and its
// configuration may be replaced while it runs (Reload).
type Policy struct {
	store   replay.Store
	persist replay.Deferred // store, when it persists only once told (nil otherwise)
	log     *slog.Logger
	now     func() time.Time
	limiter *lograte.Limiter
	rules   atomic.Pointer[rules]
	// reloadMu serializes reloads, each deriving its window from the one before.
	reloadMu sync.Mutex

	counts [numFormats][NumReasons]atomic.Uint64
}

// rules is one configuration's clients, keyed for lookup; a reload swaps it whole.
type rules struct {
	cfg    *config.SPA
	keys   spa.Clients
	native map[string]*config.SPAClient
	fwknop []*config.SPAClient
	win    window
	// clients count each client's authenticated packets; a reload carries them over by name.
	clients map[string]*clientCounters
}

// window is the age limit of packets and how long their replay entries live. A packet is
// accepted only while it is younger than maxAge, and its entry lives retention plus
// spa.ReplayMargin past its timestamp, so an entry always outlives its packet's acceptance.
type window struct {
	maxAge time.Duration
	// retention is the largest max_age so far (of this run, or ever when the replay store keeps
	// the window: replay.Meta): raising max_age must not let entries recorded under the old one
	// expire while their packets are acceptable again.
	retention time.Duration
	// bounds, one per recent raise of retention, ascending by cutoff and by limit: entries
	// recorded before that raise live only limit (plus the margin) past their packet's
	// timestamp, so a packet that may be one of them (timestamp at or before cutoff: it could
	// have passed the age check before the raise) is accepted only while younger than limit.
	bounds []bound
}

type bound struct {
	cutoff time.Time
	limit  time.Duration
}

// maxBounds caps the raises remembered; older ones merge, holding their packets to the
// smaller limit, which refuses more, never less.
const maxBounds = 16

func firstWindow(maxAge time.Duration) window {
	if maxAge <= 0 {
		maxAge = spa.DefaultMaxAge
	}
	return window{maxAge: maxAge, retention: maxAge}
}

// next is the window after a reload (or restart) to maxAge at now.
func (w window) next(maxAge time.Duration, now time.Time) window {
	n := firstWindow(maxAge)
	n.retention = max(w.retention, n.maxAge)
	for _, b := range w.bounds {
		// Once every packet a bound covers is older than any window so far, it can go: such a
		// packet is stale under this window, and under the bound the next raise adds.
		if now.Before(b.cutoff.Add(w.retention)) {
			n.bounds = append(n.bounds, b)
		}
	}
	if n.retention > w.retention {
		// Packets accepted so far had timestamps before now + w.retention (the future side of
		// every window so far), and entries that live w.retention past them.
		n.bounds = append(n.bounds, bound{cutoff: now.Add(w.retention), limit: w.retention})
	}
	if len(n.bounds) > maxBounds {
		n.bounds = append([]bound{{cutoff: n.bounds[1].cutoff, limit: n.bounds[0].limit}}, n.bounds[2:]...)
	}
	return n
}

// windowMeta names the window in a replay.Meta store.
const windowMeta = "spaserver window"

func (w window) MarshalBinary() ([]byte, error) {
	b := binary.BigEndian.AppendUint64(nil, uint64(w.retention))
	for _, bd := range w.bounds {
		b = binary.BigEndian.AppendUint64(b, uint64(bd.cutoff.UnixNano()))
		b = binary.BigEndian.AppendUint64(b, uint64(bd.limit))
	}
	return b, nil
}

func (w *window) UnmarshalBinary(b []byte) error {
	if len(b) < 8 || (len(b)-8)%16 != 0 || len(b) > 8+16*maxBounds {
		return fmt.Errorf("stored window: %d bytes", len(b))
	}
	ret := time.Duration(binary.BigEndian.Uint64(b))
	if ret <= 0 || ret > 10*config.MaxSPAMaxAge {
		return errors.New("stored window out of range")
	}
	*w = window{maxAge: ret, retention: ret}
	for b = b[8:]; len(b) > 0; b = b[16:] {
		bd := bound{cutoff: time.Unix(0, int64(binary.BigEndian.Uint64(b))), limit: time.Duration(binary.BigEndian.Uint64(b[8:]))}
		if bd.limit <= 0 || bd.limit > ret {
			return errors.New("stored window out of range")
		}
		w.bounds = append(w.bounds, bd)
	}
	return nil
}

// keepWindow derives the window for maxAge at now from the one before (prev; the stored one when
// prev is nil and the store keeps it) and stores the result when the store keeps windows.
func (h *Policy) keepWindow(prev *window, maxAge time.Duration, now time.Time) (window, error) {
	m, _ := h.store.(replay.Meta)
	if prev == nil && m != nil {
		v, err := m.GetMeta(windowMeta)
		if err != nil {
			return window{}, err
		}
		if v != nil { // else a new file: nothing to protect
			prev = new(window)
			if err := prev.UnmarshalBinary(v); err != nil {
				return window{}, err
			}
		}
	}
	w := firstWindow(maxAge)
	if prev != nil {
		w = prev.next(maxAge, now)
	}
	if m != nil {
		v, _ := w.MarshalBinary()
		if err := m.PutMeta(windowMeta, v); err != nil {
			return window{}, err
		}
	}
	return w, nil
}

// maxAgeFor is the age a packet with timestamp ts must stay under: the first bound that covers
// it has the smallest limit of those that do.
func (w window) maxAgeFor(ts time.Time) time.Duration {
	for _, b := range w.bounds {
		if !ts.After(b.cutoff) {
			return min(w.maxAge, b.limit)
		}
	}
	return w.maxAge
}

// expiry is when the replay entry of a packet with timestamp ts may go.
func (w window) expiry(ts time.Time) time.Time {
	return ts.Add(w.retention + spa.ReplayMargin)
}

// age judges a packet's timestamp at now: "" when it is inside the window (strictly), else the
// reason and detail (reason is the zero Reason inside).
func (w window) age(ts, now time.Time) (reason Reason, detail string) {
	switch age := now.Sub(ts); {
	case age >= w.maxAgeFor(ts):
		return ReasonStale, fmt.Sprintf("%v old", age.Round(time.Millisecond))
	case age <= -w.maxAge:
		return ReasonFuture, fmt.Sprintf("%v ahead", (-age).Round(time.Millisecond))
	}
	return 0, ""
}

// New builds a Policy for cfg. store records accepted packets' replay keys; log receives one
// line per decision (refusals rate-limited per source); now is the clock (time.Now when nil).
func New(cfg *config.SPA, store replay.Store, log *slog.Logger, now func() time.Time) (*Policy, error) {
	const op = "spapolicy: new"
	if cfg == nil || store == nil {
		return nil, fmt.Errorf("%s: configuration and replay store are required", op)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	r, err := newRules(cfg, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	h := &Policy{
		store: store, log: log, now: now,
		limiter: lograte.New(10, time.Second, 4096, now),
	}
	h.persist, _ = store.(replay.Deferred)
	if r.win, err = h.keepWindow(nil, cfg.MaxAge, now()); err != nil {
		return nil, fmt.Errorf("%s: replay window: %w", op, err)
	}
	h.rules.Store(r)
	return h, nil
}

// ShareLogBudget puts the global log budget b in front of the per-source limit on refusal lines
// (the server shares its own, so that knock and SPA refusals draw on one budget). Accepted
// packets are always logged: each is authenticated and accepted once.
func (h *Policy) ShareLogBudget(b *lograte.Budget) { h.limiter.SetBudget(b) }

// Reload replaces the clients, their keys and limits, max_age and the server key with cfg's,
// atomically: a packet is checked against the old configuration or the new one, never a mix.
// Replay keys, counts and log budgets carry over, and a packet accepted before the reload stays
// a replay after it, also when max_age grows. On error the running configuration stays.
// The listener (port, sniff) is the caller's business: Policy never binds.
func (h *Policy) Reload(cfg *config.SPA) error {
	st, err := h.Prepare(cfg)
	if err != nil {
		return err
	}
	h.Commit(st)
	return nil
}

// Staged is a configuration Prepare checked, ready for Commit.
type Staged struct {
	h *Policy
	r *rules
}

// Prepare checks cfg and builds everything Reload would put in place, without changing what
// packets are checked against, so that a caller can reload SPA together with other parts, all
// or none. The replay window it derives is already stored (when the store keeps it): it only
// grows, so a Staged that is never committed makes the store refuse more, never less. Calls of
// Prepare and Commit must not interleave with another Prepare (the server serializes reloads).
func (h *Policy) Prepare(cfg *config.SPA) (*Staged, error) {
	if cfg == nil {
		return nil, errors.New("spapolicy: reload: no [spa] configuration")
	}
	h.reloadMu.Lock()
	defer h.reloadMu.Unlock()
	cur := h.rules.Load()
	r, err := newRules(cfg, cur)
	if err != nil {
		return nil, fmt.Errorf("spapolicy: reload: %w", err)
	}
	prev := cur.win
	if r.win, err = h.keepWindow(&prev, cfg.MaxAge, h.now()); err != nil {
		return nil, fmt.Errorf("spapolicy: reload: replay window: %w", err)
	}
	return &Staged{h: h, r: r}, nil
}

// Commit puts st in place atomically: a packet is checked against the old configuration or the
// new one, never a mix. It cannot fail.
func (h *Policy) Commit(st *Staged) {
	if st == nil || st.h != h {
		panic("spapolicy: commit of a configuration staged for another policy")
	}
	h.reloadMu.Lock()
	defer h.reloadMu.Unlock()
	h.rules.Store(st.r)
}

// Config returns the [spa] configuration packets are checked against now.
func (h *Policy) Config() *config.SPA { return h.rules.Load().cfg }

func newRules(cfg *config.SPA, prev *rules) (*rules, error) {
	r := &rules{cfg: cfg, native: map[string]*config.SPAClient{}, clients: map[string]*clientCounters{}}
	for i := range cfg.Clients {
		name := cfg.Clients[i].Name
		if prev != nil && prev.clients[name] != nil {
			r.clients[name] = prev.clients[name]
		} else {
			r.clients[name] = new(clientCounters)
		}
	}
	var clients []*spa.Client
	for i := range cfg.Clients {
		c := &cfg.Clients[i]
		switch c.Format {
		case config.SPAFormatNative:
			var sc *spa.Client
			var err error
			switch {
			case c.Shared != nil:
				sc, err = spa.NewSharedClient(c.Name, *c.Shared)
			case c.Public != nil && cfg.ServerKey != nil:
				sc, err = spa.NewPairClient(c.Name, *c.Public, cfg.ServerKey)
			default:
				err = errors.New("no usable key")
			}
			if err != nil {
				return nil, fmt.Errorf("client %q: %w", c.Name, err)
			}
			clients = append(clients, sc)
			r.native[c.Name] = c
		case config.SPAFormatFwknop:
			r.fwknop = append(r.fwknop, c)
		default:
			return nil, fmt.Errorf("client %q: unknown format %q", c.Name, c.Format)
		}
	}
	keys, err := spa.NewKeyring(clients...)
	if err != nil {
		return nil, err
	}
	r.keys = keys
	return r, nil
}

// decision is the outcome for one packet, logged exactly once.
type decision struct {
	reason Reason
	format Format
	client string
	// authed: the packet authenticated as client's (its HMAC or AEAD tag matched).
	authed bool
	detail string
	err    error // its text is the detail when detail is empty; formatted only if logged
	grants []firewall.Grant
	// inserted: the packet's replay key was recorded, so a Deferred store must persist it
	// whatever the outcome.
	inserted bool
}

// GrantFunc applies the grants an accepted packet earned (the firewall's Grant).
type GrantFunc func(ctx context.Context, grants ...firewall.Grant) error

// Handle checks one SPA payload from src, applies the grants it earns with grant (unless grant is
// nil), and only then logs the decision and lets a Deferred replay store persist, so neither
// costs the client time. It returns the grants (nil when refused) and grant's error. Cheap
// checks run first; the replay store is written only for authenticated, fresh packets, and
// persisted for every key written, also when policy then refuses the packet. payload may alias
// a read buffer: nothing of it is kept.
//
// src is taken as it is: an IPv4-mapped IPv6 source is refused ("bad source"), never read as
// the IPv4 address, as are sources no real sender has (capture.SourceProblem). Intakes that
// receive IPv4 on an IPv6 socket pass IPv4 addresses (udpintake does).
func (h *Policy) Handle(ctx context.Context, src netip.Addr, payload []byte, grant GrantFunc) ([]firewall.Grant, error) {
	var named NamedGrantFunc
	if grant != nil {
		named = func(ctx context.Context, _ string, grants []firewall.Grant) error { return grant(ctx, grants...) }
	}
	return h.HandleNamed(ctx, src, payload, named)
}

// NamedGrantFunc applies the grants an accepted packet of client earned.
type NamedGrantFunc func(ctx context.Context, client string, grants []firewall.Grant) error

// HandleNamed is Handle with a grant function that is told which client earned the grants.
func (h *Policy) HandleNamed(ctx context.Context, src netip.Addr, payload []byte, grant NamedGrantFunc) ([]firewall.Grant, error) {
	return h.HandleFrom(ctx, src, 0, payload, grant)
}

// HandleFrom is HandleNamed with the packet's UDP source port, 0 when it has none (a packet in
// a ping): a client with source_ports refuses packets from other ports, and from port 0.
func (h *Policy) HandleFrom(ctx context.Context, src netip.Addr, srcPort uint16, payload []byte, grant NamedGrantFunc) ([]firewall.Grant, error) {
	r := h.rules.Load()
	now := h.now() // the one clock reading for this packet: age, replay expiry and policy
	var d decision
	switch why := capture.SourceProblem(src); {
	case why != "":
		d.reason, d.detail = ReasonBadSource, why
	default:
		hdr, perr := spa.Peek(payload)
		if errors.Is(perr, spa.ErrNotSPA) {
			d = h.fwknop1(ctx, r, src, srcPort, payload, now)
			break
		}
		d = h.native1(ctx, r, src, srcPort, payload, hdr, perr == nil, now)
	}
	var err error
	if len(d.grants) > 0 && grant != nil {
		err = grant(ctx, d.client, d.grants)
	}
	h.record(r, src, &d, err)
	if h.persist != nil && d.inserted {
		h.persist.PersistSoon()
	}
	return d.grants, err
}

func (h *Policy) native1(ctx context.Context, r *rules, src netip.Addr, srcPort uint16, pkt []byte, hdr spa.Header, hasHdr bool, now time.Time) decision {
	d := decision{format: FormatNative}
	if hasHdr {
		if c := r.keys.Lookup(hdr.Hint); c != nil {
			d.client = c.ID // claimed, not yet authenticated
		}
	}
	req, err := spa.Open(pkt, r.keys, now, r.win.maxAge)
	if err != nil {
		switch {
		case errors.Is(err, spa.ErrTooShort):
			d.reason = ReasonTooShort
		case errors.Is(err, spa.ErrTooLong):
			d.reason = ReasonTooLong
		case errors.Is(err, spa.ErrUnknownClient):
			d.reason = ReasonUnknownClient
		case errors.Is(err, spa.ErrBadMAC), errors.Is(err, spa.ErrDecrypt), errors.Is(err, spa.ErrBadSignature):
			d.reason = ReasonBadMAC
		case errors.Is(err, spa.ErrStale):
			d.reason = ReasonStale
		case errors.Is(err, spa.ErrFuture):
			d.reason = ReasonFuture
		default:
			d.reason = ReasonMalformed
		}
		d.err = err
		return d
	}
	d.client, d.authed = req.Client, true
	c := r.native[req.Client]
	if c == nil { // cannot happen: the keyring holds only configured clients
		d.reason = ReasonUnknownClient
		return d
	}
	if d.reason, d.detail = r.win.age(req.Timestamp, now); d.reason != 0 {
		return d // a packet that may predate a reload raising max_age, older than its entry lives
	}
	if !h.fresh(ctx, &d, append([]byte{prefixNative}, req.ReplayKey()...), now, r.win.expiry(req.Timestamp)) {
		return d
	}
	addr := src
	if req.FromSource() && c.RequireSourceAddress {
		d.reason, d.detail = ReasonSourceAddrNeeded, "the packet asks for its source address and require_address is set"
		return d
	}
	if !req.FromSource() {
		addr = req.Addr
		if !h.requested(&d, c, addr) {
			return d
		}
	}
	h.policy(&d, c, src, srcPort, addr, req.Ports, false, req.Duration, now)
	return d
}

func (h *Policy) fwknop1(ctx context.Context, r *rules, src netip.Addr, srcPort uint16, wire []byte, now time.Time) decision {
	d := decision{format: FormatFwknop}
	switch {
	case len(r.fwknop) == 0:
		d.format, d.reason, d.detail = formatUnknown, ReasonMalformed, "not a sesame packet, and no fwknop clients are configured"
		return d
	}
	if err := fwknop.Precheck(wire); err != nil {
		switch {
		case errors.Is(err, fwknop.ErrTooShort):
			d.reason = ReasonTooShort
		case errors.Is(err, fwknop.ErrTooLong):
			d.reason = ReasonTooLong
		default:
			d.reason = ReasonMalformed
		}
		d.err = err
		return d
	}
	// Stanzas are tried in order, as fwknopd does: the first whose SOURCE admits src and whose
	// keys decode the packet is its first candidate.
	first, msg, authErr, authClient, matched := decodeNext(r.fwknop, 0, src, wire)
	if !matched {
		d.reason = ReasonSourceNotAllowed
		return d
	}
	if msg == nil {
		// Without a matching HMAC a wrong key and a damaged packet look alike: "bad MAC".
		d.reason, d.detail = ReasonBadMAC, "no stanza's keys authenticate the packet"
		if authErr != nil {
			d.client, d.authed, d.detail, d.err = authClient, true, "", authErr
			if errors.Is(authErr, fwknop.ErrMalformed) {
				d.reason = ReasonMalformed
			}
		}
		return d
	}
	d.client, d.authed = r.fwknop[first].Name, true
	if d.reason, d.detail = r.win.age(msg.Timestamp, now); d.reason != 0 {
		return d
	}
	// The digest of the decrypted plaintext: one key for every spelling of the packet, recorded
	// once, before any stanza's policy: a refused packet burns its key too (as under fwknopd),
	// and a replay is refused before another stanza is tried.
	key := append([]byte{prefixFwknop}, msg.ReplayDigest...)
	if !h.fresh(ctx, &d, key, now, r.win.expiry(msg.Timestamp)) {
		return d
	}
	h.fwknopPolicy(&d, r.fwknop[first], msg, src, srcPort, now)
	// When the first candidate refuses, the next stanzas whose keys decode the packet to the
	// same plaintext (so to the key just recorded) are asked in order, as fwknopd does; the
	// first that accepts grants. None accepting, the first candidate's refusal stands.
	for i := first + 1; d.reason != ReasonAccepted; i++ {
		var m *fwknop.Message
		if i, m, _, _, _ = decodeNext(r.fwknop, i, src, wire); m == nil {
			break
		}
		if !bytes.Equal(m.ReplayDigest, msg.ReplayDigest) {
			continue // another plaintext: it would need a replay key of its own
		}
		alt := decision{format: FormatFwknop, client: r.fwknop[i].Name, authed: true, inserted: d.inserted}
		if h.fwknopPolicy(&alt, r.fwknop[i], m, src, srcPort, now); alt.reason == ReasonAccepted {
			d = alt
		}
	}
	return d
}

// decodeNext finds the first of stanzas from index from on whose sources admit src and whose
// keys decode wire. matched reports whether any of them admits src; authErr is the first
// failure after a stanza's HMAC matched (the packet is that stanza's, authClient's).
func decodeNext(stanzas []*config.SPAClient, from int, src netip.Addr, wire []byte) (i int, msg *fwknop.Message, authErr error, authClient string, matched bool) {
	for i = from; i < len(stanzas); i++ {
		c := stanzas[i]
		if !sourceAllowed(src, c.Sources) {
			continue
		}
		matched = true
		m, err := fwknop.Decode(wire, c.Fwknop)
		if err == nil {
			return i, m, authErr, authClient, true
		}
		if c.Fwknop.HMACKey != nil && !errors.Is(err, fwknop.ErrBadHMAC) && authErr == nil {
			authErr, authClient = err, c.Name
		}
	}
	return i, nil, authErr, authClient, matched
}

// fwknopPolicy applies stanza c's policy to msg, an authenticated, fresh fwknop request from
// src, and sets d's reason and grants.
func (h *Policy) fwknopPolicy(d *decision, c *config.SPAClient, msg *fwknop.Message, src netip.Addr, srcPort uint16, now time.Time) {
	switch {
	case msg.Type == fwknop.TypeCommand:
		d.reason, d.detail = ReasonCommandRefused, "command messages are not enabled"
		return
	case msg.Type.HasNAT() && len(c.Forward) == 0:
		d.reason, d.detail = ReasonNATRefused, "NAT access requests are not enabled for this client (it has no forwards)"
		return
	case c.RequireUsername != "" && msg.User != c.RequireUsername:
		d.reason, d.detail = ReasonUserNotAllowed, fmt.Sprintf("username %q", msg.User)
		return
	}
	addr := src
	if !msg.FromSource() {
		addr = msg.AllowIP
		if !h.requested(d, c, addr) {
			return
		}
	} else if c.RequireSourceAddress {
		d.reason, d.detail = ReasonSourceAddrNeeded, "allow IP 0.0.0.0 with REQUIRE_SOURCE_ADDRESS"
		return
	}
	var nat netip.AddrPort // the requested NAT destination (for --nat-local: the port)
	localNAT := msg.Type == fwknop.TypeLocalNATAccess || msg.Type == fwknop.TypeClientTimeoutLocalNATAccess
	if msg.Type.HasNAT() {
		var ok bool
		if nat, ok = natRequested(d, c, msg, addr, localNAT); !ok {
			return
		}
	}
	dur := msg.ClientTimeout
	if !msg.Type.HasTimeout() {
		dur = 0
	}
	h.policy(d, c, src, srcPort, addr, msg.Ports, msg.Type.HasNAT(), dur, now)
	if d.reason == ReasonAccepted && msg.Type.HasNAT() {
		// Every port was checked against the forward list above: all of them are forwards, to
		// the destination the request names (natRequested found a forward to it).
		for i, g := range d.grants {
			if !g.IsForward() {
				d.reason, d.detail, d.grants = ReasonForwardNotAllowed, g.Port.String()+" is not forwarded", nil
				break
			}
			if localNAT {
				// This host (the unspecified address of g's family), the requested port.
				d.grants[i].To = netip.AddrPortFrom(g.To.Addr(), nat.Port())
			} else {
				d.grants[i].To = nat
			}
		}
	}
}

// natRequested checks an fwknop NAT request (-N ADDRESS:PORT, or --nat-local) against the
// client's forwards: each port the request names (-A) must be forwarded, and forwarded to the
// destination the request names (the address and port of -N; for --nat-local this host and the
// port of the NAT field). fwknopd forwards where the client asks; sesame only where the
// configuration says. It returns the requested destination (for local NAT only its port counts).
func natRequested(d *decision, c *config.SPAClient, msg *fwknop.Message, addr netip.Addr, localNAT bool) (netip.AddrPort, bool) {
	host, port, _ := strings.Cut(msg.NATAccess, ",")
	n, err := strconv.ParseUint(port, 10, 16)
	dst, aerr := netip.ParseAddr(host)
	switch {
	case err != nil || n == 0:
		d.reason, d.detail = ReasonMalformed, fmt.Sprintf("NAT field %q: bad port", msg.NATAccess)
		return netip.AddrPort{}, false
	case aerr != nil && !localNAT:
		d.reason, d.detail = ReasonForwardNotAllowed, fmt.Sprintf("NAT destination %q is not an IP address (names are not resolved)", host)
		return netip.AddrPort{}, false
	}
	want := netip.AddrPortFrom(dst.Unmap(), uint16(n))
	for _, p := range msg.Ports {
		// Several forwards may serve the port (tcp/* -> local:22 and tcp/* -> local:2222): the
		// one to the requested destination does.
		agrees := func(f config.Forward) bool {
			if !f.Matches(p, addr) {
				return false
			}
			if localNAT {
				return f.Local && f.To.Port() == want.Port()
			}
			return !f.Local && f.To == want
		}
		if slices.ContainsFunc(c.Forward, agrees) {
			continue
		}
		i := slices.IndexFunc(c.Forward, func(f config.Forward) bool { return f.Matches(p, addr) })
		switch {
		case i < 0:
			d.reason, d.detail = ReasonForwardNotAllowed, fmt.Sprintf("%s: the client has no forward of this port", p)
		case localNAT:
			d.reason, d.detail = ReasonForwardNotAllowed, fmt.Sprintf("local NAT %s -> port %d: the client's forward is %s", p, n, c.Forward[i])
		default:
			d.reason, d.detail = ReasonForwardNotAllowed, fmt.Sprintf("NAT %s -> %s: the client's forward is %s", p, want, c.Forward[i])
		}
		return netip.AddrPort{}, false
	}
	return want, true
}

// fresh records key in the replay store, live at now until expiry; false (with the reason set)
// when it was there already or the store failed.
func (h *Policy) fresh(ctx context.Context, d *decision, key []byte, now, expiry time.Time) bool {
	ok, err := h.store.InsertAt(ctx, key, now, expiry)
	switch {
	case err != nil:
		d.reason, d.detail = ReasonInternal, err.Error()
		return false
	case !ok:
		d.reason = ReasonReplay
		return false
	}
	d.inserted = true
	return true
}

// requested checks an address a packet asks to open for other than its source: a unicast
// address within the client's sources, like a source (fwknop's allow IP included).
func (h *Policy) requested(d *decision, c *config.SPAClient, addr netip.Addr) bool {
	if why := capture.SourceProblem(addr); why != "" {
		d.reason, d.detail = ReasonAddrNotAllowed, "requested address "+addr.String()+": "+why
		return false
	}
	if !sourceAllowed(addr, c.Sources) {
		d.reason, d.detail = ReasonAddrNotAllowed, "requested address "+addr.String()
		return false
	}
	return true
}

// policy applies a client's limits to an authenticated request and sets the grants.
func (h *Policy) policy(d *decision, c *config.SPAClient, src netip.Addr, srcPort uint16, addr netip.Addr, ports []netport.Port, nat bool, dur time.Duration, now time.Time) {
	switch {
	case !sourceAllowed(src, c.Sources):
		d.reason = ReasonSourceNotAllowed
		return
	case !config.PortsAllow(c.SourcePorts, srcPort):
		d.reason, d.detail = ReasonSourcePortNotAllowed, fmt.Sprintf("source port %d", srcPort)
		if srcPort == 0 {
			d.detail = "no source port (a packet in a ping)"
		}
		return
	case !c.AccessExpire.IsZero() && !now.Before(c.AccessExpire):
		d.reason, d.detail = ReasonAccessExpired, "since "+c.AccessExpire.Format(time.DateOnly)
		return
	case len(ports) == 0:
		d.reason, d.detail = ReasonMalformed, "no ports"
		return
	}
	// A port in the client's forward list is granted as that forward; the others must be open.
	// A NAT-only forward serves NAT requests only.
	fwd := make([]int, len(ports))
	for i, p := range ports {
		fwd[i] = slices.IndexFunc(c.Forward, func(f config.Forward) bool { return (nat || !f.NATOnly) && f.Matches(p, addr) })
		switch {
		case fwd[i] >= 0 && slices.Contains(c.Restrict, p):
			d.reason, d.detail = ReasonPortNotAllowed, p.String()
			return
		case fwd[i] >= 0:
		case slices.ContainsFunc(c.Forward, func(f config.Forward) bool { return (nat || !f.NATOnly) && f.Port == p }):
			d.reason, d.detail = ReasonForwardNotAllowed, fmt.Sprintf("%s: the client's forward of this port is not to an address of %s's family", p, addr)
			return
		case slices.Contains(c.Restrict, p) || (!c.AnyPort && !slices.Contains(c.Open, p)):
			d.reason, d.detail = ReasonPortNotAllowed, p.String()
			return
		}
	}
	if dur <= 0 {
		dur = c.DefaultOpenFor
	}
	dur = min(dur, c.MaxOpenFor)
	d.grants = make([]firewall.Grant, 0, len(ports))
	for i, p := range ports {
		g := firewall.Grant{Src: addr, Port: p, Timeout: dur}
		if fwd[i] >= 0 {
			g.To = c.Forward[fwd[i]].Target(addr)
		}
		if !slices.Contains(d.grants, g) {
			d.grants = append(d.grants, g)
		}
	}
	d.reason = ReasonAccepted
}

// sourceAllowed reports whether a is within one of ps. A loopback address must be named by a
// loopback prefix (127.0.0.0/8 or narrower, ::1/128): "any" (0.0.0.0/0, ::/0) does not admit it,
// as a loopback source on the wire is forged, and a grant for it opens nothing remote.
func sourceAllowed(a netip.Addr, ps []netip.Prefix) bool {
	for _, p := range ps {
		if p.Contains(a) && (!a.IsLoopback() || p.Addr().IsLoopback()) {
			return true
		}
	}
	return false
}

// record counts and logs a decision once: accepted packets always, refusals within the
// per-source rate limit (with the count held back since the last line).
func (h *Policy) record(r *rules, src netip.Addr, d *decision, grantErr error) {
	h.counts[d.format][d.reason].Add(1)
	if d.authed {
		if cc := r.clients[d.client]; cc != nil {
			if d.reason == ReasonAccepted {
				cc.accepted.Add(1)
			} else {
				cc.refused.Add(1)
			}
		}
	}
	accepted := d.reason == ReasonAccepted
	level := slog.LevelInfo
	if d.reason == ReasonInternal {
		level = slog.LevelError
	}
	var suppressed uint64
	if !accepted {
		// A refusal is attacker-controlled: decide whether to log before building anything.
		if !h.log.Enabled(context.Background(), level) {
			return
		}
		var ok bool
		if ok, suppressed = h.limiter.Allow(src); !ok {
			return
		}
	}
	args := make([]any, 0, 14)
	args = append(args, "src", src)
	if d.client != "" {
		args = append(args, "client", d.client)
	}
	if d.format != formatUnknown {
		args = append(args, "format", d.format.String())
	}
	args = append(args, "reason", d.reason.String())
	if accepted {
		ports := make([]string, len(d.grants))
		for i, g := range d.grants {
			ports[i] = g.Port.String()
			if g.IsForward() {
				ports[i] += " -> " + g.To.String()
			}
		}
		args = append(args, "addr", d.grants[0].Src, "open", strings.Join(ports, ","), "open_for", d.grants[0].Timeout)
		if grantErr != nil {
			h.log.Error("spa accepted but the grant failed", append(args, "err", grantErr)...)
			return
		}
		h.log.Info("spa accepted", args...)
		return
	}
	if d.detail == "" && d.err != nil {
		d.detail = d.err.Error()
	}
	if d.detail != "" {
		args = append(args, "detail", d.detail)
	}
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	h.log.Log(context.Background(), level, "spa refused", args...)
}
