package config

import (
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/sesame-knock/sesame/internal/knock"
	"github.com/sesame-knock/sesame/internal/netport"
)

// MaxPayload is the longest payload a knock may be required to carry, in bytes.
const MaxPayload = 64

// ParsePayload parses a knock payload: "hex:" and 1 to MaxPayload bytes in hexadecimal.
func ParsePayload(s string) ([]byte, error) {
	h, ok := strings.CutPrefix(s, "hex:")
	if !ok {
		return nil, fmt.Errorf("%q: a payload is written hex:BYTES, as in hex:cafe01", s)
	}
	b, err := hex.DecodeString(h)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%q: not hexadecimal bytes", s)
	case len(b) == 0 || len(b) > MaxPayload:
		return nil, fmt.Errorf("%q: a payload is 1-%d bytes", s, MaxPayload)
	}
	return b, nil
}

// FormatPayload is the configuration form of a payload, "hex:cafe01".
func FormatPayload(b []byte) string { return "hex:" + hex.EncodeToString(b) }

// knockElem is a native sequence element with an optional payload: "8000/udp", or the inline
// table { port = "8000/udp", payload = "hex:cafe01" }.
type knockElem struct {
	el      knock.Element
	payload []byte
}

func (e *knockElem) decode(data any) error {
	switch v := data.(type) {
	case string:
		el, err := ParseElement(v)
		e.el = el
		return err
	case map[string]any:
		for _, k := range slices.Sorted(maps.Keys(v)) {
			if k != "port" && k != "payload" {
				return fmt.Errorf("unknown key %q (want port and payload)", k)
			}
		}
		port, ok := v["port"].(string)
		if !ok {
			return fmt.Errorf("port: want a string such as \"8000/udp\"")
		}
		el, err := ParseElement(port)
		if err != nil {
			return err
		}
		e.el = el
		p, ok := v["payload"].(string)
		if !ok {
			return fmt.Errorf("payload: want a string such as \"hex:cafe01\"")
		}
		if el.Proto == netport.TCP {
			return fmt.Errorf("%s: only a udp or icmp knock carries a payload", elementString(el))
		}
		e.payload, err = ParsePayload(p)
		return err
	}
	return fmt.Errorf("want \"PORT/PROTO\" or { port = \"PORT/PROTO\", payload = \"hex:...\" }, got %s", typeName(data))
}

// checkPayloads refuses a knock port that requires a payload in one place and another payload,
// or none, in another: the capture filter and the knock machine know a knock by its port.
func checkPayloads(cfg *Config) error {
	type use struct {
		door, elem int
		payload    []byte
	}
	seen := map[knock.Element]use{}
	for i, d := range cfg.Doors {
		for j, el := range d.Sequence {
			p := d.Payload(j)
			u, ok := seen[el]
			if !ok {
				seen[el] = use{i, j, p}
				continue
			}
			if !slices.Equal(u.payload, p) {
				what := func(b []byte) string {
					if b == nil {
						return "no payload"
					}
					return "payload " + FormatPayload(b)
				}
				return problem(atDoor(i), doorSection(i, d.Name), "sequence", "element %d: %s with %s, but %s element %d has %s: "+
					"a knock port needs the same payload everywhere", j+1, elementString(el), what(p), doorSection(u.door, cfg.Doors[u.door].Name), u.elem+1, what(u.payload))
			}
		}
	}
	return nil
}

// elementString is el as a sequence element is written: "8000/udp", "icmp".
func elementString(el knock.Element) string {
	if el.Proto == netport.ICMP {
		return "icmp"
	}
	return fmt.Sprintf("%d/%s", el.Num, el.Proto)
}
