//go:build linux

package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestIntegrationBenchSmoke runs the harness in -smoke mode (a few seconds, sesame only) and
// checks that its JSON parses and covers every scenario, so the bench cannot rot.
func TestIntegrationBenchSmoke(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: the bench needs root to create network namespaces (run the test as root)")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipping: %s is not installed", tool)
		}
	}
	if testing.Short() {
		t.Skip("skipping in -short mode: the smoke run takes about 30 s")
	}
	out := t.TempDir()
	if err := run([]string{"-smoke", "-out", out}); err != nil {
		t.Fatalf("bench -smoke: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(out, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var r Results
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("results.json: %v", err)
	}
	ran := map[string]bool{}
	for _, s := range r.Ran {
		ran[s.Name] = true
	}
	for _, s := range allScenarios {
		if !ran[s] {
			t.Errorf("scenario %s did not run", s)
		}
	}
	checks := []struct {
		name string
		n    int
	}{
		{"calibration", len(r.Calibration)}, {"latency", len(r.Latency)}, {"flood", len(r.Flood)}, {"noise", len(r.Noise)},
		{"concurrency", len(r.Concurrency)}, {"sweep", len(r.Sweep)}, {"scale", len(r.Scale)}, {"memory", len(r.Memory)},
	}
	for _, c := range checks {
		if c.n == 0 {
			t.Errorf("no %s results", c.name)
		}
	}
	if len(r.Errors) > 0 {
		t.Errorf("errors: %v", r.Errors)
	}
	if len(r.Latency) > 0 && r.Latency[0].Latency.N == 0 {
		t.Errorf("sesame never opened in the latency scenario: %+v", r.Latency[0])
	}
	for _, f := range []string{"results.md", "flood.svg"} {
		if st, err := os.Stat(filepath.Join(out, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s missing or empty: %v", f, err)
		}
	}
}
