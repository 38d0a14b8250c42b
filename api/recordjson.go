package api

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/tokenstore/tokenstore/api/wire"
)

// recordBuffers hold record answers while they are written.
var recordBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// writeRecord writes a record as the JSON answer with status: the bytes
// writeJSON would write, without reflection when appendRecord can.
func writeRecord(w http.ResponseWriter, status int, r *wire.Record) {
	writeAppended(w, status, r, func(b []byte, r *wire.Record) ([]byte, bool) {
		b, ok := appendRecord(b, r)
		return append(b, '\n'), ok
	})
}

// writeAppended writes v as the JSON answer with status: what appendJSON
// appends to a pooled buffer (writeJSON's bytes, its newline included),
// or, for a v it leaves to encoding/json, writeJSON's.
func writeAppended[T any](w http.ResponseWriter, status int, v *T, appendJSON func([]byte, *T) ([]byte, bool)) {
	bp := recordBuffers.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= maxPooledBody {
			recordBuffers.Put(bp)
		}
	}()
	body, ok := appendJSON((*bp)[:0], v)
	*bp = body // grown, it is pooled so
	if !ok {
		writeJSON(w, status, v)
		return
	}
	w.Header()["Content-Type"] = jsonContentType
	w.WriteHeader(status)
	w.Write(body)
}

// appendRecord appends r as encoding/json encodes it, and true; or false
// for a record it leaves to encoding/json: one with data (which
// encoding/json compacts), a text with anything but printable ASCII
// outside '"', '\\', '<', '>' and '&' (which it escapes), or a time it
// would not write as UTC RFC 3339.
func appendRecord(b []byte, r *wire.Record) ([]byte, bool) {
	if len(r.Data) > 0 {
		return b, false
	}
	ok := true
	str := func(key, v string) {
		b = append(b, key...)
		ok = ok && plainText(v)
		b = append(b, '"')
		b = append(b, v...)
		b = append(b, '"')
	}
	tm := func(key string, t *time.Time) {
		b = append(b, key...)
		var plain bool
		b, plain = appendTime(b, t)
		ok = ok && plain
	}
	str(`{"id":`, r.ID)
	str(`,"kind":`, r.Kind)
	str(`,"status":`, r.Status)
	str(`,"subject":`, r.Subject)
	str(`,"client_id":`, r.ClientID)
	b = append(b, `,"scopes":`...)
	if r.Scopes == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, sc := range r.Scopes {
			if i > 0 {
				b = append(b, ',')
			}
			str("", sc)
		}
		b = append(b, ']')
	}
	str(`,"family":`, r.Family)
	str(`,"rlc":`, r.RLC)
	b = append(b, `,"max_uses":`...)
	b = strconv.AppendInt(b, r.MaxUses, 10)
	b = append(b, `,"uses_left":`...)
	b = strconv.AppendInt(b, r.UsesLeft, 10)
	tm(`,"created_at":`, &r.CreatedAt)
	tm(`,"expires_at":`, r.ExpiresAt)
	tm(`,"last_used_at":`, r.LastUsedAt)
	str(`,"ip":`, r.IP)
	str(`,"user_agent":`, r.UserAgent)
	str(`,"title":`, r.Title)
	if r.Generator != "" {
		str(`,"generator":`, r.Generator)
	}
	if r.InvalidatedAt != nil {
		tm(`,"invalidated_at":`, r.InvalidatedAt)
	}
	if r.Reason != "" {
		str(`,"reason":`, r.Reason)
	}
	b = append(b, '}')
	return b, ok
}

// appendTime appends t as encoding/json encodes it, and true; false for a
// time it would not write as UTC RFC 3339 (b then holds nothing of it).
func appendTime(b []byte, t *time.Time) ([]byte, bool) {
	if t == nil {
		return append(b, "null"...), true
	}
	if t.Location() != time.UTC || t.Year() < 0 || t.Year() > 9999 {
		return b, false
	}
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"'), true
}

// writeIssued writes the answer of an issue with status: the bytes
// writeJSON would write, without reflection when appendIssued can.
func writeIssued(w http.ResponseWriter, status int, r *wire.IssueResponse) {
	writeAppended(w, status, r, appendIssued)
}

// appendIssued appends r as encoding/json encodes it, its newline
// included, and true; or false for an answer it leaves to encoding/json
// (as appendRecord).
func appendIssued(b []byte, r *wire.IssueResponse) ([]byte, bool) {
	ok := plainText(r.Token) && plainText(r.ID) && plainText(r.Kind) && plainText(r.Family)
	if !ok {
		return b, false
	}
	b = append(b, `{"token":"`...)
	b = append(b, r.Token...)
	b = append(b, `","id":"`...)
	b = append(b, r.ID...)
	b = append(b, `","kind":"`...)
	b = append(b, r.Kind...)
	b = append(b, `","expires_at":`...)
	if b, ok = appendTime(b, r.ExpiresAt); !ok {
		return b, false
	}
	b = append(b, `,"index":`...)
	b = strconv.AppendUint(b, r.Index, 10)
	if r.Family != "" {
		b = append(b, `,"family":"`...)
		b = append(b, r.Family...)
		b = append(b, '"')
	}
	return append(b, "}\n"...), true
}

// plainText reports whether encoding/json writes s as it is, between
// quotes.
func plainText(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}
