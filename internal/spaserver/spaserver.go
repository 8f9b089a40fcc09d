// Package spaserver decides what single packet authorization requests, native or fwknop, are granted.
package spaserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sesame-knock/sesame/internal/config"
	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/fwknop"
	"github.com/sesame-knock/sesame/internal/lograte"
	"github.com/sesame-knock/sesame/internal/netport"
	"github.com/sesame-knock/sesame/internal/replay"
	"github.com/sesame-knock/sesame/internal/spa"
)

// Reasons, as logged in the "reason" attribute of every decision.
const (
	ReasonAccepted         = "accepted"
	ReasonReplay           = "replay"
	ReasonStale            = "stale"
	ReasonFuture           = "future"
	ReasonBadMAC           = "bad MAC"
	ReasonUnknownClient    = "unknown client"
	ReasonPortNotAllowed   = "port not allowed"
	ReasonSourceNotAllowed = "source not allowed"
	ReasonAddrNotAllowed   = "address not allowed"
	ReasonSourceAddrNeeded = "source address required" // an explicit address: require_address, REQUIRE_SOURCE_ADDRESS
	ReasonUserNotAllowed   = "username not allowed"
	ReasonAccessExpired    = "access expired"
	ReasonNATRefused       = "NAT not supported"
	ReasonCommandRefused   = "command not supported"
	ReasonMalformed        = "malformed"
	ReasonTooShort         = "too short"
	ReasonTooLong          = "too long"
	ReasonInternal         = "internal error"
)

// Replay key prefixes keep the two formats' keys apart in one store.
const (
	prefixNative = 'n'
	prefixFwknop = 'f'
)

// Handler checks SPA packets against a configuration. It is safe for concurrent use, and its
// configuration may be replaced while it runs (Reload).
type Handler struct {
	store   replay.Store
	persist replay.Deferred // store, when it persists only once told (nil otherwise)
	log     *slog.Logger
	now     func() time.Time
	limiter *lograte.Limiter
	rules   atomic.Pointer[rules]

	mu     sync.Mutex
	counts map[string]uint64
}

// rules is one configuration's clients, keyed for lookup; a reload swaps it whole.
type rules struct {
	cfg    *config.SPA
	keys   spa.Clients
	native map[string]*config.SPAClient
	fwknop []*config.SPAClient
}

// New builds a Handler for cfg. store records accepted packets' replay keys; log receives one
// line per decision (refusals rate-limited per source); now is the clock (time.Now when nil).
func New(cfg *config.SPA, store replay.Store, log *slog.Logger, now func() time.Time) (*Handler, error) {
	const op = "spaserver: new"
	if cfg == nil || store == nil {
		return nil, fmt.Errorf("%s: configuration and replay store are required", op)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	r, err := newRules(cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	h := &Handler{
		store: store, log: log, now: now,
		limiter: lograte.New(10, time.Second, 4096, now),
		counts:  map[string]uint64{},
	}
	h.persist, _ = store.(replay.Deferred)
	h.rules.Store(r)
	return h, nil
}

// ShareLogBudget puts the global log budget b in front of the per-source limit on refusal lines
// (the server shares its own, so that knock and SPA refusals draw on one budget). Accepted
// packets are always logged: each is authenticated and accepted once.
func (h *Handler) ShareLogBudget(b *lograte.Budget) { h.limiter.SetBudget(b) }

// Reload replaces the clients, their keys and limits, max_age and the server key with cfg's,
// atomically: a packet is checked against the old configuration or the new one, never a mix.
// Replay keys, counts and log budgets carry over. On error the running configuration stays.
// The listener (port, sniff) is the caller's business: Handler never binds.
func (h *Handler) Reload(cfg *config.SPA) error {
	if cfg == nil {
		return errors.New("spaserver: reload: no [spa] configuration")
	}
	r, err := newRules(cfg)
	if err != nil {
		return fmt.Errorf("spaserver: reload: %w", err)
	}
	h.rules.Store(r)
	return nil
}

func newRules(cfg *config.SPA) (*rules, error) {
	r := &rules{cfg: cfg, native: map[string]*config.SPAClient{}}
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

// Counts returns how many packets ended with each reason so far.
func (h *Handler) Counts() map[string]uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]uint64, len(h.counts))
	for k, v := range h.counts {
		out[k] = v
	}
	return out
}

// decision is the outcome for one packet, logged exactly once.
type decision struct {
	reason string
	format string
	client string
	detail string
	err    error // its text is the detail when detail is empty; formatted only if logged
	grants []firewall.Grant
}

