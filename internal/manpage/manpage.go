// Package manpage renders the text a command prints for -h as a roff manual page.
package manpage

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Page is one manual page.
type Page struct {
	Name    string   // the page's name: "sesame", "sesame-server"
	Section int      // 1 (user commands) or 8 (administration)
	Summary string   // the one line of the NAME section
	Help    string   // what the command prints for -h (see Parse)
	Date    string   // the footer's date, YYYY-MM-DD
	Source  string   // the footer's source, as "sesame 1.2.3"
	SeeAlso []string // other pages, as "sesame(8)"
}

// Doc is a help text taken apart.
type Doc struct {
	Synopsis []string  // the lines before the first blank line, as printed
	Sections []Section // the description first (Title ""), then the sections in order
}

// Section is a run of the help text under one heading.
type Section struct {
	Title   string  // "" for the description; else the heading without its colon, as "Options"
	Note    string  // what the heading says in parentheses, as "before or after HOST"
	Blocks  []Block // text and preformatted blocks, in order
	Entries []Entry // Options and Commands only: the items listed
}

// Block is a paragraph (lines to fill) or a preformatted block (lines kept as they are).
type Block struct {
	Pre   bool
	Lines []string // paragraph lines trimmed; preformatted lines without their common indentation
}

// Entry is one item of an Options or Commands list.
type Entry struct {
	Term string // "-c FILE", "-u, --udp", "server"
	Text string // the explanation, its lines joined by spaces
}

// Flags returns the flags an Options entry names: "-u, --udp" gives -u and --udp.
func (e Entry) Flags() []string {
	var out []string
	for _, w := range strings.Fields(e.Term) {
		if w = strings.TrimSuffix(w, ","); strings.HasPrefix(w, "-") {
			out = append(out, w)
		}
	}
	return out
}

// heading matches a section heading: an unindented "Options:", "Options (before or after
// HOST):", "Example:", "Examples:" or "Commands:" line.
var heading = regexp.MustCompile(`^(Options|Examples?|Commands)(?: \(([^)]*)\))?:$`)

// Parse takes a help text apart. Its shape is what sesame's commands print: the synopsis
// lines, a blank line, the description in paragraphs (unindented lines) and indented blocks,
// and sections that start with a heading line (see heading). An Options section lists
// entries in either of two forms: "  -u, --udp   text" with continuation lines indented
// further, or the flag package's "  -c FILE" followed by "    \ttext" lines. A Commands
// section lists "  name   text" entries.
func Parse(help string) (*Doc, error) {
	lines := strings.Split(strings.TrimRight(strings.ReplaceAll(help, "\r\n", "\n"), "\n"), "\n")
	d := &Doc{}
	i := 0
	for ; i < len(lines) && strings.TrimSpace(lines[i]) != ""; i++ {
		d.Synopsis = append(d.Synopsis, strings.TrimRight(lines[i], " \t"))
	}
	if len(d.Synopsis) == 0 {
		return nil, errors.New("manpage: help text starts with no synopsis line")
	}
	d.Sections = []Section{{}}
	sec := &d.Sections[0]
	var blk *Block // the block being filled; nil after a blank line
	var ent *Entry // the entry being continued; nil when none
	for n, raw := range lines[i:] {
		line := strings.TrimRight(raw, " \t")
		indent := len(line) - len(strings.TrimLeft(line, " \t"))
		switch {
		case line == "":
			finish(ent)
			blk, ent = nil, nil
			continue
		case indent == 0:
			if m := heading.FindStringSubmatch(line); m != nil {
				d.Sections = append(d.Sections, Section{Title: m[1], Note: m[2]})
				sec, blk, ent = &d.Sections[len(d.Sections)-1], nil, nil
				continue
			}
		}
		list := sec.Title == "Options" || sec.Title == "Commands"
		if list && indent > 0 {
			trim := strings.TrimSpace(line)
			start := sec.Title == "Commands" && indent <= 2 ||
				sec.Title == "Options" && indent <= 6 && strings.HasPrefix(trim, "-")
			if start {
				finish(ent)
				term, text := splitEntry(trim)
				sec.Entries = append(sec.Entries, Entry{Term: term, Text: text})
				ent, blk = &sec.Entries[len(sec.Entries)-1], nil
				continue
			}
			if ent == nil {
				return nil, fmt.Errorf("manpage: line %d: %q is in %s but starts no entry", len(d.Synopsis)+1+n+1, line, sec.Title)
			}
			if !strings.HasPrefix(strings.TrimLeft(line, " "), "\t") {
				finish(ent) // not the flag package's form: the term has its text on its line
			}
			ent.Text = strings.TrimSpace(ent.Text + " " + trim)
			continue
		}
		finish(ent)
		ent = nil
		pre := indent > 0
		if blk == nil || blk.Pre != pre {
			sec.Blocks = append(sec.Blocks, Block{Pre: pre})
			blk = &sec.Blocks[len(sec.Blocks)-1]
		}
		if pre {
			blk.Lines = append(blk.Lines, line)
		} else {
			blk.Lines = append(blk.Lines, strings.TrimSpace(line))
		}
	}
	finish(ent)
	for s := range d.Sections {
		for b := range d.Sections[s].Blocks {
			if blk := &d.Sections[s].Blocks[b]; blk.Pre {
				blk.Lines = dedent(blk.Lines)
			}
		}
		for _, e := range d.Sections[s].Entries {
			if e.Text == "" {
				return nil, fmt.Errorf("manpage: %s entry %q has no explanation", d.Sections[s].Title, e.Term)
			}
		}
	}
	return d, nil
}

