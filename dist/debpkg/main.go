// Command debpkg writes sesame's Debian package from dist/nfpm.yaml with the nfpm library;
// dist/deb.sh runs it. It is its own module so that nfpm's dependencies stay out of the
// daemon's go.mod.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
)

func main() {
	config := flag.String("config", "dist/nfpm.yaml", "nfpm configuration `FILE`; ${VAR} is read from the environment")
	out := flag.String("o", "", "write the package to `FILE`")
	flag.Parse()
	if *out == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: debpkg [-config FILE] -o FILE.deb")
		os.Exit(2)
	}
	if err := run(*config, *out); err != nil {
		fmt.Fprintf(os.Stderr, "debpkg: %v\n", err)
		os.Exit(1)
	}
}

func run(config, out string) error {
	for _, v := range []string{"STAGE", "VERSION", "DEB_ARCH", "MAINTAINER"} {
		if os.Getenv(v) == "" {
			return fmt.Errorf("%s is not set (run dist/deb.sh)", v)
		}
	}
	cfg, err := nfpm.ParseFileWithEnvMapping(config, os.Getenv)
	if err != nil {
		return fmt.Errorf("read %s: %w", config, err)
	}
	info, err := cfg.Get("deb")
	if err != nil {
		return fmt.Errorf("%s: %w", config, err)
	}
	info = nfpm.WithDefaults(info)
	if err := nfpm.Validate(info); err != nil {
		return fmt.Errorf("%s: %w", config, err)
	}
	pkg, err := nfpm.Get("deb")
	if err != nil {
		return err
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if err := pkg.Package(info, f); err != nil {
		f.Close()
		os.Remove(out)
		return fmt.Errorf("package: %w", err)
	}
	return f.Close()
}
