package manpage

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		help string
		want *Doc
	}{
		{
			name: "hand-written options",
			help: "sesame knock [-u] HOST PORT ...\n\nSend a knock\nsequence.\n\nOptions:\n  -u, --udp          every knock\n                     is UDP\n      --delay MS     wait\n\nExamples:\n  sesame knock a 1\n",
			want: &Doc{
				Synopsis: []string{"sesame knock [-u] HOST PORT ..."},
				Sections: []Section{
					{Blocks: []Block{{Lines: []string{"Send a knock", "sequence."}}}},
					{Title: "Options", Entries: []Entry{{Term: "-u, --udp", Text: "every knock is UDP"}, {Term: "--delay MS", Text: "wait"}}},
					{Title: "Examples", Blocks: []Block{{Pre: true, Lines: []string{"sesame knock a 1"}}}},
				},
			},
		},
		{
			name: "flag package options",
			help: "sesame server -c FILE\n\nRun it.\n\nOptions:\n  -c FILE\n    \tnative TOML\n    \tconfiguration FILE\n  -config string\n    \tsame as -c\n  -v\tverbose\n",
			want: &Doc{
				Synopsis: []string{"sesame server -c FILE"},
				Sections: []Section{
					{Blocks: []Block{{Lines: []string{"Run it."}}}},
					{Title: "Options", Entries: []Entry{{Term: "-c FILE", Text: "native TOML configuration FILE"}, {Term: "-config string", Text: "same as -c"}, {Term: "-v", Text: "verbose"}}},
				},
			},
		},
		{
			name: "term that runs into its text",
			help: "sesame open HOST\n\nOptions (before or after HOST):\n      --hmac-key-file FILE fwknop: HMAC key file\n  -m, --digest-type D      fwknop: inner digest\n",
			want: &Doc{
				Synopsis: []string{"sesame open HOST"},
				Sections: []Section{
					{},
					{Title: "Options", Note: "before or after HOST", Entries: []Entry{{Term: "--hmac-key-file FILE", Text: "fwknop: HMAC key file"}, {Term: "-m, --digest-type D", Text: "fwknop: inner digest"}}},
				},
			},
		},
		{
			name: "several synopsis lines, paragraph then indented block",
			help: "sesame keygen -o FILE\nsesame keygen --pair -o FILE\n            [--force]\n\nMake keys:\n  (default)   a shared key\n    deeper\nThen text.\n\nCommands:\n  demo     show\n           it\n\nRun it.\n",
			want: &Doc{
				Synopsis: []string{"sesame keygen -o FILE", "sesame keygen --pair -o FILE", "            [--force]"},
				Sections: []Section{
					{Blocks: []Block{{Lines: []string{"Make keys:"}}, {Pre: true, Lines: []string{"(default)   a shared key", "  deeper"}}, {Lines: []string{"Then text."}}}},
					{Title: "Commands", Entries: []Entry{{Term: "demo", Text: "show it"}}, Blocks: []Block{{Lines: []string{"Run it."}}}},
				},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.help)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Parse:\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, help, want string
	}{
		{"no synopsis", "\nText.\n", "no synopsis"},
		{"orphan line in options", "sesame x\n\nOptions:\n    text without a flag\n", "starts no entry"},
		{"flag without text", "sesame x\n\nOptions:\n  -x FILE\n", "has no explanation"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.help)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse: err %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestRender(t *testing.T) {
	p := Page{Name: "sesame-x", Section: 8, Summary: "do x", Date: "2026-12-01", Source: "sesame 1.0",
		Help:    "sesame x [-f FILE]\n\n.starts with a dot, C:\\path and caf\u00e9 \u2014 ok\n'quoted\n\nExamples:\n  sesame x -f a\n\nOptions:\n  -f FILE   read FILE\n",
		SeeAlso: []string{"sesame(8)", "sesame-y(1)"}}
	got, err := Render(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`.TH "SESAME\-X" 8 "2026\-12\-01" "sesame 1.0" "sesame manual"`,
		".SH NAME\nsesame\\-x \\- do x\n",
		".SH SYNOPSIS\n.nf\n\\fBsesame x\\fR [\\-f FILE]\n.fi\n",
		`\&.starts with a dot, C:\epath and caf\[u00E9] \[u2014] ok`,
		"\n\\&'quoted\n",
		".TP\n\\fB\\-f\\fR \\fIFILE\\fR\nread FILE\n",
		".BR sesame (8),\n.BR sesame\\-y (1)\n",
	} {
		if !bytes.Contains(got, []byte(want)) {
			t.Errorf("page lacks %q:\n%s", want, got)
		}
	}
	if o, e := bytes.Index(got, []byte(".SH OPTIONS")), bytes.Index(got, []byte(".SH EXAMPLES")); o < 0 || e < o {
		t.Errorf("want OPTIONS before EXAMPLES:\n%s", got)
	}
	if _, err := Render(Page{Name: "x", Section: 1, Help: "x\n"}); err == nil {
		t.Error("Render accepted a page without a summary")
	}
}

// TestRenderLint runs the page through groff's warnings and lexgrog, which needs a NAME line
// it can read (whatis and apropos use it).
func TestRenderLint(t *testing.T) {
	for _, tool := range []string{"groff", "lexgrog"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipping: %s is not installed (groff-base and man-db; .ci/deps.sh installs them)", tool)
		}
	}
	p := Page{Name: "sesame-x", Section: 1, Summary: "do x", Date: "2026-12-01", Source: "sesame 1.0",
		Help: "sesame x\n\nText \\n with a backslash.\n  pre\tformatted\n\nOptions:\n  -x\tx\n"}
	roff, err := Render(p)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "sesame-x.1")
	if err := os.WriteFile(path, roff, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("groff", "-man", "-ww", "-z", path).CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("groff -man -ww: %v\n%s\n%s", err, out, roff)
	}
	out, err = exec.Command("lexgrog", path).CombinedOutput()
	if want := path + `: "sesame-x - do x"`; err != nil || strings.TrimSpace(string(out)) != want {
		t.Errorf("lexgrog: %v: %s, want %s", err, out, want)
	}
}
