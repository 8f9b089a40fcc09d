package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/netnsbed"
)

// TestIntegrationOneTimeSequences: knockd's One_Time_Sequences under sesame. Each sequence opens
// once, the used line is marked with '#', the next line becomes active, and this works over
// IPv6 too (knockd 0.8 keeps the old IPv6 filter and never sees the second sequence).
func TestIntegrationOneTimeSequences(t *testing.T) {
	bed := skipUnlessRoot(t)
	dir := t.TempDir()
	seqFile := filepath.Join(dir, "sequences")
	if err := os.WriteFile(seqFile, []byte(" 11001,11002,11003\n 12001,12002:udp,12003\n# a comment\n 13001,13002,13003\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := strings.ReplaceAll(`[options]
	LogFile = DIR/sesame.log

[once]
	one_time_sequences = DIR/sequences
	seq_timeout = 5
	command = echo "%IP%" >> DIR/events
`, "DIR", dir)
	path := filepath.Join(dir, "knockd.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	startDaemon(t, bed.Server, "sesame server running", sesameBin, "server", "--knockd-conf", path)
	events := func() string {
		b, _ := os.ReadFile(filepath.Join(dir, "events"))
		return strings.TrimSpace(string(b))
	}
	steps := []struct {
		src, dst     string
		seq          []string
		wantEvents   string
		wantFileHead string
	}{
		{netnsbed.Client4.String(), netnsbed.Server4.String(), []string{"11001/tcp", "11002/tcp", "11003/tcp"}, "198.18.0.2", "#11001"},
		// The used sequence no longer opens.
		{netnsbed.Client6.String(), netnsbed.Server6.String(), []string{"11001/tcp", "11002/tcp", "11003/tcp"}, "198.18.0.2", "#11001"},
		// The second one does, over IPv6.
		{netnsbed.Client6.String(), netnsbed.Server6.String(), []string{"12001/tcp", "12002/udp", "12003/tcp"}, "198.18.0.2\nfd5e:5a3e::2", "#11001,11002,11003\n#12001"},
	}
	for i, s := range steps {
		src, dst := mustAddr(t, s.src), mustAddr(t, s.dst)
		knockFrom(t, bed, src, dst, s.seq...)
		if !waitFor(2*time.Second, func() bool { return events() == s.wantEvents }) {
			t.Fatalf("step %d: events %q, want %q", i, events(), s.wantEvents)
		}
		time.Sleep(100 * time.Millisecond)
		b, _ := os.ReadFile(seqFile)
		if !strings.HasPrefix(string(b), s.wantFileHead) {
			t.Fatalf("step %d: sequence file starts %q, want %q", i, b, s.wantFileHead)
		}
	}
	if b, _ := os.ReadFile(seqFile); len(b) != len(" 11001,11002,11003\n 12001,12002:udp,12003\n# a comment\n 13001,13002,13003\n") {
		t.Errorf("sequence file changed length: %q", b)
	}
	log, _ := os.ReadFile(filepath.Join(dir, "sesame.log"))
	if !strings.Contains(string(log), "OPEN SESAME") {
		t.Errorf("knockd-style log lacks OPEN SESAME:\n%s", log)
	}
}
