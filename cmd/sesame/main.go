// Command sesame is a port-knocking and Single Packet Authorization daemon and its clients.
package main

import (
	"context"
	"os"

	"github.com/sesame-knock/sesame/internal/cli"
)

func main() {
	os.Exit(cli.Main(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}
