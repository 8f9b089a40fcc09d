//go:build linux

package cli

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/sesame-knock/sesame/internal/manpage"
)

const (
	bashCompletion = "../../dist/completion/sesame.bash"
	zshCompletion  = "../../dist/completion/_sesame"
)

// TestCompletions checks that the bash and zsh completions offer every command and every
// option that the command's -h lists (a flag package flag such as -check as --check).
func TestCompletions(t *testing.T) {
	bash, err := os.ReadFile(bashCompletion)
	if err != nil {
		t.Fatal(err)
	}
	zsh, err := os.ReadFile(zshCompletion)
	if err != nil {
		t.Fatal(err)
	}
	bashOpts := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^    ([a-z-]+)\)\n        opts="([^"]*)"`).FindAllStringSubmatch(string(bash), -1) {
		bashOpts[m[1]] = " " + m[2] + " "
	}
	zshCases := map[string]string{}
	for _, m := range regexp.MustCompile(`(?ms)^    \(([a-z-]+)\)\n(.*?)^      ;;`).FindAllStringSubmatch(string(zsh), -1) {
		zshCases[m[1]] = m[2]
	}
	cmds := commands()
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	if m := regexp.MustCompile(`local commands="([^"]*)"`).FindSubmatch(bash); m == nil || string(m[1]) != strings.Join(names, " ") {
		t.Errorf("bash: commands %q, want %q", m, strings.Join(names, " "))
	}
	for _, n := range names {
		if !strings.Contains(string(zsh), "'"+n+":") {
			t.Errorf("zsh: command %s missing", n)
		}
		d, err := manpage.Parse(helpOf(context.Background(), n, cmds[n]))
		if err != nil {
			t.Fatalf("%s -h: %v", n, err)
		}
		for _, s := range d.Sections {
			for _, e := range s.Entries {
				for _, f := range e.Flags() {
					name := strings.TrimLeft(f, "-")
					if name == "h" || name == "help" {
						continue
					}
					want := "--" + name
					if len(name) == 1 {
						want = "-" + name
					}
					if !strings.Contains(bashOpts[n], " "+want+" ") {
						t.Errorf("bash: sesame %s: %s (from %s in -h) not offered", n, want, f)
					}
					if !regexp.MustCompile(`(^|[^-\w])` + regexp.QuoteMeta(want) + `([^-\w]|$)`).MatchString(zshCases[n]) {
						t.Errorf("zsh: sesame %s: %s (from %s in -h) not offered", n, want, f)
					}
				}
			}
		}
	}
}

// TestBashCompletion runs the completion function in bash with bash-completion loaded.
func TestBashCompletion(t *testing.T) {
	const lib = "/usr/share/bash-completion/bash_completion"
	if _, err := os.Stat(lib); err != nil {
		t.Skip("skipping: bash-completion is not installed (.ci/deps.sh installs it)")
	}
	tests := []struct {
		line string
		want string
	}{
		{"sesame se", "server"},
		{"sesame server --log-", "--log-format --log-level"},
		{"sesame server --firewall ip", "iptables"},
		{"sesame open host --hmac-digest-type sha3", "sha384 sha3_256 sha3_512"},
		{"sesame revoke --", "--all --ban --kill --socket"},
		{"sesame help st", "status"},
		{"sesame version ", ""},
	}
	for _, tc := range tests {
		t.Run(tc.line, func(t *testing.T) {
			script := `source ` + lib + `
source ` + bashCompletion + `
read -ra COMP_WORDS <<<"$LINE"
[[ $LINE == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); COMP_LINE=$LINE; COMP_POINT=${#LINE}
_sesame
echo "${COMPREPLY[*]}"`
			cmd := exec.Command("bash", "--norc", "--noprofile", "-c", script)
			cmd.Env = append(os.Environ(), "LINE="+tc.line)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("bash: %v\n%s", err, out)
			}
			if got := strings.TrimSpace(string(out)); got != tc.want {
				t.Errorf("completing %q: got %q, want %q", tc.line, got, tc.want)
			}
		})
	}
}

// TestZshCompletionSyntax checks that zsh reads the completion file.
func TestZshCompletionSyntax(t *testing.T) {
	if _, err := exec.LookPath("zsh"); err != nil {
		t.Skip("skipping: zsh is not installed (.ci/deps.sh installs it)")
	}
	if out, err := exec.Command("zsh", "-n", zshCompletion).CombinedOutput(); err != nil {
		t.Fatalf("zsh -n: %v\n%s", err, out)
	}
}
