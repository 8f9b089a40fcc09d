// Package metrics exports a running server's counters (server.Stats) as Prometheus metrics.
package metrics

import (
	"errors"
	"net/netip"
	"runtime"
	"sort"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sesame-knock/sesame/internal/server"
)

// Namespace prefixes every metric sesame exports.
const Namespace = "sesame"

// Build is the static build information behind sesame_build_info.
type Build struct {
	Version   string // sesame's version
	GoVersion string // the Go toolchain; runtime.Version() when empty
	Firewall  string // the firewall backend: nftables, iptables or none
}

// Options configure a Collector.
type Options struct {
	// Snapshot returns the server's counters; it is called once per scrape.
	Snapshot func() server.Stats
	Build    Build
	Started  time.Time // when the server started, for sesame_start_time_seconds
}

// Collector is a prometheus.Collector that, on each scrape, takes one snapshot and emits it as
// const metrics. It keeps no state between scrapes except the count of label values it refused.
//
// Label values come only from configuration names (doors, SPA clients, "operator") and from the
// server's fixed sets of reasons, formats and results. As a second line of defence, a series
// whose label value fails LabelValueOK (empty, not UTF-8, too long, or containing anything that
// parses as an IP address) is dropped, never exported, and counted in
// sesame_metrics_label_refused_total: no client address ever reaches a label.
type Collector struct {
	snapshot func() server.Stats
	build    Build
	started  time.Time
	refused  atomic.Uint64

	buildInfo, startTime, labelRefused                         *prometheus.Desc
	captureReceived, captureDrops, captureDecode, captureTrunc *prometheus.Desc
	knockPackets, knockOpened, knockRefused, knockGuarded      *prometheus.Desc
	knockSources, knockEvicted                                 *prometheus.Desc
	spaDecisions, replayEntries                                *prometheus.Desc
	cmdQueued, cmdRunning, cmdPendingStops                     *prometheus.Desc
	cmdRun, cmdFailed, cmdOverflowed                           *prometheus.Desc
	grantsAdded, grantsActive, grantsExpired, grantErrors      *prometheus.Desc
	logSuppressed, latency                                     *prometheus.Desc
	bansAdded, bansLifted, bansActive, bansIgnored             *prometheus.Desc
	alertsSent, alertsFailed, alertsDropped, alertsSuppressed  *prometheus.Desc
	decoyTouches                                               *prometheus.Desc
	fleetUp, fleetClaims, fleetNotKept, fleetReconciled        *prometheus.Desc
	fleetConflicts, fleetEvents                                *prometheus.Desc
}

// fleetClaimResults maps cluster.Status counter names to sesame_fleet_replay_claims_total's
// result label, fleetEventResults to sesame_fleet_events_total's.
var (
	fleetClaimResults = [][2]string{{"claimed", "claimed"}, {"replays", "replay"}, {"refused_redis_down", "refused_redis_down"},
		{"local_claims", "local"}, {"refused_claims_full", "refused_full"}}
	fleetEventResults = [][2]string{{"published", "published"}, {"dropped", "dropped"}, {"applied", "applied"},
		{"skipped", "skipped"}, {"apply_errors", "apply_error"}}
)

// MaxLabelLen is the longest label value the collector exports.
const MaxLabelLen = 128

// ErrNoSnapshot is returned by NewCollector without a snapshot function.
var ErrNoSnapshot = errors.New("metrics: no snapshot function")

