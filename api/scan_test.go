package api

import (
	"bytes"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
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
	`{"data":null}`, `{"kind":"access","data":null}`, `{"data":{"a":1}}`, `{"data":"x"}`, `{"data":[1]}`,
	`{"access":null}`, `{"token":"x","access":null}`, `{"access":{}}`, `{"access":{"ttl":"1h"}}`,
	`{"scopes":null}`, `{"scopes":["a"]}`, `{"title":"é","data":null}`,
	`{"scopes":[]}`, `{"scopes":[ ]}`, `{"scopes":["a","b"]}`, ` {"scopes" : [ "a" , "b" ] } `, `{"scopes":["a",1]}`,
	`{"scopes":["é"]}`, `{"scopes":["a\"b"]}`, `{"scopes":["a,b"]}`, `{"scopes":[null]}`, `{"scopes":[true]}`,
	`{"scopes":[["a"]]}`, `{"scopes":[{"a":1}]}`, `{"scopes":["a",]}`, `{"scopes":[,"a"]}`, `{"scopes":["a""b"]}`,
	`{"scopes":["a"`, `{"scopes":[`, `{"scopes":["a"],"scopes":["b"]}`, `{"Scopes":["a"]}`, `{"scopes":["a"]]}`,
	`{"token":[1,2]}`, `{"data":["x"]}`, `{"data":[]}`, `{"min_index":[1]}`, `{"with_data":[true]}`,
	`{"kind":"access","scopes":["read","write"],"subject":"u"}`, `{"scopes":["\u0041"]}`, `{"scopes":["a` + "\x01" + `"]}`,
}

// requestTypes are the bodies the API decodes, by wire type name: each
// made new, and whether the handler takes an empty body.
var requestTypes = map[string]struct {
	make    func() any
	emptyOK bool
}{
	"IssueRequest":      {func() any { return new(wire.IssueRequest) }, false},
	"RotateRequest":     {func() any { return new(wire.RotateRequest) }, false},
	"LookupRequest":     {func() any { return new(wire.LookupRequest) }, false},
	"ConsumeRequest":    {func() any { return new(wire.ConsumeRequest) }, false},
	"RevokeRequest":     {func() any { return new(wire.RevokeRequest) }, false},
	"BulkRevokeRequest": {func() any { return new(wire.BulkRevokeRequest) }, true},
	"NonceRequest":      {func() any { return new(wire.NonceRequest) }, false},
	// The batch, and its ops (decodeStrict of each op's object).
	"batchBody":     {func() any { return new(batchBody) }, false},
	"issueOpBody":   {func() any { return new(issueOpBody) }, false},
	"consumeOpBody": {func() any { return new(consumeOpBody) }, false},
	"revokeOpBody":  {func() any { return new(revokeOpBody) }, false},
	"rotateOpBody":  {func() any { return new(rotateOpBody) }, false},
}

