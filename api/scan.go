package api

import (
	"bytes"
	"reflect"
	"strconv"
)

// maxPlainKeys bounds the keys plainObject tracks for duplicates; an
// object with more takes the full path.
const maxPlainKeys = 16

// plainPair is one key of a plain object and its value's JSON text.
type plainPair struct{ key, value []byte }

// plainObject reports whether b is one JSON object and nothing else but
// white space, whose keys are spelled without escapes, each exactly the
// name of one of fields and none twice, and whose values are strings,
// numbers, true, false or null, or arrays of those (scopes); it puts the
// pairs in kv and returns how many. Such a body needs none of the checks
// of the full path (unknown, repeated or miscased keys, trailing data):
// it only has to be unmarshalled. Anything else, valid or not, is false and is left to that
// path, which words the errors.
func plainObject(b []byte, fields map[string]fieldInfo, kv *[maxPlainKeys]plainPair) (int, bool) {
	if fields == nil {
		return 0, false
	}
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return 0, false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return 0, skipSpace(b, i+1) == len(b)
	}
	for n := 0; ; n++ {
		if n == maxPlainKeys || i >= len(b) || b[i] != '"' {
			return 0, false
		}
		j := i + 1
		for j < len(b) && b[j] != '"' && b[j] != '\\' && b[j] >= 0x20 {
			j++
		}
		if j >= len(b) || b[j] != '"' {
			return 0, false
		}
		key := b[i+1 : j]
		if _, ok := fields[string(key)]; !ok {
			return 0, false
		}
		for _, p := range kv[:n] {
			if bytes.Equal(p.key, key) {
				return 0, false
			}
		}
		i = skipSpace(b, j+1)
		if i >= len(b) || b[i] != ':' {
			return 0, false
		}
		start := skipSpace(b, i+1)
		var ok bool
		if start < len(b) && b[start] == '[' {
			i, ok = scalarArray(b, start)
		} else {
			i, ok = scalar(b, start)
		}
		if !ok {
			return 0, false
		}
		kv[n] = plainPair{key: key, value: b[start:i]}
		i = skipSpace(b, i)
		if i >= len(b) {
			return 0, false
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return n + 1, skipSpace(b, i+1) == len(b)
		default:
			return 0, false
		}
	}
}

// scalarArray scans the array at b[i] (its '['), of strings, numbers and
// literals only, and returns the index after it. An array holding arrays
// or objects is false: keys inside it would need the full path's checks.
func scalarArray(b []byte, i int) (int, bool) {
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == ']' {
		return i + 1, true
	}
	for {
		var ok bool
		if i, ok = scalar(b, i); !ok {
			return i, false
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return i, false
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case ']':
			return i + 1, true
		default:
			return i, false
		}
	}
}

// stringElems calls f with the text of each element of a JSON array that
// scalarArray accepted, and reports whether every element is a string of
// printable ASCII without escapes (f is not called past the first that
// is not).
func stringElems(v []byte, f func(text []byte)) bool {
	for i := skipSpace(v, 1); i < len(v)-1; {
		end, ok := scalar(v, i)
		if !ok {
			return false
		}
		text, ok := asciiString(v[i:end])
		if !ok {
			return false
		}
		f(text)
		i = skipSpace(v, end)
		if i < len(v) && v[i] == ',' {
			i = skipSpace(v, i+1)
		}
	}
	return true
}

// setStrings sets the []string fv from the text of a JSON array that
// scalarArray accepted, as json.Unmarshal would (an empty array is an
// empty slice, not nil), and reports whether it could: an element other
// than a string of printable ASCII without escapes is left to
// json.Unmarshal.
func setStrings(fv reflect.Value, v []byte) bool {
	n := 0
	if !stringElems(v, func([]byte) { n++ }) {
		return false
	}
	out := make([]string, 0, n)
	stringElems(v, func(text []byte) { out = append(out, string(text)) })
	fv.Set(reflect.ValueOf(out))
	return true
}

// stringsType is the type of a field setStrings sets.
var stringsType = reflect.TypeFor[[]string]()

