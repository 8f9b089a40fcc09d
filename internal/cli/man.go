package cli

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/sesame-knock/sesame/internal/manpage"
)

// manName is the hidden command that writes the manual pages; dist/deb.sh runs it.
const manName = "__man"

// manSection is the manual section of a command's page: 8 for what an administrator runs on
// the server, 1 for the rest.
func manSection(name string) int {
	switch name {
	case "server", "demo", "status", "grant", "revoke":
		return 8
	}
	return 1
}

// helpOf returns what 'sesame NAME -h' prints: the command's usage and, for a command with a
// flag set, its options. 'help' has no run of its own and 'version -h' prints the version,
// so for those two it is the usage.
func helpOf(ctx context.Context, name string, c *command) string {
	if c.run == nil || name == "version" {
		return c.usage
	}
	var out bytes.Buffer
	c.run(ctx, []string{"-h"}, &out, io.Discard)
	return out.String()
}

// mainHelp returns what 'sesame -h' prints, split into sesame(8)'s summary and a help text
// in the shape manpage.Parse takes: its "Usage: " line is the synopsis.
func mainHelp(cmds map[string]*command) (summary, help string, err error) {
	var out bytes.Buffer
	printHelp(&out, cmds)
	first, rest, _ := strings.Cut(out.String(), "\n")
	_, summary, ok := strings.Cut(first, ": ")
	rest = strings.TrimLeft(rest, "\n")
	synopsis, rest, ok2 := strings.Cut(rest, "\n")
	synopsis, ok3 := strings.CutPrefix(synopsis, "Usage: ")
	if !ok || !ok2 || !ok3 {
		return "", "", fmt.Errorf("sesame -h: unexpected shape %q", out.String())
	}
	return summary, synopsis + "\n" + rest, nil
}

// manPages returns sesame(8) and one page per command, from the text -h prints.
func manPages(ctx context.Context, date string) ([]manpage.Page, error) {
	cmds := commands()
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	ref := func(n string) string { return fmt.Sprintf("sesame-%s(%d)", n, manSection(n)) }
	source := "sesame " + versionString()
	summary, help, err := mainHelp(cmds)
	if err != nil {
		return nil, err
	}
	main := manpage.Page{Name: "sesame", Section: 8, Summary: summary, Help: help, Date: date, Source: source}
	pages := []manpage.Page{main}
	for _, n := range names {
		main.SeeAlso = append(main.SeeAlso, ref(n))
		see := []string{"sesame(8)"}
		for _, o := range names {
			if o != n {
				see = append(see, ref(o))
			}
		}
		pages = append(pages, manpage.Page{Name: "sesame-" + n, Section: manSection(n), Summary: cmds[n].summary,
			Help: helpOf(ctx, n, cmds[n]), Date: date, Source: source, SeeAlso: see})
	}
	pages[0] = main
	return pages, nil
}

// runMan writes the manual pages into a directory as NAME.SECTION files.
func runMan(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("sesame "+manName, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	date := fs.String("date", time.Now().UTC().Format(time.DateOnly), "the pages' date, YYYY-MM-DD")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() != 1 {
		return usagef("want one argument, the directory to write the pages into")
	}
	if _, err := time.Parse(time.DateOnly, *date); err != nil {
		return usagef("--date %q: want YYYY-MM-DD", *date)
	}
	dir := fs.Arg(0)
	pages, err := manPages(ctx, *date)
	if err != nil {
		return err
	}
	for _, p := range pages {
		roff, err := manpage.Render(p)
		if err != nil {
			return err
		}
		path := filepath.Join(dir, fmt.Sprintf("%s.%d", p.Name, p.Section))
		if err := os.WriteFile(path, roff, 0o644); err != nil {
			return fmt.Errorf("write manual page: %w", err)
		}
		fmt.Fprintln(stdout, path)
	}
	return nil
}