// NewCollector returns a Collector over opts.Snapshot.
func NewCollector(opts Options) (*Collector, error) {
	if opts.Snapshot == nil {
		return nil, ErrNoSnapshot
	}
	if opts.Build.GoVersion == "" {
		opts.Build.GoVersion = runtime.Version()
	}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(Namespace+"_"+name, help, labels, nil)
	}
	return &Collector{
		snapshot: opts.Snapshot,
		build:    opts.Build,
		started:  opts.Started,

		buildInfo:    d("build_info", "Always 1; the labels say which sesame, Go toolchain and firewall backend run.", "version", "goversion", "firewall"),
		startTime:    d("start_time_seconds", "When the server started, in seconds since the Unix epoch."),
		labelRefused: d("metrics_label_refused_total", "Series the exporter dropped because a label value looked like an address or was malformed."),

		captureReceived: d("capture_packets_total", "Packets the capture socket delivered to user space."),
		captureDrops:    d("capture_kernel_drops_total", "Packets the kernel dropped before the capture socket read them."),
		captureDecode:   d("capture_decode_errors_total", "Captured packets that could not be decoded."),
		captureTrunc:    d("capture_truncated_total", "Captured packets truncated by the capture length."),

		knockPackets: d("knock_packets_total", "Packets the knock state machine saw."),
		knockOpened:  d("knock_opened_total", "Knock sequences completed."),
		knockRefused: d("knock_refused_total", "Knock packets refused, by reason.", "reason"),
		knockGuarded: d("knock_guarded_total", "Knock packets ignored by the sweep guard."),
		knockSources: d("knock_sources_in_progress", "Sources with a knock sequence in progress now."),
		knockEvicted: d("knock_sources_evicted_total", "Sources in progress evicted because the table was full."),

		spaDecisions:  d("spa_decisions_total", "SPA packets decided, by wire format and result (accepted or the refusal reason).", "format", "result"),
		replayEntries: d("replay_cache_entries", "Keys the replay cache holds now."),

		cmdQueued:       d("commands_queued", "Commands waiting to run now."),
		cmdRunning:      d("commands_running", "Commands running now."),
		cmdPendingStops: d("commands_pending_stops", "Stop commands scheduled and not yet run."),
		cmdRun:          d("commands_run_total", "Commands run."),
		cmdFailed:       d("commands_failed_total", "Commands that failed or timed out."),
		cmdOverflowed:   d("commands_overflowed_total", "Commands refused because the queue was full."),

		grantsAdded:   d("grants_added_total", "Grants added to the firewall, by door or SPA client name.", "name"),
		grantsActive:  d("grants_active", "Grants live in the kernel now, by door or SPA client name.", "name"),
		grantsExpired: d("grants_expired_total", "Grants that expired, by door or SPA client name.", "name"),
		grantErrors:   d("grant_errors_total", "Grants the firewall refused, by door or SPA client name.", "name"),

		logSuppressed: d("log_lines_suppressed_total", "Log lines held back by the global log budgets."),
		latency:       d("packet_to_grant_seconds", "Time from the packet that earned a grant being seen to the grant being in the kernel."),

		bansAdded:        d("bans_added_total", "Sources banned, by reason (decoy, scan).", "reason"),
		bansLifted:       d("bans_lifted_total", "Bans lifted, by reason (spa, revoke, expired).", "reason"),
		bansActive:       d("bans_active", "Bans the server knows to be live in the kernel now."),
		bansIgnored:      d("bans_ignored_packets_total", "Captured packets from banned sources ignored."),
		alertsSent:       d("alerts_sent_total", "Alert webhooks delivered."),
		alertsFailed:     d("alerts_failed_total", "Alert webhooks that failed after every retry."),
		alertsDropped:    d("alerts_dropped_total", "Alert webhooks dropped because the queue was full."),
		alertsSuppressed: d("alerts_suppressed_total", "Alerts held back because the same source had one within the interval."),
		decoyTouches:     d("decoy_touches_total", "Decoy port touches, by kind (handshake, syn, udp).", "kind"),

		fleetUp:         d("fleet_redis_up", "1 when this fleet member reaches Redis, 0 while it counts Redis as down."),
		fleetClaims:     d("fleet_replay_claims_total", "SPA replay keys this member took to the fleet, by result (claimed, replay, refused_redis_down, local, refused_full).", "result"),
		fleetNotKept:    d("fleet_claims_not_kept_total", "Claims not remembered for reconciliation because the table was full of live claims."),
		fleetReconciled: d("fleet_reconciled_total", "Claims pushed back into Redis after an outage or a Redis restart."),
		fleetConflicts:  d("fleet_conflicts_total", "Packets accepted here while Redis was down that another member had also accepted."),
		fleetEvents:     d("fleet_events_total", "Fan-out events (grants, bans, revocations), by result (published, dropped, applied, skipped, apply_error).", "result"),
	}, nil
}

