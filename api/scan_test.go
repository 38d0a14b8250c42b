package api

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/tokenstore/tokenstore/api/wire"
)

// fullDecode is decodeStrict without the plain-object path.
func fullDecode(b []byte, v any, emptyOK bool) *Error {
	if e := decodeInto(b, v, emptyOK); e != nil {
		return e
	}
	return exactKeys(b, v)
}

var scanSeeds = []string{
	`{"token":"tks_ac_x"}`,
	` {"token" : "tks_ac_x" , "consistency":"local"} ` + "\n",
	`{"token":"a\"b\\c\/d\b\f\n\r\t\u00e9\uD83D\uDE00"}`,
	`{"token":"é ü 日本"}`,
	`{"token":"\xff\xfe"}`,
	`{"min_index":0}`, `{"min_index":-0}`, `{"min_index":12}`, `{"min_index":1.5}`, `{"min_index":1e3}`,
	`{"min_index":-1}`, `{"min_index":01}`, `{"min_index":1.}`, `{"min_index":1e}`, `{"min_index":.5}`,
	`{"min_index":18446744073709551616}`, `{"min_index":"7"}`, `{"min_index":null}`,
	`{"with_data":true}`, `{"with_data":false}`, `{"with_data":tru}`, `{"with_data":truex}`, `{"with_data":1}`,
	`{"token":null}`, `{"token":1}`, `{"token":["a"]}`, `{"token":{"a":1}}`,
	`{"token":"a","token":"b"}`, `{"Token":"a"}`, `{"TOKEN":"a"}`, `{"tok\u0065n":"a"}`, `{"other":"a"}`,
	`{"token":"a"}{}`, `{"token":"a"} x`, `{"token":"a",}`, `{,}`, `{"token" "a"}`, `{"token":"a"`,
	`{"token":"a\x01"}`, `{"token":"\u12"}`, `{"token":"\x"}`, `{"token":"a`, `{"tok`,
	`{}`, ` { } `, ``, ` `, `[]`, `null`, `"x"`, `1`, `{"token":"a"}]`,
	`{"scope":"s","nonce":"n","timestamp":1764590000}`,
	`{"scope":"s","nonce":"n","timestamp":1764590000.5}`,
	`{"scope":"s","nonce":"n","timestamp":99999999999999999999}`,
	`{"scope":"s","nonce":"n","timestamp":-5}`, `{"scope":"s","nonce":"n","timestamp":-9223372036854775809}`,
	`{"scope":"s","nonce":"n","timestamp":"5"}`, `{"scope":5}`, `{"scope":true}`, `{"scope":null,"nonce":null}`,
	`{"min_index":18446744073709551615}`, `{"min_index":true}`, `{"with_data":"true"}`, `{"with_data":null}`,
	`{"token":"~ !#$%&'()*+,-./:;<=>?@[]^_{|}"}`, `{"token":"\u007f"}`, "{\"token\":\"\x7f\"}",
}

func sameDecode(t *testing.T, body string, newV func() any) {
	t.Helper()
	for _, emptyOK := range []bool{false, true} {
		fast, full := newV(), newV()
		ef := decodeStrict(bytes.NewReader([]byte(body)), fast, emptyOK)
		eg := fullDecode([]byte(body), full, emptyOK)
		if !reflect.DeepEqual(ef, eg) {
			t.Fatalf("%q (emptyOK %v): error %+v, the full path's %+v", body, emptyOK, ef, eg)
		}
		if ef == nil && !reflect.DeepEqual(fast, full) {
			t.Fatalf("%q: decoded %+v, the full path %+v", body, fast, full)
		}
	}
}

// TestPlainObjectDecodesAsTheFullPath: whether a body takes the plain
// path or not, it decodes to the same value or fails with the same error.
func TestPlainObjectDecodesAsTheFullPath(t *testing.T) {
	for _, body := range scanSeeds {
		sameDecode(t, body, func() any { return new(wire.LookupRequest) })
		sameDecode(t, body, func() any { return new(wire.NonceRequest) })
		sameDecode(t, body, func() any { return new(wire.IssueRequest) })
	}
}

func TestPlainObject(t *testing.T) {
	fields := jsonFields(reflect.TypeFor[wire.LookupRequest]())
	for body, want := range map[string]bool{
		`{"token":"x"}`:                   true,
		` {"token":"x","min_index":3} `:   true,
		`{}`:                              true,
		`{"token":"x","token":"y"}`:       false, // repeated
		`{"Token":"x"}`:                   false, // case
		`{"nope":"x"}`:                    false, // unknown
		`{"token":"x"} {}`:                false, // trailing
		`{"token":["x"]}`:                 false, // not a scalar
		`{"tok\u0065n":"x"}`:              false, // escaped key
		`{"token":"x\u0000"}`:             true,
		`{"token":"x` + "\x00" + `"}`:     false,
		`{"min_index":-}`:                 false,
		`{"with_data":nul}`:               false,
		`{"token":"x","min_index":1e+9}`:  true,
		`{"token":"x","min_index":1E-09}`: true,
	} {
		var kv [maxPlainKeys]plainPair
		if _, got := plainObject([]byte(body), fields, &kv); got != want {
			t.Errorf("plainObject(%q) = %v, want %v", body, got, want)
		}
	}
	var kv [maxPlainKeys]plainPair
	if _, ok := plainObject([]byte(`{}`), nil, &kv); ok {
		t.Error("plainObject with no fields: want false")
	}
}

// TestDecodeIntoNilPointer: a nil target is encoding/json's error, not a
// panic.
func TestDecodeIntoNilPointer(t *testing.T) {
	var req *wire.LookupRequest
	if e := decodeStrict(bytes.NewReader([]byte(`{"token":"x"}`)), req, false); e == nil {
		t.Fatal("decoded into a nil pointer")
	}
}

func FuzzPlainObject(f *testing.F) {
	for _, s := range scanSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		sameDecode(t, body, func() any { return new(wire.LookupRequest) })
		sameDecode(t, body, func() any { return new(wire.NonceRequest) })
	})
}
