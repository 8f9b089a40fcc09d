package metrics

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sesame-knock/sesame/internal/alert"
	"github.com/sesame-knock/sesame/internal/cluster"
	"github.com/sesame-knock/sesame/internal/decoy"
	"github.com/sesame-knock/sesame/internal/server"
)

// sample is a synthetic snapshot with every field set to a distinct value.
func sample() server.Stats {
	return server.Stats{
		Capture: server.CaptureStats{Received: 1000, KernelDrops: 7, DecodeErrors: 3, Truncated: 2},
		Knock: server.KnockStats{
			Packets: 900, Opened: 40, Guarded: 11, Sources: 5, Evicted: 13,
			Refused: map[string]uint64{"wrong knock": 21, "sequence timeout": 8},
		},
		SPA: server.SPAStats{Decisions: map[string]map[string]uint64{
			"native": {"accepted": 30, "bad_mac": 17, "replay": 2},
			"fwknop": {"accepted": 4, "stale": 1},
		}},
		Replay:   server.ReplayStats{Entries: 34},
		Commands: server.CommandStats{Queued: 1, Running: 2, PendingStops: 3, Run: 50, Failed: 4, Overflowed: 6},
		Grants: map[string]server.GrantCounts{
			"ssh":      {Added: 40, Active: 2, Expired: 38, Errors: 0},
			"alice":    {Added: 34, Active: 1, Expired: 33, Errors: 1},
			"operator": {Added: 1, Active: 0, Expired: 1},
		},
		Logs: server.LogStats{Suppressed: 99},
		Latency: server.Histogram{
			Bounds: []float64{0.001, 0.01, 0.1},
			Counts: []uint64{10, 60, 73},
			Count:  74,
			Sum:    0.5,
		},
		Bans: server.BanStats{
			Added:   map[string]uint64{"decoy": 3, "scan": 2},
			Lifted:  map[string]uint64{"spa": 1, "revoke": 1, "expired": 2},
			Active:  1,
			Ignored: 12,
			Alerts:  alert.Stats{Sent: 4, Failed: 1, Dropped: 2, Suppressed: 9},
			Touches: decoy.Stats{Handshake: 3, SYN: 5, UDP: 6},
		},
		Fleet: &cluster.Totals{Up: true, Counts: map[string]uint64{
			"claimed": 70, "replays": 2, "refused_redis_down": 3, "local_claims": 4, "refused_claims_full": 5,
			"claims_not_kept": 6, "reconciled": 7, "conflicts": 1,
			"published": 20, "dropped": 8, "applied": 19, "skipped": 9, "apply_errors": 10,
		}},
	}
}

var testBuild = Build{Version: "v0.9.0", GoVersion: "go1.26.8", Firewall: "nftables"}

