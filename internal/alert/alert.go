// Package alert reports decoy touches and scans: one log line and one HMAC-signed webhook POST per source per interval, sent asynchronously from a bounded queue with retries.
package alert

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// SignatureHeader carries "sha256=" and the hex HMAC-SHA256 of the request body under the secret.
const SignatureHeader = "X-Sesame-Signature"

// Defaults for zero Options fields.
const (
	DefaultInterval = time.Minute
	DefaultQueue    = 256
	DefaultRetries  = 3
	DefaultBackoff  = time.Second
	DefaultTimeout  = 5 * time.Second
	maxSources      = 4096 // sources remembered for the per-interval limit
	maxDataInAlerts = 256  // bytes of the visitor's data carried in an alert
)

// Event is what an alert says. It is the JSON body of the webhook.
type Event struct {
	Time   time.Time  `json:"time"`
	Kind   string     `json:"kind"` // "decoy_connect", "decoy_touch" or "scan"
	Src    netip.Addr `json:"src"`
	Port   string     `json:"port,omitempty"`  // "tcp/2323"
	Ports  int        `json:"ports,omitempty"` // distinct ports seen, for scans
	Banned bool       `json:"banned"`
	BanFor int64      `json:"ban_for_ms,omitempty"`
	Data   []byte     `json:"data,omitempty"` // the first bytes the visitor sent (base64)
	Reason string     `json:"reason,omitempty"`
}

// Options configure an Alerter. URL empty means log lines only.
type Options struct {
	URL      string
	Secret   []byte // HMAC key; never logged
	Interval time.Duration
	Queue    int
	Retries  int
	Backoff  time.Duration
	Client   *http.Client
	Log      *slog.Logger
	Now      func() time.Time
	// Sleep waits between retries; tests inject it. Nil is a context-aware time sleep.
	Sleep func(ctx context.Context, d time.Duration) error
}

// Alerter sends alerts. Alert never blocks; Run sends the queue. It is safe for concurrent use.
type Alerter struct {
	o     Options
	queue chan []byte

	mu   sync.Mutex
	last map[netip.Addr]time.Time
	// target is where webhooks go and how often per source; Configure changes it.
	target target

	dropped    atomic.Uint64 // queue overflow
	suppressed atomic.Uint64 // within the interval of an earlier alert for the same source
	sent       atomic.Uint64
	failed     atomic.Uint64
}

// New returns an Alerter; call Run to deliver webhooks.
func New(o Options) *Alerter {
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.Queue <= 0 {
		o.Queue = DefaultQueue
	}
	if o.Retries < 0 {
		o.Retries = 0
	} else if o.Retries == 0 {
		o.Retries = DefaultRetries
	}
	if o.Backoff <= 0 {
		o.Backoff = DefaultBackoff
	}
	if o.Client == nil {
		o.Client = &http.Client{Timeout: DefaultTimeout}
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Sleep == nil {
		o.Sleep = sleep
	}
	return &Alerter{o: o, queue: make(chan []byte, o.Queue), last: map[netip.Addr]time.Time{},
		target: target{url: o.URL, secret: o.Secret, interval: o.Interval}}
}

type target struct {
	url      string
	secret   []byte
	interval time.Duration
}

// Configure changes the webhook URL, its secret and the per-source interval (0: the default)
// of a running Alerter (a reload). Webhooks still queued go to the new URL, signed with the new
// secret; the counters and the per-source memory are kept.
func (a *Alerter) Configure(url string, secret []byte, interval time.Duration) {
	if interval <= 0 {
		interval = DefaultInterval
	}
	a.mu.Lock()
	a.target = target{url: url, secret: secret, interval: interval}
	a.mu.Unlock()
}

func (a *Alerter) current() target {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.target
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Sign returns the signature header value of body under secret.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Verify reports, in constant time, whether sig is the signature of body under secret.
func Verify(secret, body []byte, sig string) bool {
	return hmac.Equal([]byte(Sign(secret, body)), []byte(sig))
}

// Alert logs ev and queues its webhook, unless the same source had an alert within the
// interval. It never blocks: when the queue is full the webhook is dropped, counted and logged.
// It reports whether the alert was taken (logged).
func (a *Alerter) Alert(ev Event) bool {
	now := a.o.Now()
	if ev.Time.IsZero() {
		ev.Time = now
	}
	if len(ev.Data) > maxDataInAlerts {
		ev.Data = ev.Data[:maxDataInAlerts]
	}
	tg, ok := a.take(ev.Src, now)
	if !ok {
		a.suppressed.Add(1)
		return false
	}
	a.o.Log.Warn("alert", "src", ev.Src.String(), "kind", ev.Kind, "port", ev.Port, "ports", ev.Ports,
		"banned", ev.Banned, "ban_for", time.Duration(ev.BanFor)*time.Millisecond, "data", fmt.Sprintf("%q", ev.Data))
	if tg.url == "" {
		return true
	}
	body, err := json.Marshal(ev)
	if err != nil {
		a.o.Log.Error("alert: encode", "src", ev.Src.String(), "err", err)
		return true
	}
	select {
	case a.queue <- body:
	default:
		n := a.dropped.Add(1)
		a.o.Log.Warn("alert: webhook queue full, alert dropped", "src", ev.Src.String(), "dropped_total", n)
	}
	return true
}

// take records an alert for src at now if none was taken within the interval, and returns
// the target it goes to.
func (a *Alerter) take(src netip.Addr, now time.Time) (target, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	tg := a.target
	if t, ok := a.last[src]; ok && now.Sub(t) < tg.interval {
		return tg, false
	}
	if len(a.last) >= maxSources {
		for k, t := range a.last {
			if now.Sub(t) >= tg.interval {
				delete(a.last, k)
			}
		}
		if len(a.last) >= maxSources {
			return tg, false // every remembered source is recent: a flood; hold back new ones
		}
	}
	a.last[src] = now
	return tg, true
}

// Run delivers queued webhooks until ctx ends.
func (a *Alerter) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case body := <-a.queue:
			a.deliver(ctx, body)
		}
	}
}

func (a *Alerter) deliver(ctx context.Context, body []byte) {
	backoff := a.o.Backoff
	var err error
	for try := 0; try <= a.o.Retries; try++ {
		if try > 0 {
			if a.o.Sleep(ctx, backoff) != nil {
				return
			}
			backoff *= 2
		}
		if err = a.post(ctx, body); err == nil {
			a.sent.Add(1)
			return
		}
	}
	a.failed.Add(1)
	a.o.Log.Warn("alert: webhook failed", "tries", a.o.Retries+1, "err", err)
}

func (a *Alerter) post(ctx context.Context, body []byte) error {
	tg := a.current()
	if tg.url == "" {
		return nil // the webhook was removed by a reload: the log line was written
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, tg.url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("webhook: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(SignatureHeader, Sign(tg.secret, body))
	resp, err := a.o.Client.Do(req)
	if err != nil {
		return fmt.Errorf("webhook: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook: status %s", resp.Status)
	}
	return nil
}

// Stats are the Alerter's counters.
type Stats struct {
	Sent, Failed, Dropped, Suppressed uint64
}

// Stats returns the counters.
func (a *Alerter) Stats() Stats {
	return Stats{Sent: a.sent.Load(), Failed: a.failed.Load(), Dropped: a.dropped.Load(), Suppressed: a.suppressed.Load()}
}
