package fsm

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/go-msgpack/v2/codec"
)

// TestFastCodecIsOn fails when Record, Issue or Consume gained a field
// that cmdcodec.go does not know: the codec then does all the work, which
// is correct but slow. Teach cmdcodec.go the field.
func TestFastCodecIsOn(t *testing.T) {
	if !fastCodec {
		t.Fatal("the fast codec is off: a field of Record, Issue or Consume is not in cmdcodec.go")
	}
	var keys []string
	for _, f := range recordFields {
		keys = append(keys, f.key)
	}
	keys = append(keys, "ro")
	slices.Sort(keys)
	if !slices.Equal(keys, recordKeys) || !slices.IsSorted(recordKeys) {
		t.Fatalf("recordFields and Rotated are %q, recordKeys %q", keys, recordKeys)
	}
}

var boundaryInts = []int64{0, 1, 127, 128, 255, 256, math.MaxInt16, math.MaxInt16 + 1, math.MaxUint16, math.MaxUint16 + 1,
	math.MaxInt32, math.MaxInt32 + 1, math.MaxUint32, math.MaxUint32 + 1, math.MaxInt64, -1, -32, -33, -128, -129,
	math.MinInt16, math.MinInt16 - 1, math.MinInt32, math.MinInt32 - 1, math.MinInt64, 1_795_000_000_000_000_000}

var boundaryLens = []int{0, 1, 31, 32, 255, 256, 65535, 65536}

// randomFill sets every field of the struct v points to at random, by
// reflection, so that a field added later is covered without this test
// knowing it. Pointers are left nil.
func randomFill(t *testing.T, rng *rand.Rand, v reflect.Value) {
	t.Helper()
	for i := range v.NumField() {
		f := v.Field(i)
		empty := rng.IntN(3) == 0
		switch f.Kind() {
		case reflect.String:
			if !empty {
				f.SetString(randomString(rng))
			}
		case reflect.Int64, reflect.Int:
			if !empty {
				f.SetInt(randomInt(rng))
			}
		case reflect.Uint64:
			if !empty {
				f.SetUint(uint64(randomInt(rng)))
			}
		case reflect.Uint8:
			f.SetUint(uint64(rng.IntN(256)))
		case reflect.Bool:
			f.SetBool(rng.IntN(2) == 0)
		case reflect.Slice:
			if empty {
				if rng.IntN(2) == 0 {
					f.Set(reflect.MakeSlice(f.Type(), 0, 0)) // empty, not nil: left out as nil is
				}
				continue
			}
			switch f.Type().Elem().Kind() {
			case reflect.Uint8:
				f.SetBytes([]byte(randomString(rng)))
			case reflect.String:
				n := rng.IntN(20)
				if rng.IntN(20) == 0 {
					n = 16 + rng.IntN(40)
				}
				ss := make([]string, n)
				for j := range ss {
					ss[j] = randomString(rng)
				}
				f.Set(reflect.ValueOf(ss))
			default:
				t.Fatalf("field %s: a slice of %s, which this test does not fill", v.Type().Field(i).Name, f.Type().Elem())
			}
		case reflect.Pointer:
		case reflect.Struct:
			randomFill(t, rng, f)
		default:
			t.Fatalf("field %s of kind %s, which this test does not fill", v.Type().Field(i).Name, f.Kind())
		}
	}
}

func randomInt(rng *rand.Rand) int64 {
	if rng.IntN(2) == 0 {
		return boundaryInts[rng.IntN(len(boundaryInts))]
	}
	return rng.Int64() >> rng.IntN(64) * int64(1-2*rng.IntN(2))
}

func randomString(rng *rand.Rand) string {
	n := rng.IntN(40)
	if rng.IntN(30) == 0 {
		n = boundaryLens[rng.IntN(len(boundaryLens))]
	}
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return string(b)
}