func newTestCollector(t *testing.T, s server.Stats) *Collector {
	t.Helper()
	c, err := NewCollector(Options{
		Snapshot: func() server.Stats { return s },
		Build:    testBuild,
		Started:  time.Unix(1700000000, 500_000_000),
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCollectAndCompare(t *testing.T) {
	tests := []struct {
		name    string
		metrics []string
		want    string
	}{
		{
			name:    "build info and start time",
			metrics: []string{"sesame_build_info", "sesame_start_time_seconds"},
			want: `
# HELP sesame_build_info Always 1; the labels say which sesame, Go toolchain and firewall backend run.
# TYPE sesame_build_info gauge
sesame_build_info{firewall="nftables",goversion="go1.26.8",version="v0.9.0"} 1
# HELP sesame_start_time_seconds When the server started, in seconds since the Unix epoch.
# TYPE sesame_start_time_seconds gauge
sesame_start_time_seconds 1.7000000005e+09
`,
		},
		{
			name:    "knock refusals by reason",
			metrics: []string{"sesame_knock_refused_total", "sesame_knock_sources_in_progress"},
			want: `
# HELP sesame_knock_refused_total Knock packets refused, by reason.
# TYPE sesame_knock_refused_total counter
sesame_knock_refused_total{reason="sequence timeout"} 8
sesame_knock_refused_total{reason="wrong knock"} 21
# HELP sesame_knock_sources_in_progress Sources with a knock sequence in progress now.
# TYPE sesame_knock_sources_in_progress gauge
sesame_knock_sources_in_progress 5
`,
		},
		{
			name:    "SPA decisions by format and result",
			metrics: []string{"sesame_spa_decisions_total"},
			want: `
# HELP sesame_spa_decisions_total SPA packets decided, by wire format and result (accepted or the refusal reason).
# TYPE sesame_spa_decisions_total counter
sesame_spa_decisions_total{format="fwknop",result="accepted"} 4
sesame_spa_decisions_total{format="fwknop",result="stale"} 1
sesame_spa_decisions_total{format="native",result="accepted"} 30
sesame_spa_decisions_total{format="native",result="bad_mac"} 17
sesame_spa_decisions_total{format="native",result="replay"} 2
`,
		},
		{
			name:    "grants by name",
			metrics: []string{"sesame_grants_active", "sesame_grant_errors_total"},
			want: `
# HELP sesame_grant_errors_total Grants the firewall refused, by door or SPA client name.
# TYPE sesame_grant_errors_total counter
sesame_grant_errors_total{name="alice"} 1
sesame_grant_errors_total{name="operator"} 0
sesame_grant_errors_total{name="ssh"} 0
# HELP sesame_grants_active Grants live in the kernel now, by door or SPA client name.
# TYPE sesame_grants_active gauge
sesame_grants_active{name="alice"} 1
sesame_grants_active{name="operator"} 0
sesame_grants_active{name="ssh"} 2
`,
		},
		{
			name: "command queue",
			metrics: []string{"sesame_commands_queued", "sesame_commands_running", "sesame_commands_pending_stops",
				"sesame_commands_overflowed_total"},
			want: `
# HELP sesame_commands_overflowed_total Commands refused because the queue was full.
# TYPE sesame_commands_overflowed_total counter
sesame_commands_overflowed_total 6
# HELP sesame_commands_pending_stops Stop commands scheduled and not yet run.
# TYPE sesame_commands_pending_stops gauge
sesame_commands_pending_stops 3
# HELP sesame_commands_queued Commands waiting to run now.
# TYPE sesame_commands_queued gauge
sesame_commands_queued 1
# HELP sesame_commands_running Commands running now.
# TYPE sesame_commands_running gauge
sesame_commands_running 2
`,
		},
		{
			name:    "capture",
			metrics: []string{"sesame_capture_kernel_drops_total", "sesame_capture_decode_errors_total"},
			want: `
# HELP sesame_capture_decode_errors_total Captured packets that could not be decoded.
# TYPE sesame_capture_decode_errors_total counter
sesame_capture_decode_errors_total 3
# HELP sesame_capture_kernel_drops_total Packets the kernel dropped before the capture socket read them.
# TYPE sesame_capture_kernel_drops_total counter
sesame_capture_kernel_drops_total 7
`,
		},
		{
			name: "bans, alerts and decoy touches",
			metrics: []string{"sesame_bans_added_total", "sesame_bans_lifted_total", "sesame_bans_active",
				"sesame_alerts_sent_total", "sesame_alerts_failed_total", "sesame_alerts_dropped_total", "sesame_decoy_touches_total"},
			want: `
# HELP sesame_alerts_dropped_total Alert webhooks dropped because the queue was full.
# TYPE sesame_alerts_dropped_total counter
sesame_alerts_dropped_total 2
# HELP sesame_alerts_failed_total Alert webhooks that failed after every retry.
# TYPE sesame_alerts_failed_total counter
sesame_alerts_failed_total 1
# HELP sesame_alerts_sent_total Alert webhooks delivered.
# TYPE sesame_alerts_sent_total counter
sesame_alerts_sent_total 4
# HELP sesame_bans_active Bans the server knows to be live in the kernel now.
# TYPE sesame_bans_active gauge
sesame_bans_active 1
# HELP sesame_bans_added_total Sources banned, by reason (decoy, scan).
# TYPE sesame_bans_added_total counter
sesame_bans_added_total{reason="decoy"} 3
sesame_bans_added_total{reason="scan"} 2
# HELP sesame_bans_lifted_total Bans lifted, by reason (spa, revoke, expired).
# TYPE sesame_bans_lifted_total counter
sesame_bans_lifted_total{reason="expired"} 2
sesame_bans_lifted_total{reason="revoke"} 1
sesame_bans_lifted_total{reason="spa"} 1
# HELP sesame_decoy_touches_total Decoy port touches, by kind (handshake, syn, udp).
# TYPE sesame_decoy_touches_total counter
sesame_decoy_touches_total{kind="handshake"} 3
sesame_decoy_touches_total{kind="syn"} 5
sesame_decoy_touches_total{kind="udp"} 6
`,
		},
		{
			name: "fleet",
			metrics: []string{"sesame_fleet_redis_up", "sesame_fleet_replay_claims_total", "sesame_fleet_claims_not_kept_total",
				"sesame_fleet_reconciled_total", "sesame_fleet_conflicts_total", "sesame_fleet_events_total"},
			want: `
# HELP sesame_fleet_claims_not_kept_total Claims not remembered for reconciliation because the table was full of live claims.
# TYPE sesame_fleet_claims_not_kept_total counter
sesame_fleet_claims_not_kept_total 6
# HELP sesame_fleet_conflicts_total Packets accepted here while Redis was down that another member had also accepted.
# TYPE sesame_fleet_conflicts_total counter
sesame_fleet_conflicts_total 1
# HELP sesame_fleet_events_total Fan-out events (grants, bans, revocations), by result (published, dropped, applied, skipped, apply_error).
# TYPE sesame_fleet_events_total counter
sesame_fleet_events_total{result="applied"} 19
sesame_fleet_events_total{result="apply_error"} 10
sesame_fleet_events_total{result="dropped"} 8
sesame_fleet_events_total{result="published"} 20
sesame_fleet_events_total{result="skipped"} 9
# HELP sesame_fleet_reconciled_total Claims pushed back into Redis after an outage or a Redis restart.
# TYPE sesame_fleet_reconciled_total counter
sesame_fleet_reconciled_total 7
# HELP sesame_fleet_redis_up 1 when this fleet member reaches Redis, 0 while it counts Redis as down.
# TYPE sesame_fleet_redis_up gauge
sesame_fleet_redis_up 1
# HELP sesame_fleet_replay_claims_total SPA replay keys this member took to the fleet, by result (claimed, replay, refused_redis_down, local, refused_full).
# TYPE sesame_fleet_replay_claims_total counter
sesame_fleet_replay_claims_total{result="claimed"} 70
sesame_fleet_replay_claims_total{result="local"} 4
sesame_fleet_replay_claims_total{result="refused_full"} 5
sesame_fleet_replay_claims_total{result="refused_redis_down"} 3
sesame_fleet_replay_claims_total{result="replay"} 2
`,
		},
		{
			name:    "packet to grant histogram",
			metrics: []string{"sesame_packet_to_grant_seconds"},
			want: `
# HELP sesame_packet_to_grant_seconds Time from the packet that earned a grant being seen to the grant being in the kernel.
# TYPE sesame_packet_to_grant_seconds histogram
sesame_packet_to_grant_seconds_bucket{le="0.001"} 10
sesame_packet_to_grant_seconds_bucket{le="0.01"} 60
sesame_packet_to_grant_seconds_bucket{le="0.1"} 73
sesame_packet_to_grant_seconds_bucket{le="+Inf"} 74
sesame_packet_to_grant_seconds_sum 0.5
sesame_packet_to_grant_seconds_count 74
`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestCollector(t, sample())
			if err := testutil.CollectAndCompare(c, strings.NewReader(tc.want), tc.metrics...); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestEveryMetricEmitted(t *testing.T) {
	c := newTestCollector(t, sample())
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, mf := range mfs {
		got[mf.GetName()] = true
	}
	for _, name := range metricNames(t) {
		if !got[name] {
			t.Errorf("%s described but not emitted for a full snapshot", name)
		}
	}
	if len(got) != len(metricNames(t)) {
		t.Errorf("emitted %d families, described %d", len(got), len(metricNames(t)))
	}
}

// metricNames lists the names the collector describes.
func metricNames(t *testing.T) []string {
	t.Helper()
	c := newTestCollector(t, server.Stats{})
	ch := make(chan *prometheus.Desc, 100)
	c.Describe(ch)
	close(ch)
	var names []string
	for d := range ch {
		// Desc has no name accessor; its String() is `Desc{fqName: "x", ...}`.
		s := d.String()
		i := strings.Index(s, `fqName: "`) + len(`fqName: "`)
		j := strings.Index(s[i:], `"`)
		names = append(names, s[i:i+j])
	}
	return names
}

func TestLint(t *testing.T) {
	problems, err := testutil.CollectAndLint(newTestCollector(t, sample()))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

func TestSnapshotOncePerScrape(t *testing.T) {
	var calls atomic.Int32
	c, err := NewCollector(Options{Snapshot: func() server.Stats { calls.Add(1); return sample() }})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		if n := testutil.CollectAndCount(c); n == 0 {
			t.Fatal("no metrics")
		}
		if got := calls.Load(); got != int32(i) {
			t.Fatalf("after %d scrapes, %d snapshots", i, got)
		}
	}
}

func TestNoSnapshot(t *testing.T) {
	if _, err := NewCollector(Options{}); err != ErrNoSnapshot {
		t.Fatalf("NewCollector without snapshot: %v, want ErrNoSnapshot", err)
	}
	if _, err := NewHandler(Options{}); err != ErrNoSnapshot {
		t.Fatalf("NewHandler without snapshot: %v, want ErrNoSnapshot", err)
	}
}

func TestZeroStats(t *testing.T) {
	// A server with nothing configured yet: no labelled series, no histogram buckets, no panic.
	c := newTestCollector(t, server.Stats{})
	want := `
# HELP sesame_packet_to_grant_seconds Time from the packet that earned a grant being seen to the grant being in the kernel.
# TYPE sesame_packet_to_grant_seconds histogram
sesame_packet_to_grant_seconds_bucket{le="+Inf"} 0
sesame_packet_to_grant_seconds_sum 0
sesame_packet_to_grant_seconds_count 0
`
	// A server alone (no [cluster]) exports no fleet series.
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "sesame_packet_to_grant_seconds", "sesame_grants_active", "sesame_knock_refused_total",
		"sesame_fleet_redis_up", "sesame_fleet_replay_claims_total", "sesame_fleet_events_total"); err != nil {
		t.Error(err)
	}
}

func TestBadHistogramDropped(t *testing.T) {
	tests := []struct {
		name string
		h    server.Histogram
	}{
		{"bounds and counts differ", server.Histogram{Bounds: []float64{1, 2}, Counts: []uint64{1}, Count: 1}},
		{"bounds not ascending", server.Histogram{Bounds: []float64{2, 1}, Counts: []uint64{1, 2}, Count: 2}},
		{"counts not cumulative", server.Histogram{Bounds: []float64{1, 2}, Counts: []uint64{2, 1}, Count: 2}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := sample()
			s.Latency = tc.h
			c := newTestCollector(t, s)
			if err := testutil.CollectAndCompare(c, strings.NewReader(""), "sesame_packet_to_grant_seconds"); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestLabelValueOK(t *testing.T) {
	tests := []struct {
		v  string
		ok bool
	}{
		{"ssh", true},
		{"alice", true},
		{"operator", true},
		{"wrong knock", true},
		{"bad_mac", true},
		{"v1.2", true},
		{"db-2", true},
		{"cafe", true},
		{"deadbeef:1", true},
		{"", false},
		{strings.Repeat("a", MaxLabelLen), true},
		{strings.Repeat("a", MaxLabelLen+1), false},
		{"\xff\xfe", false},
		{"10.0.0.1", false},
		{"198.18.0.7:22", false},
		{"198.18.0.0/16", false},
		{"2001:db8::1", false},
		{"[2001:db8::1]:22", false},
		{"fe80::1%eth0", false},
		{"::ffff:192.0.2.1", false},
		{"::1", false},
		{"ssh-10.0.0.1", false},
		{"from 192.0.2.9 refused", false},
		{"client_2001:db8::7", false},
		{"a:198.18.0.7:22:b", false},
		{"ab:cd", true},
	}
	for _, tc := range tests {
		if got := LabelValueOK(tc.v); got != tc.ok {
			t.Errorf("LabelValueOK(%q) = %v, want %v", tc.v, got, tc.ok)
		}
	}
}

func TestNoAddressInLabels(t *testing.T) {
	// Addresses planted everywhere a label value comes from: none may be exported, each dropped
	// series is counted, and the clean series still are.
	addrs := []string{"198.18.0.7", "2001:db8::1", "[2001:db8::1]:22", "198.18.0.0/16", "ssh-10.1.2.3"}
	s := sample()
	for i, a := range addrs {
		s.Knock.Refused[a] = uint64(i + 1)
		s.Grants[a] = server.GrantCounts{Added: 1, Active: 1}
		s.SPA.Decisions[a] = map[string]uint64{"accepted": 1}
		s.SPA.Decisions["native"][a] = 1
	}
	h, err := NewHandler(Options{Snapshot: func() server.Stats { return s }})
	if err != nil {
		t.Fatal(err)
	}
	body := scrape(t, h)
	for _, a := range append(addrs, "198.18", "2001:db8", "10.1.2.3") {
		if strings.Contains(body, a) {
			t.Errorf("exposition contains %q", a)
		}
	}
	if !strings.Contains(body, `sesame_grants_added_total{name="ssh"} 40`) {
		t.Error("clean series missing")
	}
	// Per scrape: 5 knock reasons, 5 names x 4 grant series, 5 formats + 5 results.
	const perScrape = 5 + 5*4 + 5 + 5
	if !strings.Contains(body, "sesame_metrics_label_refused_total 35\n") {
		t.Errorf("want %d refused series counted; got:\n%s", perScrape, grep(body, "label_refused"))
	}
	body = scrape(t, h)
	if !strings.Contains(body, "sesame_metrics_label_refused_total 70\n") {
		t.Errorf("want %d refused series after two scrapes; got:\n%s", 2*perScrape, grep(body, "label_refused"))
	}
}

// scrape is one GET of h, in memory.
func scrape(t *testing.T, h http.Handler) string {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("scrape: %d: %s", rec.Code, rec.Body)
	}
	return rec.Body.String()
}

func grep(body, sub string) string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestBadBuildInfoDoesNotPanic(t *testing.T) {
	c, err := NewCollector(Options{Snapshot: sample, Build: Build{Version: "\xff", Firewall: "nftables"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := testutil.CollectAndCompare(c, strings.NewReader(""), "sesame_build_info"); err != nil {
		t.Error(err)
	}
}
