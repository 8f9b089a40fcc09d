package benchkit

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/sesame-knock/sesame/internal/netnsbed"
)

// LinkBetween returns the addressing for frames sent on ifname of ns to the interface peerIf
// of peerNS (the other end of a veth pair).
func LinkBetween(ns, ifname, peerNS, peerIf string) (Link, error) {
	var l Link
	err := netnsbed.Do(ns, func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		l.Src, l.Ifindex = ifi.HardwareAddr, ifi.Index
		return nil
	})
	if err != nil {
		return l, fmt.Errorf("link: %w", err)
	}
	err = netnsbed.Do(peerNS, func() error {
		ifi, err := net.InterfaceByName(peerIf)
		if err != nil {
			return err
		}
		l.Dst = ifi.HardwareAddr
		return nil
	})
	if err != nil {
		return l, fmt.Errorf("link: %w", err)
	}
	return l, nil
}

// ProcUsage is a sample of a process's CPU time and memory.
type ProcUsage struct {
	CPU   time.Duration // utime + stime
	HWM   int64         // peak resident set (VmHWM), bytes
	RSS   int64         // resident set now (VmRSS), bytes
	Taken time.Time
}

const clockTick = 100 // USER_HZ on Linux

// ReadProc samples /proc/PID/stat and /proc/PID/status.
func ReadProc(pid int) (ProcUsage, error) {
	u := ProcUsage{Taken: time.Now()}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, fmt.Errorf("proc: %w", err)
	}
	// Fields after the command name, which is in parentheses and may contain spaces.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return u, errors.New("proc: malformed stat")
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return u, errors.New("proc: short stat")
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64) // field 14 utime
	st, _ := strconv.ParseInt(f[12], 10, 64) // field 15 stime
	u.CPU = time.Duration(ut+st) * time.Second / clockTick
	status, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return u, fmt.Errorf("proc: %w", err)
	}
	defer status.Close()
	sc := bufio.NewScanner(status)
	for sc.Scan() {
		line := sc.Text()
		for _, k := range []struct {
			name string
			dst  *int64
		}{{"VmHWM:", &u.HWM}, {"VmRSS:", &u.RSS}} {
			if strings.HasPrefix(line, k.name) {
				v := strings.Fields(line[len(k.name):])
				if len(v) > 0 {
					kb, _ := strconv.ParseInt(v[0], 10, 64)
					*k.dst = kb << 10
				}
			}
		}
	}
	return u, nil
}

// ResetPeak resets the VmHWM of pid to its current RSS (clear_refs 5).
func ResetPeak(pid int) error {
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		return fmt.Errorf("reset peak rss: %w", err)
	}
	return nil
}

// IfCounters are the packet counters of one interface.
type IfCounters struct{ RxPackets, RxDropped, TxPackets, TxDropped uint64 }

// ReadIf reads the counters of ifname inside ns from /proc/thread-self/net/dev.
func ReadIf(ns, ifname string) (IfCounters, error) {
	var c IfCounters
	err := netnsbed.Do(ns, func() error {
		b, err := os.ReadFile("/proc/thread-self/net/dev")
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(b), "\n") {
			name, rest, ok := strings.Cut(line, ":")
			if !ok || strings.TrimSpace(name) != ifname {
				continue
			}
			f := strings.Fields(rest)
			if len(f) < 12 {
				return errors.New("short net/dev line")
			}
			p := func(s string) uint64 { v, _ := strconv.ParseUint(s, 10, 64); return v }
			c = IfCounters{RxPackets: p(f[1]), RxDropped: p(f[3]), TxPackets: p(f[9]), TxDropped: p(f[11])}
			return nil
		}
		return fmt.Errorf("no interface %s", ifname)
	})
	if err != nil {
		return c, fmt.Errorf("interface counters: %w", err)
	}
	return c, nil
}
