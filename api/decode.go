package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strings"
	"sync"

	"github.com/tokenstore/tokenstore/api/wire"
)

// MaxBody is the largest request body accepted.
const MaxBody = 64 << 10

// decodeJSON reads exactly one JSON object into v: unknown fields, wrong
// types, trailing data, duplicate keys, keys in another case and bodies
// over MaxBody are rejected with a clear code. An empty body decodes as {}
// when emptyOK.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any, emptyOK bool) *Error {
	return decodeStrict(http.MaxBytesReader(w, r.Body, MaxBody), v, emptyOK)
}

func decodeStrict(body io.Reader, v any, emptyOK bool) *Error {
	buf := bodyBuffers.Get().(*bytes.Buffer)
	defer putBodyBuffer(buf)
	if _, err := buf.ReadFrom(body); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return tooLarge()
		}
		return errorf(http.StatusBadRequest, wire.CodeInvalidJSON, "The body could not be read.")
	}
	// The buffer goes back to the pool: what v keeps must be copies, as
	// encoding/json makes them (strings, json.RawMessage, []byte).
	b := buf.Bytes()
	// Most bodies are one flat object of known keys: unmarshalled as is,
	// they need none of the checks below. A type error is worded there.
	fields := structFields(v)
	var kv [maxPlainKeys]plainPair
	if n, ok := plainObject(b, fields, &kv); ok && (setPlain(v, fields, kv[:n]) || json.Unmarshal(b, v) == nil) {
		return nil
	}
	if e := decodeInto(b, v, emptyOK); e != nil {
		return e
	}
	// encoding/json keeps the last of two equal keys and matches keys
	// regardless of case: {"subject":"u2","subject":"u3"} or "Subject"
	// would be read as something the caller may not have meant.
	return exactKeys(b, v)
}

// bodyBuffers hold request bodies while they are decoded.
var bodyBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// maxPooledBody is the largest buffer kept for reuse: a rare large body
// does not pin its memory.
const maxPooledBody = 16 << 10

func putBodyBuffer(buf *bytes.Buffer) {
	if buf.Cap() <= maxPooledBody {
		buf.Reset()
		bodyBuffers.Put(buf)
	}
}

// structFields returns the JSON fields of the struct v points to, nil if
// it is no pointer to a struct, a nil one, or one of a type that decodes
// itself.
func structFields(v any) map[string]fieldInfo {
	t := reflect.TypeOf(v)
	if t == nil || t.Kind() != reflect.Pointer || reflect.ValueOf(v).IsNil() {
		return nil
	}
	if m, ok := plainFieldCache.Load(t); ok {
		return m.(map[string]fieldInfo)
	}
	var m map[string]fieldInfo
	if t.Elem().Kind() == reflect.Struct && !decodesItself(t.Elem()) {
		m = jsonFields(t.Elem())
	}
	plainFieldCache.Store(t, m)
	return m
}

var plainFieldCache sync.Map // pointer reflect.Type -> structFields' answer

func decodeInto(b []byte, v any, emptyOK bool) *Error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if errors.Is(err, io.EOF) && emptyOK {
		return nil
	}
	if err == nil {
		if _, terr := dec.Token(); !errors.Is(terr, io.EOF) {
			var mbe *http.MaxBytesError
			if errors.As(terr, &mbe) {
				return tooLarge()
			}
			return errorf(http.StatusBadRequest, wire.CodeInvalidJSON, "The body must hold exactly one JSON object.")
		}
		return nil
	}
	var (
		mbe *http.MaxBytesError
		ute *json.UnmarshalTypeError
		se  *json.SyntaxError
	)
	switch {
	case errors.As(err, &mbe):
		return tooLarge()
	case errors.As(err, &ute):
		if ute.Field == "" {
			return errorf(http.StatusBadRequest, wire.CodeInvalidJSON, "The body must be a JSON object.")
		}
		return errorf(http.StatusBadRequest, wire.CodeInvalidJSON, "Field %q must be %s, not %s.", ute.Field, jsonType(ute.Type.Kind().String()), ute.Value)
	case errors.As(err, &se):
		return errorf(http.StatusBadRequest, wire.CodeInvalidJSON, "The body is not valid JSON (at byte %d).", se.Offset)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return errorf(http.StatusBadRequest, wire.CodeInvalidJSON, "The body is empty or cut short.")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return errorf(http.StatusBadRequest, wire.CodeUnknownField, "Unknown field %s.", strings.TrimPrefix(err.Error(), "json: unknown field "))
	}
	return errorf(http.StatusBadRequest, wire.CodeInvalidJSON, "The body is not valid JSON.")
}

func tooLarge() *Error {
	return errorf(http.StatusRequestEntityTooLarge, wire.CodeBodyTooLarge, "The body exceeds %d bytes.", MaxBody)
}

func jsonType(kind string) string {
	switch kind {
	case "string":
		return "a string"
	case "slice":
		return "an array"
	case "struct", "map":
		return "an object"
	case "bool":
		return "a boolean"
	}
	return "a number"
}
