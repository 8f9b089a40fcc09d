//go:build !linux

package cli

import (
	"context"
	"io"
)

func runDemo(_ context.Context, c *command, args []string, stdout, _ io.Writer) error {
	for _, a := range args {
		if a == "-h" || a == "--help" || a == "-help" {
			io.WriteString(stdout, c.usage)
			return nil
		}
	}
	return needsLinux("demo")
}
