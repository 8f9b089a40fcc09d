package sshproxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestConnectRetries: attempts fail (refused, then dropped) until the port "opens"; Connect
// keeps trying and returns the connection of the first attempt that succeeds.
func TestConnectRetries(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dst := ln.Addr().(*net.TCPAddr).AddrPort()
	var n atomic.Int32
	dial := func(ctx context.Context, d netip.AddrPort) (net.Conn, error) {
		switch n.Add(1) {
		case 1:
			return nil, &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}
		case 2:
			<-ctx.Done() // a dropped SYN: the attempt's own timeout ends it
			return nil, ctx.Err()
		}
		return TCPDialer(ctx, d)
	}
	start := time.Now()
	c, err := Connect(context.Background(), dst, 5*time.Second, dial)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if got := n.Load(); got != 3 {
		t.Errorf("%d attempts, want 3", got)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("took %v: the backoff is not short", el)
	}
}

// TestConnectGivesUp: a port that never opens ends in ErrNoAnswer after about the wait,
// saying what the last attempt saw.
func TestConnectGivesUp(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"refused", &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, "connection refused"},
		{"dropped", nil, "dropped"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dial := func(ctx context.Context, _ netip.AddrPort) (net.Conn, error) {
				if tc.err != nil {
					return nil, tc.err
				}
				<-ctx.Done()
				return nil, ctx.Err()
			}
			start := time.Now()
			_, err := Connect(context.Background(), netip.MustParseAddrPort("198.18.0.1:22"), 700*time.Millisecond, dial)
			el := time.Since(start)
			if !errors.Is(err, ErrNoAnswer) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "198.18.0.1:22 after 700ms") {
				t.Fatalf("err = %v", err)
			}
			if el < 600*time.Millisecond || el > 1500*time.Millisecond {
				t.Errorf("gave up after %v, want about 700ms", el)
			}
		})
	}
}

// TestPipeHalfClose: the client's input ends first; the server sees EOF (a FIN), and its
// answer, sent after that, still reaches the output in full before Pipe returns.
func TestPipeHalfClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := make(chan error, 1)
	go func() {
		s, err := ln.Accept()
		if err != nil {
			served <- err
			return
		}
		defer s.Close()
		s.SetDeadline(time.Now().Add(5 * time.Second))
		got, err := io.ReadAll(s) // until the client's FIN
		if err != nil {
			served <- err
			return
		}
		_, err = s.Write(append([]byte("got: "), bytes.ToUpper(got)...))
		served <- err
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := Pipe(ctx, c, strings.NewReader("hello"), &out); err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	if out.String() != "got: HELLO" {
		t.Errorf("output %q, want %q", out.String(), "got: HELLO")
	}
}

// TestPipeServerCloses: the server closes while the input is still open (ssh waits on a
// terminal); Pipe returns at once.
func TestPipeServerCloses(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		s, err := ln.Accept()
		if err == nil {
			s.Write([]byte("bye"))
			s.Close()
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	in, w := io.Pipe() // never written: blocks like an idle stdin
	defer w.Close()
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- Pipe(context.Background(), c, in, &out) }()
	select {
	case err := <-done:
		if err != nil || out.String() != "bye" {
			t.Fatalf("err %v, output %q", err, out.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Pipe did not return after the server closed")
	}
}
