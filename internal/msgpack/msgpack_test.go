package msgpack

import (
	"bytes"
	"math"
	"strings"
	"testing"

	"github.com/hashicorp/go-msgpack/v2/codec"
)

var (
	ext   = Form{WriteExt: true}
	plain = Form{}
)

// codecBytes is v as the codec writes it with a handle of form f.
func codecBytes(t *testing.T, f Form, v any) []byte {
	t.Helper()
	var b []byte
	if err := codec.NewEncoderBytes(&b, &codec.MsgpackHandle{WriteExt: f.WriteExt}).Encode(v); err != nil {
		t.Fatal(err)
	}
	return b
}

var lens = []int{0, 1, 15, 16, 31, 32, 33, 200, 255, 256, 65535, 65536, 70000}

var ints = []int64{0, 1, 31, 32, 127, 128, 255, 256, math.MaxInt16, math.MaxInt16 + 1, math.MaxUint16,
	math.MaxUint16 + 1, math.MaxInt32, math.MaxInt32 + 1, math.MaxUint32, math.MaxUint32 + 1, math.MaxInt64,
	-1, -31, -32, -33, -127, -128, -129, math.MinInt16, math.MinInt16 - 1, math.MinInt32, math.MinInt32 - 1,
	math.MinInt64}

// TestMatchesCodec: each writer writes what the codec writes, in both
// forms, at every boundary of the msgpack forms.
func TestMatchesCodec(t *testing.T) {
	for _, f := range []Form{ext, plain} {
		for _, n := range lens {
			s := strings.Repeat("s", n)
			if got, want := f.AppendStr(nil, s), codecBytes(t, f, s); !bytes.Equal(got, want) {
				t.Fatalf("%+v: string of %d: wrote %x, the codec %x", f, n, head(got), head(want))
			}
			p := bytes.Repeat([]byte{7}, n)
			if got, want := f.AppendBytes(nil, p), codecBytes(t, f, p); !bytes.Equal(got, want) {
				t.Fatalf("%+v: %d bytes: wrote %x, the codec %x", f, n, head(got), head(want))
			}
			a := make([]int, n)
			got := AppendArrayLen(nil, n)
			for range a {
				got = AppendInt(got, 0)
			}
			if want := codecBytes(t, f, a); !bytes.Equal(got, want) {
				t.Fatalf("%+v: array of %d: wrote %x, the codec %x", f, n, head(got), head(want))
			}
		}
		for _, n := range []int{0, 1, 15, 16, 65535, 65536} {
			m := make(map[int]bool, n)
			for i := range n {
				m[i] = true
			}
			got := AppendMapLen(nil, n)
			want := codecBytes(t, f, m)
			if !bytes.Equal(got, want[:len(got)]) {
				t.Fatalf("%+v: map of %d: wrote %x, the codec %x", f, n, got, head(want))
			}
		}
		for _, i := range ints {
			if got, want := AppendInt(nil, i), codecBytes(t, f, i); !bytes.Equal(got, want) {
				t.Fatalf("int %d: wrote %x, the codec %x", i, got, want)
			}
			u := uint64(i)
			if got, want := AppendUint(nil, u), codecBytes(t, f, u); !bytes.Equal(got, want) {
				t.Fatalf("uint %d: wrote %x, the codec %x", u, got, want)
			}
		}
	}
}

// TestFields: a field is left out when empty, as omitempty does.
func TestFields(t *testing.T) {
	type fields struct {
		A string `codec:"a,omitempty"`
		B int64  `codec:"b,omitempty"`
	}
	for _, f := range []Form{ext, plain} {
		for _, v := range []fields{{}, {A: "x"}, {B: -300}, {A: strings.Repeat("y", 40), B: 1 << 40}} {
			n := 0
			if v.A != "" {
				n++
			}
			if v.B != 0 {
				n++
			}
			got := f.AppendIntField(f.AppendStrField(AppendMapLen(nil, n), "a", v.A), "b", v.B)
			if want := codecBytes(t, f, v); !bytes.Equal(got, want) {
				t.Fatalf("%+v: %+v: wrote %x, the codec %x", f, v, got, want)
			}
		}
	}
}

// TestFormsDiffer: the two forms write a string of 32 to 255 bytes and
// every byte slice differently, and nothing else; the bytes of each are
// pinned here, so that neither form can drift to the other's (the fsm's
// log and the calls between nodes each keep their own).
func TestFormsDiffer(t *testing.T) {
	for _, n := range lens {
		s := strings.Repeat("s", n)
		a, b := ext.AppendStr(nil, s), plain.AppendStr(nil, s)
		if differ := n >= 32 && n < 256; bytes.Equal(a, b) == differ {
			t.Fatalf("string of %d: with WriteExt %x, without %x; want them to differ: %v", n, head(a), head(b), differ)
		}
		p := bytes.Repeat([]byte{7}, n)
		if a, b := ext.AppendBytes(nil, p), plain.AppendBytes(nil, p); bytes.Equal(a, b) {
			t.Fatalf("%d bytes: both forms wrote %x", n, head(a))
		}
	}
	s30, s40 := strings.Repeat("s", 30), strings.Repeat("s", 40)
	for _, c := range []struct {
		name      string
		got, want []byte
	}{
		{"30-byte string, WriteExt", ext.AppendStr(nil, s30), append([]byte{0xbe}, s30...)},
		{"30-byte string, without", plain.AppendStr(nil, s30), append([]byte{0xbe}, s30...)},
		{"40-byte string, WriteExt", ext.AppendStr(nil, s40), append([]byte{0xd9, 40}, s40...)},
		{"40-byte string, without", plain.AppendStr(nil, s40), append([]byte{0xda, 0, 40}, s40...)},
		{"bytes, WriteExt", ext.AppendBytes(nil, []byte{1, 2}), []byte{0xc4, 2, 1, 2}},
		{"bytes, without", plain.AppendBytes(nil, []byte{1, 2}), []byte{0xa2, 1, 2}},
		{"no bytes, WriteExt", ext.AppendBytes(nil, []byte{}), []byte{0xc4, 0}},
		{"no bytes, without", plain.AppendBytes(nil, []byte{}), []byte{0xa0}},
	} {
		if !bytes.Equal(c.got, c.want) {
			t.Errorf("%s: wrote %x, want %x", c.name, c.got, c.want)
		}
	}
}

// head is the start of b, for a failure's message.
func head(b []byte) []byte {
	if len(b) > 40 {
		return b[:40]
	}
	return b
}