// TestRequestTypesListsEveryDecodedBody: every body a handler decodes
// (var req wire.T, then decodeJSON(w, r, &req, emptyOK); or a local type
// of requestTypes, decoded so or by decodeStrict(body, &req, emptyOK)) is
// in requestTypes, with its emptyOK.
func TestRequestTypesListsEveryDecodedBody(t *testing.T) {
	fset, files := PackageSource(t)
	found := map[string]bool{}
	for _, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			fn, ok := n.(*ast.FuncDecl)
			if !ok || fn.Body == nil {
				return true
			}
			vars := map[string]string{} // local name -> wire type
			ast.Inspect(fn.Body, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.ValueSpec:
					if sel, ok := n.Type.(*ast.SelectorExpr); ok {
						if pkg, ok := sel.X.(*ast.Ident); ok && pkg.Name == "wire" {
							for _, id := range n.Names {
								vars[id.Name] = sel.Sel.Name
							}
						}
					}
					if local, ok := n.Type.(*ast.Ident); ok {
						if _, listed := requestTypes[local.Name]; listed {
							for _, id := range n.Names {
								vars[id.Name] = local.Name
							}
						}
					}
				case *ast.CallExpr:
					id, ok := n.Fun.(*ast.Ident)
					if !ok || id.Name != "decodeJSON" && id.Name != "decodeStrict" {
						return true
					}
					at := fset.Position(n.Pos())
					arg := 2 // decodeJSON(w, r, v, emptyOK)
					if id.Name == "decodeStrict" {
						arg = 1 // decodeStrict(body, v, emptyOK)
					}
					if len(n.Args) != arg+2 {
						t.Fatalf("%s: %s with %d arguments", at, id.Name, len(n.Args))
					}
					u, ok := n.Args[arg].(*ast.UnaryExpr)
					var target *ast.Ident
					if ok {
						target, _ = u.X.(*ast.Ident)
					}
					if id.Name == "decodeStrict" && (target == nil || vars[target.Name] == "") {
						return true // decodeJSON's own call, or a test's
					}
					if target == nil || vars[target.Name] == "" {
						t.Fatalf("%s: decodeJSON into something else than a local wire value", at)
					}
					typ := vars[target.Name]
					emptyOK, _ := n.Args[arg+1].(*ast.Ident)
					rt, listed := requestTypes[typ]
					switch {
					case !listed:
						t.Errorf("%s: wire.%s is decoded but not in requestTypes", at, typ)
					case emptyOK == nil || emptyOK.Name != strconv.FormatBool(rt.emptyOK):
						t.Errorf("%s: wire.%s is decoded with emptyOK other than requestTypes says", at, typ)
					}
					found[typ] = true
				}
				return true
			})
			return false
		})
	}
	for typ := range requestTypes {
		if !found[typ] {
			t.Errorf("requestTypes lists wire.%s, which no handler decodes", typ)
		}
	}
}

// fieldValues are JSON values of every type, and of the corner cases of
// the plain path, to try in each field.
var fieldValues = []string{
	`"x"`, `""`, `"é"`, `"a\"b"`, `"1h"`, `0`, `7`, `-1`, `1.5`, `1e3`, `18446744073709551615`,
	`true`, `false`, `null`, `[]`, `["a","b"]`, `{}`, `{"ttl":"1h","scopes":["a"]}`, `{"a":[1,{"b":null}]}`,
}

// fieldBodies are bodies for v's type: each field alone with each of
// fieldValues, all fields with one value each, and a few of the fields
// together with a key that takes the full path.
func fieldBodies(v any) []string {
	var names []string
	for name := range jsonFields(reflect.TypeOf(v).Elem()) {
		names = append(names, name)
	}
	sort.Strings(names)
	var out []string
	for _, name := range names {
		for _, val := range fieldValues {
			out = append(out, `{"`+name+`":`+val+`}`)
		}
	}
	for _, val := range fieldValues {
		var all []string
		for _, name := range names {
			all = append(all, `"`+name+`":`+val)
		}
		out = append(out, "{"+strings.Join(all, ",")+"}", "{"+strings.Join(all, ",")+`,"Other":1}`)
	}
	for i, name := range names {
		other := names[(i+1)%len(names)]
		for _, val := range fieldValues {
			out = append(out,
				`{"`+name+`":null,"`+other+`":`+val+`}`,
				`{"`+other+`":`+val+`,"`+name+`":null}`,
				`{"`+name+`":`+val+`,"`+other+`":"\u00e9"}`)
		}
	}
	return out
}

func sameDecodeAs(t *testing.T, body, typ string) {
	t.Helper()
	rt := requestTypes[typ]
	sameDecode(t, body, rt.make)
	if !rt.emptyOK {
		return
	}
	fast, full := rt.make(), rt.make()
	ef := decodeStrict(bytes.NewReader([]byte(body)), fast, true)
	eg := fullDecode([]byte(body), full, true)
	if !reflect.DeepEqual(ef, eg) || (ef == nil && !reflect.DeepEqual(fast, full)) {
		t.Fatalf("%s %q: %+v, %v; the full path %+v, %v", typ, body, fast, ef, full, eg)
	}
}

