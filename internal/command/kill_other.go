//go:build !unix

package command

import "os/exec"

// killGroup leaves cmd as it is: a timeout kills the shell only.
func killGroup(*exec.Cmd) {}
