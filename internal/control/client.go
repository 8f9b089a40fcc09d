package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"

	"github.com/sesame-knock/sesame/internal/server"
)

// DefaultTimeout bounds one client request.
const DefaultTimeout = 30 * time.Second

// maxAnswer bounds how much of an answer the client reads.
const maxAnswer = 16 << 20

// Client calls a daemon's control socket.
type Client struct {
	socket string
	hc     *http.Client
}

// NewClient returns a client of the socket at path (DefaultSocket when empty).
func NewClient(path string) *Client {
	if path == "" {
		path = DefaultSocket
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		MaxIdleConns:    1,
		IdleConnTimeout: 10 * time.Second,
	}
	return &Client{socket: path, hc: &http.Client{Transport: tr, Timeout: DefaultTimeout}}
}

// Socket is the path the client connects to.
func (c *Client) Socket() string { return c.socket }

// Error is an error answer of the daemon.
type Error struct {
	Code    int    // the HTTP status: 400, 403, 404, 405, 413, 500, 503
	Message string // the daemon's message
}

func (e *Error) Error() string { return e.Message }

// ErrNotRunning is wrapped by the errors of a client that found no daemon at its socket.
var ErrNotRunning = errors.New("no sesame daemon")

// Status returns the daemon's status.
func (c *Client) Status(ctx context.Context) (server.Status, error) {
	var st server.Status
	err := c.call(ctx, http.MethodGet, "/v1/status", nil, &st)
	return st, err
}

// Grants returns the live grants.
func (c *Client) Grants(ctx context.Context) ([]server.GrantStatus, error) {
	var gs Grants
	err := c.call(ctx, http.MethodGet, "/v1/grants", nil, &gs)
	return gs.Grants, err
}

// Stats returns the daemon's counters.
func (c *Client) Stats(ctx context.Context) (server.Stats, error) {
	var st server.Stats
	err := c.call(ctx, http.MethodGet, "/v1/stats", nil, &st)
	return st, err
}

// Grant asks for a break-glass grant.
func (c *Client) Grant(ctx context.Context, r server.GrantRequest) error {
	return c.call(ctx, http.MethodPost, "/v1/grant", r, nil)
}

// Revoke asks to remove grants.
func (c *Client) Revoke(ctx context.Context, r server.RevokeRequest) (server.RevokeResult, error) {
	var res server.RevokeResult
	err := c.call(ctx, http.MethodPost, "/v1/revoke", r, &res)
	return res, err
}

// Raw returns the body of GET path as the daemon sent it (for --json).
func (c *Client) Raw(ctx context.Context, path string) ([]byte, error) {
	var raw json.RawMessage
	err := c.call(ctx, http.MethodGet, path, nil, &raw)
	return raw, err
}

// call sends one request and decodes the answer into out (when not nil).
func (c *Client) call(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("control: encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://sesame"+path, body)
	if err != nil {
		return fmt.Errorf("control: %w", err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return c.dialError(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return fmt.Errorf("control: %s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e apiError
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = fmt.Sprintf("%s %s: %s", method, path, resp.Status)
		}
		return &Error{Code: resp.StatusCode, Message: e.Error}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("control: %s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// dialError explains a failed request: no daemon, no rights on the socket, or other.
func (c *Client) dialError(err error) error {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%w at %s: is it running? (connection refused)", ErrNotRunning, c.socket)
	case errors.Is(err, os.ErrNotExist), errors.Is(err, syscall.ENOENT):
		return fmt.Errorf("%w at %s: is it running? (no such socket)", ErrNotRunning, c.socket)
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("no access to %s: %s (permission denied)", c.socket, socketNeeds(c.socket))
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("the sesame daemon at %s did not answer in time: %w", c.socket, err)
	}
	return fmt.Errorf("control: %s: %w", c.socket, err)
}
