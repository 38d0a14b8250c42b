package api

import (
	"bytes"
	"encoding"
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"sync"

	"github.com/tokenstore/tokenstore/api/wire"
)

var rawMessage = reflect.TypeFor[json.RawMessage]()

// exactKeys walks a body that decoded into v and refuses an object with a
// key twice, or a key that names a field of v in another case. Opaque
// values (json.RawMessage, such as a token's data) are the caller's and
// are not walked.
func exactKeys(b []byte, v any) *Error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if _, err := dec.Token(); err != nil {
		return nil // an empty body, decoded as {}
	}
	// The '{' was read: walk the rest of the object as v's type.
	k := &keyWalk{dec: dec}
	return k.object(reflect.TypeOf(v), "")
}

// keyWalk reads one JSON value at a time from dec, knowing the Go type it
// decoded into.
type keyWalk struct{ dec *json.Decoder }

// value walks the next value, of type t.
func (k *keyWalk) value(t reflect.Type, path string) *Error {
	tok, err := k.dec.Token()
	if err != nil {
		return nil // decoding already succeeded: cannot happen
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return nil
	}
	switch d {
	case '{':
		return k.object(t, path)
	case '[':
		return k.array(t, path)
	}
	return nil
}

// object walks the rest of an object whose '{' was read.
func (k *keyWalk) object(t reflect.Type, path string) *Error {
	t = indirect(t)
	var fields map[string]fieldInfo
	switch {
	case t == nil || t == rawMessage:
		return k.skipRest()
	case t.Kind() == reflect.Struct:
		fields = jsonFields(t)
	case t.Kind() != reflect.Map:
		return k.skipRest()
	}
	seen := map[string]bool{}
	for k.dec.More() {
		tok, err := k.dec.Token()
		if err != nil {
			return nil
		}
		key, _ := tok.(string)
		name := join(path, key)
		if seen[key] {
			return errorf(http.StatusBadRequest, wire.CodeInvalidJSON, "Key %q appears more than once.", name)
		}
		seen[key] = true
		var vt reflect.Type
		if fields == nil {
			vt = t.Elem()
		} else if f, exact := fields[key]; exact {
			vt = f.typ
		} else if want, ok := foldMatch(fields, key); ok {
			return errorf(http.StatusBadRequest, wire.CodeInvalidJSON, "Key %q must be spelled %q: keys are case-sensitive.", name, join(path, want))
		}
		if e := k.value(vt, name); e != nil {
			return e
		}
	}
	_, _ = k.dec.Token() // '}'
	return nil
}

// array walks the rest of an array whose '[' was read.
func (k *keyWalk) array(t reflect.Type, path string) *Error {
	t = indirect(t)
	if t == nil || t == rawMessage || (t.Kind() != reflect.Slice && t.Kind() != reflect.Array) {
		return k.skipRest()
	}
	for k.dec.More() {
		if e := k.value(t.Elem(), path+"[]"); e != nil {
			return e
		}
	}
	_, _ = k.dec.Token() // ']'
	return nil
}

// skipRest reads up to the end of the object or array just opened.
func (k *keyWalk) skipRest() *Error {
	for depth := 1; depth > 0; {
		tok, err := k.dec.Token()
		if err != nil {
			return nil
		}
		if d, ok := tok.(json.Delim); ok {
			if d == '{' || d == '[' {
				depth++
			} else {
				depth--
			}
		}
	}
	return nil
}

// foldMatch finds the field that key names in another case.
func foldMatch(fields map[string]fieldInfo, key string) (string, bool) {
	for name := range fields {
		if strings.EqualFold(name, key) {
			return name, true
		}
	}
	return "", false
}

func indirect(t reflect.Type) reflect.Type {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t != nil && t.Kind() == reflect.Interface {
		return nil
	}
	return t
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// fieldInfo is a field as encoding/json sees it: its type, and its index
// in the struct, which setPlain may set by its kind; -1 for a field it
// must leave to encoding/json: one promoted from an embedded struct,
// tagged ",string", or whose type (or a pointer to it) implements
// json.Unmarshaler or encoding.TextUnmarshaler.
type fieldInfo struct {
	typ   reflect.Type
	index int
}

var (
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// decodesItself reports whether encoding/json hands a value of type t to
// its own UnmarshalJSON or UnmarshalText method.
func decodesItself(t reflect.Type) bool {
	for _, u := range []reflect.Type{jsonUnmarshaler, textUnmarshaler} {
		if t.Implements(u) || reflect.PointerTo(t).Implements(u) {
			return true
		}
	}
	return false
}

// hasOption reports whether the options of a json tag (after its name)
// hold opt.
func hasOption(opts, opt string) bool {
	for opts != "" {
		var o string
		o, opts, _ = strings.Cut(opts, ",")
		if o == opt {
			return true
		}
	}
	return false
}

var fieldCache sync.Map // reflect.Type -> map[string]fieldInfo

// jsonFields returns the JSON names of a struct's fields, embedded
// structs' included, as encoding/json names them.
func jsonFields(t reflect.Type) map[string]fieldInfo {
	if m, ok := fieldCache.Load(t); ok {
		return m.(map[string]fieldInfo)
	}
	m := map[string]fieldInfo{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" && indirect(f.Type) != nil && indirect(f.Type).Kind() == reflect.Struct {
			for n, fi := range jsonFields(indirect(f.Type)) {
				if _, shadowed := m[n]; !shadowed {
					m[n] = fieldInfo{typ: fi.typ, index: -1}
				}
			}
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		index := i
		if decodesItself(f.Type) || hasOption(opts, "string") {
			index = -1
		}
		m[name] = fieldInfo{typ: f.Type, index: index}
	}
	fieldCache.Store(t, m)
	return m
}
