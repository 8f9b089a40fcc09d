package control

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Bounds of the control server.
const (
	maxConns          = 32 // connections served at once; more wait in the kernel's backlog
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 60 * time.Second
	maxHeaderBytes    = 16 << 10
	shutdownTimeout   = 3 * time.Second
	probeTimeout      = time.Second
)

// Modes of the socket and of its directory when the server creates it.
const (
	SocketMode os.FileMode = 0o660
	DirMode    os.FileMode = 0o750
)

// Server is a control socket, listening.
type Server struct {
	path string
	ln   *net.UnixListener
	sock os.FileInfo // the socket file made, so that only ours is removed
	srv  *http.Server
	log  *slog.Logger

	closeOnce sync.Once
	closeErr  error
}

// Open checks cfg, creates its socket (mode 0660, owned by the daemon's user and the read
// group; its directory, if missing, 0750 with the same owners) and returns a Server ready to
// serve core. A stale socket left by a crashed daemon is replaced; a socket on which a daemon
// answers, or a file that is not a socket, is an error.
func Open(cfg Config, core Core, opts Options) (*Server, error) {
	cfg = cfg.withDefaults()
	r, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	self := os.Geteuid()
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ln, sock, err := listen(cfg.Socket, self, r.read.gid)
	if err != nil {
		return nil, err
	}
	h := newHandler(core, r, self, cfg.MaxGrant, Options{Metrics: opts.Metrics, Log: log})
	s := &Server{path: cfg.Socket, ln: ln, sock: sock, log: log}
	s.srv = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			p, err := peerCred(c)
			if err == nil {
				groups, gerr := procGroups(p.PID, p.UID)
				if gerr != nil && h.refusals.Allow() {
					log.Warn("control: peer's supplementary groups unknown, using its primary group only", "uid", p.UID, "pid", p.PID, "err", gerr)
				}
				p.Groups = groups
			}
			return withPeer(ctx, p, err)
		},
	}
	return s, nil
}

// Path is the socket's path.
func (s *Server) Path() string { return s.path }

// Serve answers requests until ctx ends, then stops (waiting a little for requests in
// flight) and removes the socket. It returns nil when ctx ended.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(limitListener{s.ln, make(chan struct{}, maxConns)}) }()
	select {
	case err := <-errc:
		s.Close()
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("control: serve %s: %w", s.path, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	s.srv.SetKeepAlivesEnabled(false)
	err := s.srv.Shutdown(sctx)
	<-errc
	return errors.Join(ignoreDeadline(err), s.Close())
}

func ignoreDeadline(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return nil
	}
	return err
}

// Close stops listening and removes the socket, if it is still the one Open made.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.srv.Close()
		s.ln.Close()
		if fi, err := os.Lstat(s.path); err == nil && os.SameFile(fi, s.sock) {
			if err := os.Remove(s.path); err != nil && !errors.Is(err, os.ErrNotExist) {
				s.closeErr = fmt.Errorf("control: remove %s: %w", s.path, err)
			}
		}
	})
	return s.closeErr
}

// Serve opens the control socket of cfg and serves core on it until ctx ends.
func Serve(ctx context.Context, cfg Config, core Core, opts Options) error {
	s, err := Open(cfg, core, opts)
	if err != nil {
		return err
	}
	return s.Serve(ctx)
}

// listen creates the socket at path, owned by uid and gid with SocketMode. The socket is made
// under a temporary name, given its owner and mode, and then renamed into place, so it is never
// reachable with other rights and a stale socket is replaced in one step.
func listen(path string, uid, gid int) (*net.UnixListener, os.FileInfo, error) {
	dir := filepath.Dir(path)
	if err := makeDir(dir, uid, gid); err != nil {
		return nil, nil, err
	}
	if err := checkFree(path); err != nil {
		return nil, nil, err
	}
	var id [6]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, nil, fmt.Errorf("control: random name: %w", err)
	}
	tmp := filepath.Join(dir, "."+filepath.Base(path)+"."+hex.EncodeToString(id[:]))
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, nil, fmt.Errorf("control: listen on %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(false)
	fail := func(err error) (*net.UnixListener, os.FileInfo, error) {
		ln.Close()
		os.Remove(tmp)
		return nil, nil, err
	}
	if err := chownIfNeeded(tmp, uid, gid); err != nil {
		return fail(fmt.Errorf("control: socket %s: owner %d:%d: %w", path, uid, gid, err))
	}
	if err := os.Chmod(tmp, SocketMode); err != nil {
		return fail(fmt.Errorf("control: socket %s: %w", path, err))
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(fmt.Errorf("control: socket %s: %w", path, err))
	}
	fi, err := os.Lstat(path)
	if err != nil {
		ln.Close()
		return nil, nil, fmt.Errorf("control: socket %s: %w", path, err)
	}
	return ln, fi, nil
}

// makeDir creates dir with DirMode, owned by uid and gid, when it is missing. An existing
// directory is left as it is.
func makeDir(dir string, uid, gid int) error {
	fi, err := os.Stat(dir)
	switch {
	case err == nil && fi.IsDir():
		return nil
	case err == nil:
		return fmt.Errorf("control: %s is not a directory", dir)
	case !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("control: %w", err)
	}
	if err := os.Mkdir(dir, DirMode); err != nil {
		return fmt.Errorf("control: socket directory: %w", err)
	}
	if err := chownIfNeeded(dir, uid, gid); err != nil {
		return fmt.Errorf("control: socket directory %s: owner %d:%d: %w", dir, uid, gid, err)
	}
	if err := os.Chmod(dir, DirMode); err != nil { // the umask may have taken bits off
		return fmt.Errorf("control: socket directory: %w", err)
	}
	return nil
}

// checkFree reports whether path may be taken: nothing is there, or a socket on which nothing
// answers (a crashed daemon's).
func checkFree(path string) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("control: %w", err)
	case fi.Mode().Type() != os.ModeSocket:
		return fmt.Errorf("control: %s exists and is not a socket (%s); not replacing it: remove it or set [control] socket", path, fi.Mode().Type())
	}
	c, err := net.DialTimeout("unix", path, probeTimeout)
	if err == nil {
		c.Close()
		return fmt.Errorf("control: a daemon is already serving %s: is another sesame server running? Stop it first, or set [control] socket", path)
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return nil // stale: replaced by the rename
	}
	return fmt.Errorf("control: %s exists and cannot tell whether a daemon serves it: %w", path, err)
}

// limitListener serves at most cap(sem) connections at once; Accept waits for a free slot.
// Its connections are *net.UnixConn underneath, so their peer credentials can be read.
type limitListener struct {
	*net.UnixListener
	sem chan struct{}
}

func (l limitListener) Accept() (net.Conn, error) {
	l.sem <- struct{}{}
	c, err := l.AcceptUnix()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{UnixConn: c, release: func() { <-l.sem }}, nil
}

// limitConn gives its slot back when closed.
type limitConn struct {
	*net.UnixConn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.UnixConn.Close()
	c.once.Do(c.release)
	return err
}
