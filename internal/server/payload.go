package server

import (
	"crypto/subtle"

	"github.com/sesame-knock/sesame/internal/config"
	"github.com/sesame-knock/sesame/internal/knock"
)

// knockPayloads maps each knock element that must carry a payload to it ([[door]] sequence
// entries with payload; config.Load makes them the same wherever an element is used).
func knockPayloads(cfg *config.Config) map[knock.Element][]byte {
	var m map[knock.Element][]byte
	for _, d := range cfg.Doors {
		for i, el := range d.Sequence {
			if p := d.Payload(i); p != nil {
				if m == nil {
					m = map[knock.Element][]byte{}
				}
				m[el] = p
			}
		}
	}
	return m
}

// payloadOK reports whether a knock on el with payload may count: el needs no payload, or
// payload is exactly the one it needs. The kernel filter already drops most wrong ones; this
// holds where it passes more (a UDP guard range over the port, every ping with [spa] icmp).
func (st *state) payloadOK(el knock.Element, payload []byte) bool {
	want, ok := st.payloads[el]
	return !ok || subtle.ConstantTimeCompare(payload, want) == 1
}

// knockSourcePorts maps each knock element of a door with source_ports to them (config.Load
// makes them the same for every door that knocks on an element).
func knockSourcePorts(cfg *config.Config) map[knock.Element][]config.PortRange {
	var m map[knock.Element][]config.PortRange
	for _, d := range cfg.Doors {
		if len(d.SourcePorts) == 0 {
			continue
		}
		for _, el := range d.Sequence {
			if m == nil {
				m = map[knock.Element][]config.PortRange{}
			}
			m[el] = d.SourcePorts
		}
	}
	return m
}

// sourcePortOK reports whether a knock on el from source port port may count.
func (st *state) sourcePortOK(el knock.Element, port uint16) bool {
	rs, ok := st.srcPorts[el]
	return !ok || config.PortsAllow(rs, port)
}
