// Package cli implements the sesame command line: one binary, one subcommand per job.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
)

// Version is set at build time with -ldflags "-X github.com/sesame-knock/sesame/internal/cli.Version=v1.2.3".
var Version = ""

// command is one subcommand.
type command struct {
	summary string
	usage   string // the synopsis and examples printed by -h
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// errUsage marks an error whose message is a usage problem; Main exits 2 for it.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

func commands() map[string]*command {
	return map[string]*command{
		"server":    serverCommand(),
		"knock":     knockCommand(),
		"open":      openCommand(),
		"keygen":    keygenCommand(),
		"migrate":   migrateCommand(),
		"demo":      demoCommand(),
		"status":    statusCommand(),
		"grant":     grantCommand(),
		"revoke":    revokeCommand(),
		"doctor":    doctorCommand(),
		"ssh-proxy": sshProxyCommand(),
		"version":   {summary: "print the version", usage: "sesame version\n\nExample:\n  sesame version\n", run: runVersion},
		"help":      {summary: "show help for a command", usage: "sesame help [COMMAND]\n\nExamples:\n  sesame help\n  sesame help server\n"},
	}
}

// Main runs the command line args and returns the exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmds := commands()
	if len(args) == 0 {
		printHelp(stderr, cmds)
		return 2
	}
	name := args[0]
	switch name {
	case "-h", "--help", "-help":
		printHelp(stdout, cmds)
		return 0
	case "-V", "--version", "-version":
		runVersion(ctx, nil, stdout, stderr)
		return 0
	case "help":
		if len(args) > 1 {
			if c, ok := cmds[args[1]]; ok {
				fmt.Fprint(stdout, c.usage)
				return 0
			}
			fmt.Fprintf(stderr, "sesame: unknown command %q\n", args[1])
			return 2
		}
		printHelp(stdout, cmds)
		return 0
	case manName: // hidden: not a command for users, so not listed
		if err := runMan(ctx, args[1:], stdout); err != nil {
			fmt.Fprintf(stderr, "sesame %s: %v\n", manName, err)
			if errors.As(err, new(usageError)) {
				return 2
			}
			return 1
		}
		return 0
	}
	c, ok := cmds[name]
	if !ok {
		fmt.Fprintf(stderr, "sesame: unknown command %q (see 'sesame help')\n", name)
		return 2
	}
	err := c.run(ctx, args[1:], stdout, stderr)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, new(usageError)):
		fmt.Fprintf(stderr, "sesame %s: %v\n(see 'sesame %s -h')\n", name, err, name)
		return 2
	default:
		fmt.Fprintf(stderr, "sesame %s: %v\n", name, err)
		return 1
	}
}

func printHelp(w io.Writer, cmds map[string]*command) {
	fmt.Fprintf(w, "sesame %s: port knocking and Single Packet Authorization\n\nUsage: sesame COMMAND [OPTIONS]\n\nCommands:\n", versionString())
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-8s %s\n", n, cmds[n].summary)
	}
	fmt.Fprint(w, "\nRun 'sesame COMMAND -h' for a command's options and examples.\n")
}

// newFlagSet returns a flag set whose -h prints usage and the flags, and which reports errors
// as usage errors instead of exiting.
func newFlagSet(name string, c *command, stdout io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("sesame "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		fmt.Fprint(stdout, c.usage)
		fmt.Fprintln(stdout, "\nOptions:")
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	return fs
}

// parseFlags parses args with fs; -h prints help (once) and returns flag.ErrHelp.
func parseFlags(fs *flag.FlagSet, args []string) error {
	usage := fs.Usage
	fs.Usage = func() {} // fs.Parse calls it for -h and for every error
	err := fs.Parse(args)
	fs.Usage = usage
	switch {
	case err == nil:
		return nil
	case errors.Is(err, flag.ErrHelp):
		fs.Usage()
		return flag.ErrHelp
	default:
		return usageError{err}
	}
}

func versionString() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

func runVersion(_ context.Context, _ []string, stdout, _ io.Writer) error {
	fmt.Fprintf(stdout, "sesame %s (%s, %s/%s)\n", versionString(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}

// needsLinux is the error of a server-side command on another system.
func needsLinux(name string) error {
	return fmt.Errorf("'sesame %s' needs Linux (it drives the Linux kernel's firewall and packet capture); this is %s", name, runtime.GOOS)
}

// stringList is a repeatable or comma-separated string flag.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }
func (l *stringList) Set(s string) error {
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l = append(*l, p)
		}
	}
	return nil
}
