// Package redistest runs a throw-away redis-server on a unix socket, for tests and benchmarks.
package redistest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Server is one redis-server process listening only on a unix socket in its directory (no TCP
// port, no persistence), which Stop ends and Start starts again on the same socket.
type Server struct {
	Dir  string
	Args []string // more redis-server arguments (an ACL user, for instance)
	cmd  *exec.Cmd
	done chan struct{}
}

// Start runs redis-server in dir (which must exist; its path must be short: a unix socket's
// path fits in 108 bytes).
func Start(dir string, args ...string) (*Server, error) {
	s := &Server{Dir: dir, Args: args}
	return s, s.Start()
}

// Socket is the server's socket path; URL its redis URL.
func (s *Server) Socket() string { return filepath.Join(s.Dir, "redis.sock") }

// URL is the unix:// URL of the socket.
func (s *Server) URL() string { return "unix://" + s.Socket() }

// Start starts the server (again, after Stop) and waits up to 5 s until it answers PING.
func (s *Server) Start() error {
	if s.cmd != nil {
		return errors.New("redistest: already running")
	}
	cmd := exec.Command("redis-server", append([]string{"--port", "0", "--unixsocket", s.Socket(), "--unixsocketperm", "700",
		"--save", "", "--appendonly", "no", "--dir", s.Dir, "--daemonize", "no", "--loglevel", "warning"}, s.Args...)...)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("redistest: start redis-server: %w", err)
	}
	s.cmd, s.done = cmd, make(chan struct{})
	go func() { cmd.Wait(); close(s.done) }()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if Ping(s.Socket()) == nil {
			return nil
		}
		select {
		case <-s.done:
			s.cmd = nil
			return errors.New("redistest: redis-server exited at start")
		case <-time.After(10 * time.Millisecond):
		}
	}
	s.Stop()
	return errors.New("redistest: redis-server did not answer in 5s")
}

// Stop kills the server (SIGKILL: a crash, nothing saved) and waits for it.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
	}
	s.cmd = nil
}

// Ping sends PING on the socket and wants PONG (or NOAUTH).
func Ping(sock string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c, err := (&net.Dialer{}).DialContext(ctx, "unix", sock)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	// An ACL without the default user answers NOAUTH: the server is up all the same.
	if l := strings.TrimSpace(line); l != "+PONG" && !strings.HasPrefix(l, "-NOAUTH") {
		return fmt.Errorf("redistest: answer %q", line)
	}
	return nil
}