// Describe sends every metric's description.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.buildInfo, c.startTime, c.labelRefused,
		c.captureReceived, c.captureDrops, c.captureDecode, c.captureTrunc,
		c.knockPackets, c.knockOpened, c.knockRefused, c.knockGuarded, c.knockSources, c.knockEvicted,
		c.spaDecisions, c.replayEntries,
		c.cmdQueued, c.cmdRunning, c.cmdPendingStops, c.cmdRun, c.cmdFailed, c.cmdOverflowed,
		c.grantsAdded, c.grantsActive, c.grantsExpired, c.grantErrors,
		c.logSuppressed, c.latency,
		c.bansAdded, c.bansLifted, c.bansActive, c.bansIgnored,
		c.alertsSent, c.alertsFailed, c.alertsDropped, c.alertsSuppressed, c.decoyTouches,
		c.fleetUp, c.fleetClaims, c.fleetNotKept, c.fleetReconciled, c.fleetConflicts, c.fleetEvents,
	} {
		ch <- d
	}
}

// Collect takes one snapshot and sends it as const metrics.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	s := c.snapshot()
	e := emitter{c: c, ch: ch}

	// Build info is static, from the binary and the backend's name, so it is not filtered; a
	// value that is not valid UTF-8 drops the series rather than the scrape.
	if m, err := prometheus.NewConstMetric(c.buildInfo, prometheus.GaugeValue, 1,
		c.build.Version, c.build.GoVersion, c.build.Firewall); err == nil {
		ch <- m
	}
	if !c.started.IsZero() {
		ch <- prometheus.MustNewConstMetric(c.startTime, prometheus.GaugeValue,
			float64(c.started.UnixNano())/1e9)
	}

	e.counter(c.captureReceived, s.Capture.Received)
	e.counter(c.captureDrops, s.Capture.KernelDrops)
	e.counter(c.captureDecode, s.Capture.DecodeErrors)
	e.counter(c.captureTrunc, s.Capture.Truncated)

	e.counter(c.knockPackets, s.Knock.Packets)
	e.counter(c.knockOpened, s.Knock.Opened)
	for _, reason := range sortedKeys(s.Knock.Refused) {
		e.counter(c.knockRefused, s.Knock.Refused[reason], reason)
	}
	e.counter(c.knockGuarded, s.Knock.Guarded)
	e.gauge(c.knockSources, s.Knock.Sources)
	e.counter(c.knockEvicted, s.Knock.Evicted)

	for _, format := range sortedKeys(s.SPA.Decisions) {
		results := s.SPA.Decisions[format]
		for _, result := range sortedKeys(results) {
			e.counter(c.spaDecisions, results[result], format, result)
		}
	}
	e.gauge(c.replayEntries, s.Replay.Entries)

	e.gauge(c.cmdQueued, s.Commands.Queued)
	e.gauge(c.cmdRunning, s.Commands.Running)
	e.gauge(c.cmdPendingStops, s.Commands.PendingStops)
	e.counter(c.cmdRun, s.Commands.Run)
	e.counter(c.cmdFailed, s.Commands.Failed)
	e.counter(c.cmdOverflowed, s.Commands.Overflowed)

	for _, name := range sortedKeys(s.Grants) {
		g := s.Grants[name]
		e.counter(c.grantsAdded, g.Added, name)
		e.gauge(c.grantsActive, g.Active, name)
		e.counter(c.grantsExpired, g.Expired, name)
		e.counter(c.grantErrors, g.Errors, name)
	}

	e.counter(c.logSuppressed, s.Logs.Suppressed)
	e.histogram(c.latency, s.Latency)

	for _, reason := range sortedKeys(s.Bans.Added) {
		e.counter(c.bansAdded, s.Bans.Added[reason], reason)
	}
	for _, reason := range sortedKeys(s.Bans.Lifted) {
		e.counter(c.bansLifted, s.Bans.Lifted[reason], reason)
	}
	e.gauge(c.bansActive, s.Bans.Active)
	e.counter(c.bansIgnored, s.Bans.Ignored)
	e.counter(c.alertsSent, s.Bans.Alerts.Sent)
	e.counter(c.alertsFailed, s.Bans.Alerts.Failed)
	e.counter(c.alertsDropped, s.Bans.Alerts.Dropped)
	e.counter(c.alertsSuppressed, s.Bans.Alerts.Suppressed)
	e.counter(c.decoyTouches, s.Bans.Touches.Handshake, "handshake")
	e.counter(c.decoyTouches, s.Bans.Touches.SYN, "syn")
	e.counter(c.decoyTouches, s.Bans.Touches.UDP, "udp")

	if f := s.Fleet; f != nil {
		up := 0
		if f.Up {
			up = 1
		}
		e.gauge(c.fleetUp, up)
		for _, r := range fleetClaimResults {
			e.counter(c.fleetClaims, f.Counts[r[0]], r[1])
		}
		e.counter(c.fleetNotKept, f.Counts["claims_not_kept"])
		e.counter(c.fleetReconciled, f.Counts["reconciled"])
		e.counter(c.fleetConflicts, f.Counts["conflicts"])
		for _, r := range fleetEventResults {
			e.counter(c.fleetEvents, f.Counts[r[0]], r[1])
		}
	}

	// Last, so that this scrape's refusals are already counted.
	ch <- prometheus.MustNewConstMetric(c.labelRefused, prometheus.CounterValue, float64(c.refused.Load()))
}