// splitEntry splits "-u, --udp   text" at its first tab or run of two spaces.
func splitEntry(s string) (term, text string) {
	if i := strings.Index(s, "\t"); i >= 0 {
		return strings.TrimSpace(s[:i]), strings.TrimSpace(s[i+1:])
	}
	if i := strings.Index(s, "  "); i >= 0 {
		return s[:i], strings.TrimSpace(s[i:])
	}
	return s, ""
}

// finish splits the term of an entry whose line had no tab or two spaces between term and
// text and no text of the flag package's form ("\ttext") below it, as
// "--hmac-key-file FILE fwknop: HMAC key file": the term is its flags and the upper-case
// names of their arguments.
func finish(e *Entry) {
	if e == nil || e.Text != "" {
		return
	}
	words := strings.Fields(e.Term)
	for i, w := range words {
		if i > 0 && !strings.HasPrefix(w, "-") && !isArgName(strings.TrimSuffix(w, ",")) {
			e.Term, e.Text = strings.Join(words[:i], " "), strings.Join(words[i:], " ")
			return
		}
	}
}

// isArgName reports whether w reads as the name of a flag's argument: FILE, DELAY_MS.
func isArgName(w string) bool {
	for _, r := range w {
		if !(r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return w != ""
}

// dedent removes the indentation common to lines (tabs count as 8 spaces).
func dedent(lines []string) []string {
	for i, l := range lines {
		lines[i] = expandTabs(l)
	}
	common := -1
	for _, l := range lines {
		if n := len(l) - len(strings.TrimLeft(l, " ")); common < 0 || n < common {
			common = n
		}
	}
	for i, l := range lines {
		lines[i] = l[common:]
	}
	return lines
}

func expandTabs(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r == '\t' {
			b.WriteString(strings.Repeat(" ", 8-b.Len()%8))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Render returns p as a roff page for the man macros.
func Render(p Page) ([]byte, error) {
	if p.Name == "" || p.Section < 1 || p.Section > 9 || strings.TrimSpace(p.Summary) == "" {
		return nil, fmt.Errorf("manpage: page %q: want a name, a section 1-9 and a summary", p.Name)
	}
	d, err := Parse(p.Help)
	if err != nil {
		return nil, fmt.Errorf("manpage: %s: %w", p.Name, err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, ".\\\" Generated by 'sesame __man' from the text of 'sesame -h'; do not edit.\n")
	fmt.Fprintf(&b, ".TH %s %d %s %s %s\n", quote(strings.ToUpper(p.Name)), p.Section, quote(p.Date), quote(p.Source), quote("sesame manual"))
	b.WriteString(".nh\n.ad l\n")
	b.WriteString(".SH NAME\n")
	fmt.Fprintf(&b, "%s \\- %s\n", esc(p.Name), esc(strings.TrimSpace(p.Summary)))
	b.WriteString(".SH SYNOPSIS\n.nf\n")
	for _, l := range d.Synopsis {
		b.WriteString(synopsisLine(l, p.Name) + "\n")
	}
	b.WriteString(".fi\n")
	for _, s := range ordered(d.Sections) {
		title := strings.ToUpper(s.Title)
		if title == "EXAMPLE" {
			title = "EXAMPLES"
		}
		if title == "" {
			if len(s.Blocks) == 0 {
				continue
			}
			title = "DESCRIPTION"
		}
		fmt.Fprintf(&b, ".SH %s\n", title)
		if s.Note != "" {
			fmt.Fprintf(&b, ".PP\n%s\n", text("("+s.Note+")"))
		}
		for _, e := range s.Entries {
			fmt.Fprintf(&b, ".TP\n%s\n%s\n", term(e.Term), text(e.Text))
		}
		for _, blk := range s.Blocks {
			if blk.Pre {
				b.WriteString(".PP\n.RS 4\n.nf\n")
				for _, l := range blk.Lines {
					b.WriteString(text(l) + "\n")
				}
				b.WriteString(".fi\n.RE\n")
				continue
			}
			b.WriteString(".PP\n")
			for _, l := range blk.Lines {
				b.WriteString(text(l) + "\n")
			}
		}
	}
	if len(p.SeeAlso) > 0 {
		b.WriteString(".SH SEE ALSO\n")
		for i, ref := range p.SeeAlso {
			name, sect, ok := strings.Cut(strings.TrimSuffix(ref, ")"), "(")
			if !ok {
				return nil, fmt.Errorf("manpage: %s: see-also %q is not NAME(SECTION)", p.Name, ref)
			}
			sep := ","
			if i == len(p.SeeAlso)-1 {
				sep = ""
			}
			fmt.Fprintf(&b, ".BR %s (%s)%s\n", esc(name), esc(sect), sep)
		}
	}
	return []byte(b.String()), nil
}

// ordered returns the sections in a manual page's order: the description, then the lists
// (options, commands), then the examples, each kind in the order of the help text.
func ordered(secs []Section) []Section {
	rank := func(s Section) int {
		switch s.Title {
		case "":
			return 0
		case "Example", "Examples":
			return 2
		}
		return 1
	}
	out := make([]Section, 0, len(secs))
	for r := 0; r <= 2; r++ {
		for _, s := range secs {
			if rank(s) == r {
				out = append(out, s)
			}
		}
	}
	return out
}

// synopsisLine sets the command's name in bold: "sesame server -c FILE" (for page
// sesame-server) starts with "\fBsesame server\fR".
func synopsisLine(l, page string) string {
	cmd := strings.ReplaceAll(page, "-", " ")
	if rest, ok := strings.CutPrefix(l, cmd); ok && (rest == "" || rest[0] == ' ') {
		return line(`\fB` + esc(cmd) + `\fR` + esc(rest))
	}
	return line(esc(l))
}

// term renders an entry's term: flags in bold, their arguments in italics.
func term(t string) string {
	words := strings.Fields(t)
	for i, w := range words {
		comma := ""
		if strings.HasSuffix(w, ",") {
			w, comma = strings.TrimSuffix(w, ","), ","
		}
		switch {
		case strings.HasPrefix(w, "-") || i == 0:
			words[i] = `\fB` + esc(w) + `\fR` + comma
		default:
			words[i] = `\fI` + esc(w) + `\fR` + comma
		}
	}
	return line(strings.Join(words, " "))
}

// text escapes a line of filled text.
func text(s string) string { return line(esc(s)) }

// line protects an output line that would start with a control character.
func line(s string) string {
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		return `\&` + s
	}
	return s
}

// esc escapes s for roff: backslashes, hyphens as minus signs (options stay copyable), and
// any character outside ASCII as a Unicode escape.
func esc(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\\':
			b.WriteString(`\e`)
		case r == '-':
			b.WriteString(`\-`)
		case r == '\t':
			b.WriteString("    ")
		case r > 0x7e || r < 0x20:
			fmt.Fprintf(&b, `\[u%04X]`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// quote makes s one macro argument.
func quote(s string) string {
	return `"` + strings.ReplaceAll(esc(s), `"`, `\(dq`) + `"`
}
