// Package knock recognises knock sequences: a per-source state machine over doors, with an injected clock.
package knock

import (
	"net/netip"
	"strings"
	"time"

	"github.com/sesame-knock/sesame/internal/netport"
)

// TCP header flag bits, as in the TCP header's flags byte.
const (
	FIN uint8 = 0x01
	SYN uint8 = 0x02
	RST uint8 = 0x04
	PSH uint8 = 0x08
	ACK uint8 = 0x10
	URG uint8 = 0x20
)

// FlagNames maps knockd's flag names to bits.
var flagNames = []struct {
	name string
	bit  uint8
}{{"fin", FIN}, {"syn", SYN}, {"rst", RST}, {"psh", PSH}, {"ack", ACK}, {"urg", URG}}

// FlagBit returns the bit of a flag name (fin, syn, rst, psh, ack, urg; any case).
func FlagBit(name string) (uint8, bool) {
	for _, f := range flagNames {
		if strings.EqualFold(f.name, name) {
			return f.bit, true
		}
	}
	return 0, false
}

// TCPFlags is a condition on a TCP segment's flags: every bit in Set must be set and every bit in
// Clear must be clear; other bits do not matter. The zero value matches every segment.
type TCPFlags struct {
	Set, Clear uint8
}

// Match reports whether flags satisfy the condition.
func (f TCPFlags) Match(flags uint8) bool {
	return flags&f.Set == f.Set && flags&f.Clear == 0
}

// String returns the knockd form, as in "syn,!ack"; "" for no condition.
func (f TCPFlags) String() string {
	var parts []string
	for _, n := range flagNames {
		switch {
		case f.Set&n.bit != 0:
			parts = append(parts, n.name)
		case f.Clear&n.bit != 0:
			parts = append(parts, "!"+n.name)
		}
	}
	return strings.Join(parts, ",")
}

// Element is one knock of a sequence: a TCP or UDP port, or an ICMP echo (Port 0).
type Element = netport.Port

// Door is one knock sequence and who may knock it. What a door opens or runs lives in the
// configuration; the state machine only needs to know how to recognise it.
type Door struct {
	Name     string
	Sequence []Element
	// Flags applies to TCP knocks. A TCP packet that does not match is ignored: it neither
	// advances nor breaks a sequence.
	Flags TCPFlags
	// Timeout is the longest time from the first knock to the last.
	Timeout time.Duration
	// MinGap and MaxGap bound the time between two consecutive knocks (0: no bound).
	MinGap, MaxGap time.Duration
	// Sources restricts who may knock; empty means anyone.
	Sources []netip.Prefix
	// Target, when valid, is the only destination address this door listens on (knockd's
	// Target); otherwise the door listens on every address of the host.
	Target netip.Addr
}

// AllowsSource reports whether src may knock on d.
func (d *Door) AllowsSource(src netip.Addr) bool {
	if len(d.Sources) == 0 {
		return true
	}
	src = src.Unmap()
	for _, p := range d.Sources {
		if p.Contains(src) {
			return true
		}
	}
	return false
}