// GrantFunc applies the grants an accepted packet earned (the firewall's Grant).
type GrantFunc func(ctx context.Context, grants ...firewall.Grant) error

// Handle checks one SPA payload from src, applies the grants it earns with grant (unless grant is
// nil), and only then logs the decision and lets a Deferred replay store persist, so neither
// costs the client time. It returns the grants (nil when refused) and grant's error. Cheap
// checks run first; the replay store is written only for authenticated, fresh packets. payload
// may alias a read buffer: nothing of it is kept.
func (h *Handler) Handle(ctx context.Context, src netip.Addr, payload []byte, grant GrantFunc) ([]firewall.Grant, error) {
	src = src.Unmap()
	r := h.rules.Load()
	var d decision
	if len(payload) >= len(spa.Magic) && string(payload[:len(spa.Magic)]) == spa.Magic {
		d = h.native1(ctx, r, src, payload)
	} else {
		d = h.fwknop1(ctx, r, src, payload)
	}
	var err error
	if len(d.grants) > 0 && grant != nil {
		err = grant(ctx, d.grants...)
	}
	h.record(src, &d, err)
	if h.persist != nil && d.reason == ReasonAccepted {
		h.persist.PersistSoon()
	}
	return d.grants, err
}

func (h *Handler) native1(ctx context.Context, r *rules, src netip.Addr, pkt []byte) decision {
	d := decision{format: config.SPAFormatNative}
	if len(pkt) >= spa.HeaderLen {
		if c := r.keys.Lookup(spa.KeyHint(pkt[5:spa.HeaderLen])); c != nil {
			d.client = c.ID
		}
	}
	now := h.now()
	req, err := spa.Open(pkt, r.keys, now, r.cfg.MaxAge)
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
	d.client = req.Client
	c := r.native[req.Client]
	if c == nil { // cannot happen: the keyring holds only configured clients
		d.reason = ReasonUnknownClient
		return d
	}
	if !h.fresh(ctx, &d, append([]byte{prefixNative}, req.ReplayKey()...), req.ReplayExpiry(r.cfg.MaxAge)) {
		return d
	}
	addr := src
	if req.FromSource() && c.RequireSourceAddress {
		d.reason, d.detail = ReasonSourceAddrNeeded, "the packet asks for its source address and require_address is set"
		return d
	}
	if !req.FromSource() {
		addr = req.Addr.Unmap()
		if !inPrefixes(addr, c.Sources) {
			d.reason, d.detail = ReasonAddrNotAllowed, "requested address "+addr.String()
			return d
		}
	}
	h.policy(&d, c, src, addr, req.Ports, req.Duration, now)
	return d
}

