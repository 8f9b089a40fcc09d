//go:build linux

package cli

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sesame-knock/sesame/internal/manpage"
)

// TestManPages writes the pages with 'sesame __man' and checks that there is one per
// command, that each holds every flag its -h lists, and that man --warnings and lexgrog
// accept them.
func TestManPages(t *testing.T) {
	dir := t.TempDir()
	var out, errOut bytes.Buffer
	if code := Main(context.Background(), []string{manName, "--date", "2026-12-01", dir}, &out, &errOut); code != 0 {
		t.Fatalf("sesame %s: exit %d: %s", manName, code, errOut.String())
	}
	cmds := commands()
	want := map[string]string{filepath.Join(dir, "sesame.8"): "sesame - port knocking and Single Packet Authorization"}
	for n, c := range cmds {
		want[filepath.Join(dir, fmt.Sprintf("sesame-%s.%d", n, manSection(n)))] = "sesame-" + n + " - " + c.summary
	}
	written := strings.Fields(out.String())
	if len(written) != len(want) {
		t.Errorf("wrote %d pages, want %d: %v", len(written), len(want), written)
	}
	for path, name := range want {
		roff, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("page missing: %v", err)
			continue
		}
		if !bytes.Contains(roff, []byte(`"2026\-12\-01"`)) {
			t.Errorf("%s: --date not used", path)
		}
		lint(t, path, name)
	}
	for n, c := range cmds {
		d, err := manpage.Parse(helpOf(context.Background(), n, c))
		if err != nil {
			t.Fatalf("%s -h: %v", n, err)
		}
		roff, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("sesame-%s.%d", n, manSection(n))))
		if err != nil {
			t.Fatal(err)
		}
		flags := 0
		for _, s := range d.Sections {
			for _, e := range s.Entries {
				for _, f := range e.Flags() {
					flags++
					if esc := `\fB` + strings.ReplaceAll(f, "-", `\-`) + `\fR`; !bytes.Contains(roff, []byte(esc)) {
						t.Errorf("sesame-%s: flag %s of -h is not on the page", n, f)
					}
				}
			}
		}
		if flags == 0 && n != "version" && n != "help" {
			t.Errorf("sesame %s -h: no options parsed", n)
		}
	}
}

// lint runs man --warnings over the page, which must print nothing, and lexgrog, which must
// read its NAME line as name.
func lint(t *testing.T, path, name string) {
	t.Helper()
	for _, tool := range []string{"man", "lexgrog"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipping: %s is not installed (man-db; .ci/deps.sh installs it)", tool)
		}
	}
	cmd := exec.Command("man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", path)
	cmd.Env = append(os.Environ(), "MANWIDTH=80", "LC_ALL=C.UTF-8")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil || stderr.Len() > 0 {
		t.Errorf("man --warnings %s: %v\n%s", path, err, stderr.String())
	}
	out, err := exec.Command("lexgrog", path).CombinedOutput()
	if want := fmt.Sprintf("%s: %q", path, name); err != nil || strings.TrimSpace(string(out)) != want {
		t.Errorf("lexgrog: %v: %s, want %s", err, out, want)
	}
}

func TestManUsage(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{manName}, "want one argument"},
		{[]string{manName, "--date", "1 Dec", t.TempDir()}, "want YYYY-MM-DD"},
	}
	for _, tc := range tests {
		var out, errOut bytes.Buffer
		if code := Main(context.Background(), tc.args, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("%v: exit %d, %q; want 2 and %q", tc.args, code, errOut.String(), tc.want)
		}
	}
	var out bytes.Buffer
	Main(context.Background(), []string{"-h"}, &out, &out)
	if strings.Contains(out.String(), manName) {
		t.Errorf("sesame -h lists the hidden %s:\n%s", manName, out.String())
	}
}