// TestEveryRequestTypeDecodesAsTheFullPath: for each body the API
// decodes, bodies with every field in turn, of every JSON type, decode as
// the full path decodes them.
func TestEveryRequestTypeDecodesAsTheFullPath(t *testing.T) {
	for typ, rt := range requestTypes {
		for _, body := range append(fieldBodies(rt.make()), scanSeeds...) {
			sameDecodeAs(t, body, typ)
		}
	}
}

// upper is a string that decodes itself, as upper case.
type upper string

func (u *upper) UnmarshalText(b []byte) error {
	*u = upper(strings.ToUpper(string(b)))
	return nil
}

// doubled is an integer that decodes itself, doubled; null is 1.
type doubled int64

func (d *doubled) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*d = 1
		return nil
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	*d = doubled(2 * n)
	return err
}

type selfFields struct {
	Name   upper   `json:"name"`
	Count  doubled `json:"count"`
	Quoted int64   `json:"quoted,string"`
	Flag   bool    `json:"flag,omitempty,string"`
	Plain  string  `json:"plain"`
}

// selfObject decodes itself from any object: its field is "self".
type selfObject struct {
	Plain string `json:"plain"`
}

func (s *selfObject) UnmarshalJSON([]byte) error {
	s.Plain = "self"
	return nil
}

// TestFieldsThatDecodeThemselves: a field whose type has its own
// UnmarshalText or UnmarshalJSON, or tagged ",string", and a type that
// decodes itself, are decoded by encoding/json, on either path.
func TestFieldsThatDecodeThemselves(t *testing.T) {
	for _, body := range []string{
		`{"name":"abc"}`, `{"name":null}`, `{"count":21}`, `{"count":null}`, `{"quoted":5}`, `{"quoted":"5"}`,
		`{"quoted":null}`, `{"flag":true}`, `{"flag":"true"}`, `{"plain":"p","name":"n","count":1,"quoted":"2"}`,
	} {
		sameDecode(t, body, func() any { return new(selfFields) })
	}
	var s selfFields
	if e := decodeStrict(bytes.NewReader([]byte(`{"name":"abc","count":21,"quoted":"5"}`)), &s, false); e != nil ||
		s != (selfFields{Name: "ABC", Count: 42, Quoted: 5}) {
		t.Errorf("decoded %+v, %v", s, e)
	}
	for _, body := range []string{`{"plain":"p"}`, `{}`} {
		sameDecode(t, body, func() any { return new(selfObject) })
		var o selfObject
		if e := decodeStrict(bytes.NewReader([]byte(body)), &o, false); e != nil || o.Plain != "self" {
			t.Errorf("%s: decoded %+v, %v", body, o, e)
		}
	}
	var req wire.IssueRequest
	if e := decodeStrict(bytes.NewReader([]byte(`{"kind":"access","data":null}`)), &req, false); e != nil ||
		string(req.Data) != "null" {
		t.Errorf(`{"data":null}: data %q, %v; encoding/json sets "null"`, req.Data, e)
	}
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
		`{"token":["x"]}`:                 true,  // an array of scalars (a wrong type is json.Unmarshal's error)
		`{"token":[["x"]]}`:               false, // not a scalar inside
		`{"token":[{"a":1}]}`:             false,
		`{"token":{"a":1}}`:               false,
		`{"token":["x",]}`:                false,
		`{"token":[,]}`:                   false,
		`{"token":["x" "y"]}`:             false,
		`{"token":["x"`:                   false,
		`{"token":[]}`:                    true,
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
	for _, rt := range requestTypes {
		var strs, nulls []string
		for name := range jsonFields(reflect.TypeOf(rt.make()).Elem()) {
			strs, nulls = append(strs, `"`+name+`":"x"`), append(nulls, `"`+name+`":null`)
		}
		f.Add("{" + strings.Join(strs, ",") + "}")
		f.Add("{" + strings.Join(nulls, ",") + "}")
	}
	f.Fuzz(func(t *testing.T, body string) {
		for typ := range requestTypes {
			sameDecodeAs(t, body, typ)
		}
	})
}

// PackageSource parses the api package's own source files (not its
// tests), for the tests that check what the code registers or decodes.
func PackageSource(t *testing.T) (*token.FileSet, []*ast.File) {
	t.Helper()
	names, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	var files []*ast.File
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	return fset, files
}