// setPlain sets the fields of the struct v points to from the pairs of a
// plain object, as json.Unmarshal would, and reports whether it could: a
// string with escapes or other than ASCII, a number that is no integer of
// the field's size, a value of another JSON type than the field's, a
// field of another kind than string, integer or bool (null included), or
// one that encoding/json decodes in its own way (fieldInfo.index -1) is
// left to json.Unmarshal (false; v may then be set in part, and Unmarshal
// sets it all).
func setPlain(v any, fields map[string]fieldInfo, kv []plainPair) bool {
	sv := reflect.ValueOf(v).Elem()
	for _, p := range kv {
		f := fields[string(p.key)]
		if f.index < 0 {
			return false
		}
		fv := sv.Field(f.index)
		if string(p.value) == "null" {
			switch fv.Kind() {
			case reflect.String, reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
				reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
				continue // encoding/json leaves a string, integer or bool as it is
			}
			// A slice, map or pointer is set to nil, a json.RawMessage to
			// "null": encoding/json's to decide.
			return false
		}
		if p.value[0] == '[' {
			if fv.Type() != stringsType || !setStrings(fv, p.value) {
				return false
			}
			continue
		}
		switch c := p.value[0]; fv.Kind() {
		case reflect.String:
			text, ok := asciiString(p.value)
			if !ok {
				return false
			}
			fv.SetString(string(text))
		case reflect.Bool:
			switch string(p.value) {
			case "true":
				fv.SetBool(true)
			case "false":
				fv.SetBool(false)
			default:
				return false
			}
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			if c != '-' && (c < '0' || c > '9') {
				return false
			}
			n, err := strconv.ParseInt(string(p.value), 10, 64)
			if err != nil || fv.OverflowInt(n) {
				return false
			}
			fv.SetInt(n)
		case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			if c < '0' || c > '9' {
				return false
			}
			n, err := strconv.ParseUint(string(p.value), 10, 64)
			if err != nil || fv.OverflowUint(n) {
				return false
			}
			fv.SetUint(n)
		default:
			return false
		}
	}
	return true
}

// asciiString returns the text of a JSON string of printable ASCII
// without escapes.
func asciiString(v []byte) ([]byte, bool) {
	if len(v) < 2 || v[0] != '"' {
		return nil, false
	}
	text := v[1 : len(v)-1]
	for _, c := range text {
		if c < 0x20 || c > 0x7e || c == '\\' {
			return nil, false
		}
	}
	return text, true
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// scalar scans the string, number or literal at b[i:] and returns the
// index after it.
func scalar(b []byte, i int) (int, bool) {
	if i >= len(b) {
		return i, false
	}
	switch c := b[i]; {
	case c == '"':
		return quoted(b, i+1)
	case c == '-' || ('0' <= c && c <= '9'):
		return number(b, i)
	case c == 't':
		return literal(b, i, "true")
	case c == 'f':
		return literal(b, i, "false")
	case c == 'n':
		return literal(b, i, "null")
	}
	return i, false
}

// quoted scans the rest of a string whose opening quote is before b[i].
func quoted(b []byte, i int) (int, bool) {
	for i < len(b) {
		switch c := b[i]; {
		case c == '"':
			return i + 1, true
		case c < 0x20:
			return i, false
		case c == '\\':
			if i+1 >= len(b) {
				return i, false
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) {
					return i, false
				}
				for _, h := range b[i+2 : i+6] {
					if !isHex(h) {
						return i, false
					}
				}
				i += 6
			default:
				return i, false
			}
		default:
			i++
		}
	}
	return i, false
}

func isHex(c byte) bool {
	return ('0' <= c && c <= '9') || ('a' <= c && c <= 'f') || ('A' <= c && c <= 'F')
}

// number scans a JSON number: -? (0 | [1-9][0-9]*) (.[0-9]+)? ([eE][+-]?[0-9]+)?
func number(b []byte, i int) (int, bool) {
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		i = digits(b, i)
	default:
		return i, false
	}
	if i < len(b) && b[i] == '.' {
		j := digits(b, i+1)
		if j == i+1 {
			return i, false
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digits(b, i)
		if j == i {
			return i, false
		}
		i = j
	}
	return i, true
}

func digits(b []byte, i int) int {
	for i < len(b) && '0' <= b[i] && b[i] <= '9' {
		i++
	}
	return i
}

func literal(b []byte, i int, word string) (int, bool) {
	if len(b)-i < len(word) || string(b[i:i+len(word)]) != word {
		return i, false
	}
	return i + len(word), true
}