// emitter sends one scrape's metrics, dropping any series with a refused label value.
type emitter struct {
	c  *Collector
	ch chan<- prometheus.Metric
}

func (e emitter) counter(d *prometheus.Desc, v uint64, labels ...string) {
	e.send(d, prometheus.CounterValue, float64(v), labels)
}

func (e emitter) gauge(d *prometheus.Desc, v int, labels ...string) {
	e.send(d, prometheus.GaugeValue, float64(v), labels)
}

func (e emitter) send(d *prometheus.Desc, t prometheus.ValueType, v float64, labels []string) {
	for _, l := range labels {
		if !LabelValueOK(l) {
			e.c.refused.Add(1)
			return
		}
	}
	m, err := prometheus.NewConstMetric(d, t, v, labels...)
	if err != nil {
		e.c.refused.Add(1)
		return
	}
	e.ch <- m
}

// histogram sends h, or nothing when its bounds and counts disagree or are not ascending.
func (e emitter) histogram(d *prometheus.Desc, h server.Histogram) {
	if len(h.Bounds) != len(h.Counts) {
		return
	}
	buckets := make(map[float64]uint64, len(h.Bounds))
	for i, b := range h.Bounds {
		if i > 0 && (b <= h.Bounds[i-1] || h.Counts[i] < h.Counts[i-1]) {
			return
		}
		buckets[b] = h.Counts[i]
	}
	m, err := prometheus.NewConstHistogram(d, h.Count, h.Sum, buckets)
	if err != nil {
		return
	}
	e.ch <- m
}

// LabelValueOK reports whether v may be exported as a label value: non-empty, valid UTF-8, at
// most MaxLabelLen bytes, and with no run of hex digits, dots and colons in it that parses as an
// IP address, whole or split at colons. So "10.0.0.1", "198.18.0.7:22", "[2001:db8::1]:22",
// "198.18.0.0/16" and "ssh-10.0.0.1" are all refused, while "ssh", "bad_mac" and "v1.2" pass.
func LabelValueOK(v string) bool {
	if v == "" || len(v) > MaxLabelLen || !utf8.ValidString(v) {
		return false
	}
	isAddrRune := func(r rune) bool {
		return r == '.' || r == ':' || ('0' <= r && r <= '9') || ('a' <= r && r <= 'f') || ('A' <= r && r <= 'F')
	}
	for _, tok := range strings.FieldsFunc(v, func(r rune) bool { return !isAddrRune(r) }) {
		if _, err := netip.ParseAddr(tok); err == nil {
			return false
		}
		for _, part := range strings.Split(tok, ":") { // an IPv4 address with a port or in a list
			if _, err := netip.ParseAddr(part); err == nil {
				return false
			}
		}
	}
	return true
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
