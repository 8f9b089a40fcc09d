package metrics

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const opsDoc = "../../docs/OPERATIONS.md"

// fenced returns the bodies of the doc's fenced blocks in language lang, in order.
func fenced(t *testing.T, doc, lang string) []string {
	t.Helper()
	var blocks []string
	rest := doc
	for {
		i := strings.Index(rest, "\n```"+lang+"\n")
		if i < 0 {
			return blocks
		}
		rest = rest[i+len("\n```"+lang+"\n"):]
		j := strings.Index(rest, "\n```\n")
		if j < 0 {
			t.Fatalf("unterminated %s block", lang)
		}
		blocks = append(blocks, rest[:j+1])
		rest = rest[j:]
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestDocBlocksAreTestdata(t *testing.T) {
	doc := readFile(t, opsDoc)
	for _, tc := range []struct{ lang, file string }{
		{"yaml", "testdata/alerts.yml"},
		{"json", "testdata/grafana-panel.json"},
	} {
		blocks := fenced(t, doc, tc.lang)
		if len(blocks) != 1 {
			t.Errorf("%s: %d %s blocks, want 1", opsDoc, len(blocks), tc.lang)
			continue
		}
		if want := readFile(t, tc.file); blocks[0] != want {
			t.Errorf("%s: the %s block differs from %s", opsDoc, tc.lang, tc.file)
		}
	}
}

var metricRef = regexp.MustCompile(`\bsesame_[a-z_]+`)

// base strips the series suffixes of a histogram.
func base(name string) string {
	for _, s := range []string{"_bucket", "_sum", "_count"} {
		if n, ok := strings.CutSuffix(name, s); ok && n == "sesame_packet_to_grant_seconds" {
			return n
		}
	}
	return name
}

func TestDocMetricTable(t *testing.T) {
	doc := readFile(t, opsDoc)
	var inTable []string
	for _, line := range strings.Split(doc, "\n") {
		if strings.HasPrefix(line, "| `sesame_") {
			name := strings.Trim(strings.Fields(line)[1], "`")
			inTable = append(inTable, name)
		}
	}
	names := metricNames(t)
	for _, n := range names {
		if !slices.Contains(inTable, n) {
			t.Errorf("%s: metric %s not in the table", opsDoc, n)
		}
	}
	for _, n := range inTable {
		if !slices.Contains(names, n) {
			t.Errorf("%s: the table lists %s, which is not exported", opsDoc, n)
		}
	}
	for _, ref := range metricRef.FindAllString(doc, -1) {
		if !slices.Contains(names, base(ref)) {
			t.Errorf("%s mentions %s, which is not exported", opsDoc, ref)
		}
	}
}

func TestGrafanaPanel(t *testing.T) {
	var panel struct {
		Type    string `json:"type"`
		Title   string `json:"title"`
		Targets []struct {
			RefID string `json:"refId"`
			Expr  string `json:"expr"`
		} `json:"targets"`
	}
	if err := json.Unmarshal([]byte(readFile(t, "testdata/grafana-panel.json")), &panel); err != nil {
		t.Fatalf("grafana-panel.json: %v", err)
	}
	if panel.Type != "timeseries" || panel.Title == "" || len(panel.Targets) == 0 {
		t.Fatalf("panel: type %q, title %q, %d targets", panel.Type, panel.Title, len(panel.Targets))
	}
	names := metricNames(t)
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: panel\n    rules:\n")
	for _, tg := range panel.Targets {
		refs := metricRef.FindAllString(tg.Expr, -1)
		if len(refs) == 0 {
			t.Errorf("target %s: no sesame metric in %q", tg.RefID, tg.Expr)
		}
		for _, r := range refs {
			if !slices.Contains(names, r) {
				t.Errorf("target %s: %s is not exported", tg.RefID, r)
			}
		}
		// Grafana's variables, filled in as a dashboard would.
		expr := strings.NewReplacer("$__rate_interval", "5m", "$instance", ".*").Replace(tg.Expr)
		q, _ := json.Marshal(expr)
		rules.WriteString("      - record: panel:" + strings.ToLower(tg.RefID) + "\n        expr: " + string(q) + "\n")
	}
	promtool := lookPromtool(t)
	path := filepath.Join(t.TempDir(), "panel.yml")
	if err := os.WriteFile(path, []byte(rules.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "rules", path).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules (panel queries): %v\n%s\n%s", err, out, rules.String())
	}
}

func TestAlertRules(t *testing.T) {
	doc := readFile(t, "testdata/alerts.yml")
	names := metricNames(t)
	for _, ref := range metricRef.FindAllString(doc, -1) {
		if !slices.Contains(names, ref) {
			t.Errorf("alerts.yml: %s is not exported", ref)
		}
	}
	promtool := lookPromtool(t)
	for _, args := range [][]string{
		{"check", "rules", "testdata/alerts.yml"},
		{"test", "rules", "testdata/alerts_test.yml"},
	} {
		if out, err := exec.Command(promtool, args...).CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

func lookPromtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (Debian package prometheus; .ci/deps.sh installs it)")
	}
	return p
}
