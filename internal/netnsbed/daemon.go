package netnsbed

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Daemon is a long-running process (sesame, knockd, fwknopd) started inside a namespace, with
// its standard output and error collected for the caller to wait on and read.
type Daemon struct {
	Cmd  *exec.Cmd
	out  lockedBuffer
	done chan struct{}
	err  error
}

// StartDaemon runs name with args inside namespace ns.
func StartDaemon(ns, name string, args ...string) (*Daemon, error) {
	d := &Daemon{done: make(chan struct{})}
	d.Cmd = Command(context.Background(), ns, name, args...)
	d.Cmd.Stdout, d.Cmd.Stderr = &d.out, &d.out
	if err := d.Cmd.Start(); err != nil {
		return nil, fmt.Errorf("netnsbed: start %s: %w", name, err)
	}
	go func() { d.err = d.Cmd.Wait(); close(d.done) }()
	return d, nil
}

// Output returns everything the process has written so far.
func (d *Daemon) Output() string { return d.out.String() }

// WaitOutput waits up to timeout for the output to contain s.
func (d *Daemon) WaitOutput(s string, timeout time.Duration) bool {
	return WaitFor(timeout, func() bool { return strings.Contains(d.out.String(), s) })
}

// Done is closed when the process has ended.
func (d *Daemon) Done() <-chan struct{} { return d.done }

// Err is the process's exit error, once Done is closed.
func (d *Daemon) Err() error {
	<-d.done
	return d.err
}

// Stop sends sig and waits up to 10 s for the process to end, then kills it. ip netns exec
// execs the program, so the signal reaches it directly.
func (d *Daemon) Stop(sig syscall.Signal) {
	select {
	case <-d.done:
		return
	default:
	}
	d.Cmd.Process.Signal(sig)
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		d.Cmd.Process.Kill()
		<-d.done
	}
}

// WaitFor polls cond every 20 ms until it holds or timeout passes, and reports whether it held.
func WaitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lockedBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