// TestFastCodecMatchesCodec checks, for Issue and Consume commands with
// every field at random (lengths and integers at the msgpack forms'
// boundaries among them), that the fast encoder writes the codec's bytes
// and the fast decoder reads them as the codec does.
func TestFastCodecMatchesCodec(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 3000 {
		var c Command
		if i%3 == 0 {
			c = new(Consume)
		} else {
			c = new(Issue)
		}
		randomFill(t, rng, reflect.ValueOf(c).Elem())
		want := codecEncode(t, c)
		got, ok := fastEncode(nil, c)
		if !ok {
			t.Fatalf("%T not encoded by the fast encoder", c)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%d: %T %+v: fast encoder wrote\n%x\nthe codec\n%x", i, c, c, got, want)
		}
		back, ok := fastDecode(Type(want[0]), want[1:])
		if !ok {
			t.Fatalf("%d: the fast decoder refused what the codec wrote for %+v", i, c)
		}
		if ref, err := decodeFresh(want); err != nil || !reflect.DeepEqual(back, ref) {
			t.Fatalf("%d: fast decoder read %+v, the codec %+v (%v)", i, back, ref, err)
		}
		if again, err := Reencode(back, want); err != nil || &again[0] != &want[0] {
			t.Fatalf("%d: re-encoding a decoded command did not keep its entry: %v", i, err)
		}
	}
}

// TestFastCodecLeavesTheRestToTheCodec checks what the fast path hands to
// the codec: a rotated record, and encodings the codec reads but does not
// write (wider integers, other key orders, unknown keys), which must read
// as they always have.
func TestFastCodecLeavesTheRestToTheCodec(t *testing.T) {
	rot := &Issue{Record: Record{ID: "i", Hash: "h", Kind: "k", Rotated: &Rotation{Successor: "s"}}}
	if _, ok := fastEncode(nil, rot); ok {
		t.Fatal("a rotated record was encoded by the fast encoder")
	}
	e := codecEncode(t, rot)
	if _, ok := fastDecode(TypeIssue, e[1:]); ok {
		t.Fatal("a rotated record was decoded by the fast decoder")
	}
	if c, err := decodeEntry(e); err != nil || !reflect.DeepEqual(c, rot) {
		t.Fatalf("a rotated record decoded as %+v, %v", c, err)
	}
	for name, body := range map[string][]byte{
		"uint8 for 5":       {0x83, 0xa1, 'h', 0xa1, 'x', 0xa2, 'f', 'h', 0xcc, 0x05, 0xa1, 'k', 0xa1, 'y'},
		"keys out of order": {0x82, 0xa1, 'k', 0xa1, 'y', 0xa1, 'h', 0xa1, 'x'},
		"an unknown key":    {0x82, 0xa1, 'h', 0xa1, 'x', 0xa1, 'z', 0x01},
		"a bin string":      {0x81, 0xa1, 'h', 0xc4, 0x01, 'x'},
		"a duplicate key":   {0x82, 0xa1, 'h', 0xa1, 'x', 0xa1, 'h', 0xa1, 'y'},
		"bytes after":       {0x81, 0xa1, 'h', 0xa1, 'x', 0x00},
	} {
		if _, ok := fastDecode(TypeConsume, body); ok {
			t.Errorf("%s: decoded by the fast decoder", name)
		}
		entry := append([]byte{byte(TypeConsume)}, body...)
		got, gerr := decodeEntry(entry)
		want, werr := decodeFresh(entry)
		if (gerr == nil) != (werr == nil) || (werr == nil && !reflect.DeepEqual(got, want)) {
			t.Errorf("%s: decoded as %+v, %v; the codec reads %+v, %v", name, got, gerr, want, werr)
		}
	}
}

// FuzzFastDecode checks that whatever the fast decoder accepts, the codec
// reads the same, so that no two nodes read an entry differently.
func FuzzFastDecode(f *testing.F) {
	for _, c := range []Command{
		&Issue{TTL: 600, Record: Record{ID: "id", Hash: strings.Repeat("h", 32), Kind: "oauth2_code", Subject: "user:1",
			Scopes: []string{"read", "write"}, Data: []byte(`{"a":1}`), CreatedAt: 5, DetectReuse: true, State: 2}},
		&Issue{Record: Record{ID: "id", Hash: "h", Kind: "access", MaxUses: -3, CreateIndex: 300, ModifyIndex: 1 << 40}},
		&Consume{Hash: "h", Kind: "k", ClientID: "c", FamilyHold: 1 << 50},
		&Consume{Hash: "h"},
	} {
		e := codecEncode(f, c)
		f.Add(e)
	}
	f.Add([]byte{byte(TypeIssue), 0x81, 0xa1, 'r', 0x80})
	f.Add(codecEncodeValue(f, &Record{ID: "id", Hash: "h", Kind: "access", Subject: "user:1", ExpiresAt: 1 << 62}))
	f.Add([]byte{byte(TypeConsume), 0x81, 0xa1, 'h', 0xdb, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, entry []byte) {
		if len(entry) == 0 {
			return
		}
		for _, typ := range []Type{TypeIssue, TypeConsume} {
			got, ok := fastDecode(typ, entry[1:])
			if !ok {
				continue
			}
			want, err := decodeFresh(append([]byte{byte(typ)}, entry[1:]...))
			if err != nil || !reflect.DeepEqual(got, want) {
				t.Fatalf("type %d: the fast decoder read %+v, the codec %+v, %v", typ, got, want, err)
			}
		}
		// The same bytes as a snapshot's record frame.
		if got, ok := fastRecord(entry); ok {
			want := new(Record)
			if err := codec.NewDecoderBytes(entry, msgpackHandle).Decode(want); err != nil || !reflect.DeepEqual(got, want) {
				t.Fatalf("record frame: the fast decoder read %+v, the codec %+v, %v", got, want, err)
			}
		}
	})
}