func (h *Handler) fwknop1(ctx context.Context, r *rules, src netip.Addr, wire []byte) decision {
	d := decision{format: config.SPAFormatFwknop}
	switch {
	case len(r.fwknop) == 0:
		d.format, d.reason, d.detail = "", ReasonMalformed, "not a sesame packet, and no fwknop clients are configured"
		return d
	case len(wire) < fwknop.MinPacketLen:
		d.reason, d.detail = ReasonTooShort, fmt.Sprintf("%d bytes", len(wire))
		return d
	case len(wire) > fwknop.MaxPacketLen:
		d.reason, d.detail = ReasonTooLong, fmt.Sprintf("%d bytes", len(wire))
		return d
	}
	if bytes.HasPrefix(wire, []byte("U2FsdGVkX1")) {
		d.reason, d.detail = ReasonMalformed, "starts with the Salted__ prefix"
		return d
	}
	for _, b := range wire {
		if !isB64(b) {
			d.reason, d.detail = ReasonMalformed, "not base64 text"
			return d
		}
	}
	var (
		msg     *fwknop.Message
		c       *config.SPAClient
		matched bool
		// authErr is a failure after a stanza's HMAC matched: the packet is that client's.
		authErr    error
		authClient string
	)
	for _, cand := range r.fwknop {
		if !inPrefixes(src, cand.Sources) {
			continue
		}
		matched = true
		m, err := fwknop.Decode(wire, cand.Fwknop)
		if err == nil {
			msg, c = m, cand
			break
		}
		if cand.Fwknop.HMACKey != nil && !errors.Is(err, fwknop.ErrBadHMAC) && authErr == nil {
			authErr, authClient = err, cand.Name
		}
	}
	if !matched {
		d.reason = ReasonSourceNotAllowed
		return d
	}
	if msg == nil {
		// Without a matching HMAC a wrong key and a damaged packet look alike: "bad MAC".
		d.reason, d.detail = ReasonBadMAC, "no stanza's keys authenticate the packet"
		if authErr != nil {
			d.client, d.detail, d.err = authClient, "", authErr
			if errors.Is(authErr, fwknop.ErrMalformed) {
				d.reason = ReasonMalformed
			}
		}
		return d
	}
	d.client = c.Name
	now := h.now()
	switch age := now.Sub(msg.Timestamp); {
	case age > r.cfg.MaxAge:
		d.reason, d.detail = ReasonStale, fmt.Sprintf("%v old", age.Round(time.Second))
		return d
	case age < -r.cfg.MaxAge:
		d.reason, d.detail = ReasonFuture, fmt.Sprintf("%v ahead", (-age).Round(time.Second))
		return d
	}
	// fwknop's digest: SHA-256 of the wire text. Kept for twice max_age, as a timestamp up to
	// max_age ahead stays fresh until max_age after it.
	key := append([]byte{prefixFwknop}, fwknop.ReplayKey(wire)...)
	if !h.fresh(ctx, &d, key, now.Add(2*r.cfg.MaxAge)) {
		return d
	}
	switch {
	case msg.Type == fwknop.TypeCommand:
		d.reason, d.detail = ReasonCommandRefused, "command messages are not enabled"
		return d
	case msg.Type.HasNAT():
		d.reason, d.detail = ReasonNATRefused, "NAT access requests are not enabled"
		return d
	case c.RequireUsername != "" && msg.User != c.RequireUsername:
		d.reason, d.detail = ReasonUserNotAllowed, fmt.Sprintf("username %q", msg.User)
		return d
	}
	addr := src
	if !msg.FromSource() {
		addr = msg.AllowIP.Unmap()
	} else if c.RequireSourceAddress {
		d.reason, d.detail = ReasonSourceAddrNeeded, "allow IP 0.0.0.0 with REQUIRE_SOURCE_ADDRESS"
		return d
	}
	dur := msg.ClientTimeout
	if !msg.Type.HasTimeout() {
		dur = 0
	}
	h.policy(&d, c, src, addr, msg.Ports, dur, now)
	return d
}

// fresh records key in the replay store; false (with the reason set) when it was there already
// or the store failed.
func (h *Handler) fresh(ctx context.Context, d *decision, key []byte, expiry time.Time) bool {
	ok, err := h.store.InsertIfAbsent(ctx, key, expiry)
	switch {
	case err != nil:
		d.reason, d.detail = ReasonInternal, err.Error()
		return false
	case !ok:
		d.reason = ReasonReplay
		return false
	}
	return true
}

// policy applies a client's limits to an authenticated request and sets the grants.
func (h *Handler) policy(d *decision, c *config.SPAClient, src, addr netip.Addr, ports []netport.Port, dur time.Duration, now time.Time) {
	switch {
	case !inPrefixes(src, c.Sources):
		d.reason = ReasonSourceNotAllowed
		return
	case !c.AccessExpire.IsZero() && !now.Before(c.AccessExpire):
		d.reason, d.detail = ReasonAccessExpired, "since "+c.AccessExpire.Format(time.DateOnly)
		return
	case len(ports) == 0:
		d.reason, d.detail = ReasonMalformed, "no ports"
		return
	}
	for _, p := range ports {
		if slices.Contains(c.Restrict, p) || (!c.AnyPort && !slices.Contains(c.Open, p)) {
			d.reason, d.detail = ReasonPortNotAllowed, p.String()
			return
		}
	}
	if dur <= 0 {
		dur = c.DefaultOpenFor
	}
	dur = min(dur, c.MaxOpenFor)
	d.grants = make([]firewall.Grant, 0, len(ports))
	for _, p := range ports {
		g := firewall.Grant{Src: addr, Port: p, Timeout: dur}
		if !slices.Contains(d.grants, g) {
			d.grants = append(d.grants, g)
		}
	}
	d.reason = ReasonAccepted
}

func isB64(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/' || c == '='
}

func inPrefixes(a netip.Addr, ps []netip.Prefix) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// record counts and logs a decision once: accepted packets always, refusals within the
// per-source rate limit (with the count held back since the last line).
func (h *Handler) record(src netip.Addr, d *decision, grantErr error) {
	h.mu.Lock()
	h.counts[d.reason]++
	h.mu.Unlock()
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
	if d.format != "" {
		args = append(args, "format", d.format)
	}
	args = append(args, "reason", d.reason)
	if accepted {
		ports := make([]string, len(d.grants))
		for i, g := range d.grants {
			ports[i] = g.Port.String()
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
