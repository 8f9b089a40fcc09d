// Package controltest is an in-memory control.Core for tests of the control socket and its
// clients.
package controltest

import (
	"context"
	"slices"
	"sync"

	"github.com/sesame-knock/sesame/internal/server"
)

// Core is a fake server: Status returns St with the live grants filled in, Grant and Revoke
// change the grants and record every request. Err, when set, is returned by every method that
// can fail. It is safe for concurrent use; lock Mu to read or change the fields while in use.
type Core struct {
	Mu       sync.Mutex
	St       server.Status
	Live     []server.GrantStatus
	Counters server.Stats
	Err      error
	Granted  []server.GrantRequest  // every Grant, in order
	Revoked  []server.RevokeRequest // every Revoke, in order
	Killed   int                    // what a Revoke with Kill reports per removed grant
}

// Status returns St with Grants set to the live grants.
func (c *Core) Status(context.Context) (server.Status, error) {
	c.Mu.Lock()
	defer c.Mu.Unlock()
	if c.Err != nil {
		return server.Status{}, c.Err
	}
	st := c.St
	st.Grants = slices.Clone(c.Live)
	return st, nil
}

// Grants returns the live grants.
func (c *Core) Grants(context.Context) ([]server.GrantStatus, error) {
	c.Mu.Lock()
	defer c.Mu.Unlock()
	if c.Err != nil {
		return nil, c.Err
	}
	return slices.Clone(c.Live), nil
}

// Grant records r and adds it to the live grants (replacing one on the same source and port).
func (c *Core) Grant(_ context.Context, r server.GrantRequest) error {
	c.Mu.Lock()
	defer c.Mu.Unlock()
	c.Granted = append(c.Granted, r)
	if c.Err != nil {
		return c.Err
	}
	c.Live = slices.DeleteFunc(c.Live, func(g server.GrantStatus) bool { return g.Src == r.Src && g.Port == r.Port })
	c.Live = append(c.Live, server.GrantStatus{Src: r.Src, Port: r.Port, Remaining: r.For, By: "operator", Kind: server.GrantOperator, Note: r.Note})
	return nil
}

// Revoke records r and removes the live grants it names.
func (c *Core) Revoke(_ context.Context, r server.RevokeRequest) (server.RevokeResult, error) {
	c.Mu.Lock()
	defer c.Mu.Unlock()
	c.Revoked = append(c.Revoked, r)
	if c.Err != nil {
		return server.RevokeResult{}, c.Err
	}
	n := len(c.Live)
	c.Live = slices.DeleteFunc(c.Live, func(g server.GrantStatus) bool {
		return r.All || g.Src == r.Src && (r.Port.IsZero() || g.Port == r.Port)
	})
	res := server.RevokeResult{Grants: n - len(c.Live)}
	if r.Kill {
		res.Killed = res.Grants * c.Killed
	}
	return res, nil
}

// Stats returns Counters.
func (c *Core) Stats() server.Stats {
	c.Mu.Lock()
	defer c.Mu.Unlock()
	return c.Counters
}