// TestFastRecordFrames checks a snapshot's record frames: for records with
// every field at random, the frame writer writes the codec's bytes, and
// fastRecord reads them as the codec does; a rotated record is left to the
// codec both ways.
func TestFastRecordFrames(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	var fw frameWriter
	for i := range 2000 {
		r := new(Record)
		randomFill(t, rng, reflect.ValueOf(r).Elem())
		if i%10 == 0 {
			r.Rotated = &Rotation{Successor: randomString(rng)}
		}
		want := bytes.NewBuffer(codecEncodeValue(t, r))
		var out bytes.Buffer
		fw.w = bufio.NewWriter(&out)
		fw.frame(frameRecord, r)
		fw.w.Flush()
		if fw.err != nil {
			t.Fatalf("%d: frame: %v", i, fw.err)
		}
		// The frame as written: type, length, body.
		n, w := binary.Uvarint(out.Bytes()[1:])
		if out.Len() == 0 || out.Bytes()[0] != frameRecord || w <= 0 || uint64(out.Len()-1-w) != n {
			t.Fatalf("%d: frame %x: want a record frame of one body", i, out.Bytes())
		}
		if got := out.Bytes()[1+w:]; !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("%d: %+v: frame body\n%x\nthe codec\n%x", i, r, got, want.Bytes())
		}
		back, ok := fastRecord(want.Bytes())
		if ok != (r.Rotated == nil) {
			t.Fatalf("%d: fastRecord ok=%v for a record rotated=%v", i, ok, r.Rotated != nil)
		}
		if !ok {
			continue
		}
		ref := new(Record)
		if err := codec.NewDecoderBytes(want.Bytes(), msgpackHandle).Decode(ref); err != nil || !reflect.DeepEqual(back, ref) {
			t.Fatalf("%d: fastRecord read %+v, the codec %+v (%v)", i, back, ref, err)
		}
	}
}

// codecEncodeValue is v as the codec encodes it.
func codecEncodeValue(t testing.TB, v any) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := codec.NewEncoder(&b, msgpackHandle).Encode(v); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestLogFormIsPinned: the log and the snapshots write strings of 32 to
// 255 bytes as str8 and byte slices as bin (msgpackHandle's WriteExt),
// not in the form of the calls between nodes. The tests above follow the
// handle; this one fails if the handle or logForm turns to the other form.
func TestLogFormIsPinned(t *testing.T) {
	h := strings.Repeat("h", 40)
	rec := &Record{ID: "i", Hash: h, Kind: "k", Data: []byte{1}}
	// A map of 7: the six fields never left out, and d.
	want := []byte{0x87, 0xa2, 'c', 'a', 0, 0xa2, 'c', 'i', 0, 0xa1, 'd', 0xc4, 1, 1, 0xa1, 'h', 0xd9, 40}
	want = append(want, h...)
	want = append(want, 0xa1, 'i', 0xa1, 'i', 0xa1, 'k', 0xa1, 'k', 0xa2, 'm', 'i', 0)
	if got := appendRecord(nil, rec); !bytes.Equal(got, want) {
		t.Fatalf("wrote %x, want %x", got, want)
	}
	if !logForm.WriteExt || !msgpackHandle.WriteExt {
		t.Fatalf("logForm %+v, msgpackHandle.WriteExt %v: want the str8 and bin forms", logForm, msgpackHandle.WriteExt)
	}
}
