package config

import (
	"errors"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// positions finds the line of a key from the positions BurntSushi/toml records while it parses.
// The decoder keeps them private, but reports the position of the key being decoded when an
// Unmarshaler fails: decoding the document into a probe type that fails at exactly one key
// yields that key's line. BurntSushi records one position per dotted key, so for the tables of an
// array it keeps the last one's: the probe then decodes the document cut just before the next
// table of the array, where the one wanted is the last.
type positions struct {
	data string
	md   toml.MetaData
	// count gives the number of tables in each array of tables (by toml.Key.String()).
	count map[string]int
	// budget bounds the bytes probes may parse, since each parses a document again.
	budget int
}

// maxProbeBytes bounds the parsing done to locate one error (a few hundred milliseconds).
const maxProbeBytes = 16 << 20

// errProbe marks the failure of a probe.
var errProbe = errors.New("sesame: position probe")

type probeHit struct{}

func (*probeHit) UnmarshalTOML(any) error { return errProbe }

// line returns the line of the key at p, of the first key under it (a dotted key's implicit
// tables have no position of their own), or of the nearest table that holds it; 0 if unknown.
func (ps *positions) line(p place) int {
	ps.budget = maxProbeBytes
	data := ps.data
	if p.index >= 0 {
		data = ps.cut(p.table, p.index)
	}
	full := append(slices.Clone(p.table), p.key...)
	for n := len(full); n > 0; n-- {
		if l := ps.probe(data, full[:n]); l > 0 {
			return l
		}
		if n == len(full) {
			for _, k := range ps.md.Keys() {
				if len(k) > n && slices.Equal(k[:n], full) {
					if l := ps.probe(data, k); l > 0 {
						return l
					}
					break
				}
			}
		}
	}
	return 0
}

// cut returns the document up to the end of the index-th table of the array at key: without the
// tables after it, found one at a time from the last.
func (ps *positions) cut(key toml.Key, index int) string {
	data := ps.data
	for n := ps.count[key.String()]; n > index+1; n-- {
		_, start, ok := ps.probeAt(data, key)
		if !ok {
			return ps.data // an inline array: no headers to cut at
		}
		data = data[:strings.LastIndexByte(data[:start], '\n')+1]
	}
	return data
}

func (ps *positions) probe(data string, key toml.Key) int {
	line, _, _ := ps.probeAt(data, key)
	return line
}

// probeAt decodes data into a type that fails at key and returns the line and byte offset
// BurntSushi recorded for it.
func (ps *positions) probeAt(data string, key toml.Key) (line, start int, ok bool) {
	if ps.budget < len(data) {
		return 0, 0, false
	}
	ps.budget -= len(data)
	t := reflect.TypeFor[probeHit]()
	for i := len(key) - 1; i >= 0; i-- {
		if i < len(key)-1 {
			if typ := ps.md.Type(key[:i+1]...); typ == "ArrayHash" || typ == "Array" {
				t = reflect.SliceOf(t)
			}
		}
		fields := []reflect.StructField{{Name: "F", Type: t, Tag: tomlTag(key[i])}}
		// BurntSushi matches a field case-insensitively when no field has the key's exact name:
		// keys that differ only in case get fields of their own, which take their values.
		for _, k := range ps.md.Keys() {
			if len(k) > i && slices.Equal(k[:i], key[:i]) && k[i] != key[i] && strings.EqualFold(k[i], key[i]) &&
				!slices.ContainsFunc(fields, func(f reflect.StructField) bool { return f.Tag == tomlTag(k[i]) }) {
				fields = append(fields, reflect.StructField{Name: "F" + strconv.Itoa(len(fields)), Type: reflect.TypeFor[toml.Primitive](), Tag: tomlTag(k[i])})
			}
		}
		t = reflect.StructOf(fields)
	}
	_, err := toml.Decode(data, reflect.New(t).Interface())
	var pe toml.ParseError
	if !errors.As(err, &pe) || pe.Message != errProbe.Error() || pe.Position.Line == 0 {
		return 0, 0, false
	}
	// Line is where the value ends (a multi-line string's last line); Start is where it begins.
	start = pe.Position.Start
	if start < 0 || start > len(data) {
		return pe.Position.Line, 0, false
	}
	return 1 + strings.Count(data[:start], "\n"), start, true
}

func tomlTag(name string) reflect.StructTag { return reflect.StructTag("toml:" + strconv.Quote(name)) }
