package msgpack

import (
	"bytes"
	"strings"
	"testing"
)

// TestReaderReadsCodec: each read takes what the codec writes, in both
// forms, at every boundary of the msgpack forms, to the last byte.
func TestReaderReadsCodec(t *testing.T) {
	for _, f := range []Form{ext, plain} {
		for _, n := range lens {
			s := strings.Repeat("s", n)
			r := NewReader(codecBytes(t, f, s))
			if got := r.Str(f); got != s || !r.Done() {
				t.Fatalf("%+v: string of %d: read %d bytes, done %v", f, n, len(got), r.Done())
			}
			p := bytes.Repeat([]byte{7}, n)
			r = NewReader(codecBytes(t, f, p))
			var got []byte
			if f.WriteExt {
				got = r.Bin()
			} else {
				got = r.StrBytes(f)
			}
			if !bytes.Equal(got, p) || !r.Done() {
				t.Fatalf("%+v: %d bytes: read %d, done %v", f, n, len(got), r.Done())
			}
			r = NewReader(codecBytes(t, f, make([]int, n)))
			if got := r.ArrayLen(); got != n {
				t.Fatalf("%+v: array of %d: read %d", f, n, got)
			}
			for range n {
				if r.Int() != 0 {
					t.Fatalf("%+v: array of %d: an element is not 0", f, n)
				}
			}
			if !r.Done() {
				t.Fatalf("%+v: array of %d: not done at %d of %d", f, n, r.Off(), len(r.Body()))
			}
		}
		for _, n := range []int{0, 1, 15, 16, 65535, 65536} {
			m := make(map[int]bool, n)
			for i := range n {
				m[i] = true
			}
			r := NewReader(codecBytes(t, f, m))
			if got := r.MapLen(); got != n || r.Bad() {
				t.Fatalf("%+v: map of %d: read %d", f, n, got)
			}
		}
		for _, i := range ints {
			r := NewReader(codecBytes(t, f, i))
			if got := r.Int(); got != i || !r.Done() {
				t.Fatalf("int %d: read %d, done %v", i, got, r.Done())
			}
			u := uint64(i)
			r = NewReader(codecBytes(t, f, u))
			if got := r.Uint(); got != u || !r.Done() {
				t.Fatalf("uint %d: read %d, done %v", u, got, r.Done())
			}
		}
		r := NewReader(codecBytes(t, f, nil))
		if !r.Nil() || !r.Done() {
			t.Fatalf("%+v: nil not read", f)
		}
	}
}

// TestReaderForms: str8 is read only in the form that writes it, bin only
// by Bin, an unsigned form only by Uint and a negative one only by Int; a
// string is read as the one copy of the body, a byte slice as a view of
// it.
func TestReaderForms(t *testing.T) {
	s40 := strings.Repeat("s", 40)
	str8 := append([]byte{0xd9, 40}, s40...)
	if r := NewReader(str8); r.Str(ext) != s40 || !r.Done() {
		t.Fatal("str8 not read with WriteExt")
	}
	if r := NewReader(str8); r.Str(plain) != "" || !r.Bad() {
		t.Fatal("str8 read without WriteExt")
	}
	bin := []byte{0xc4, 2, 1, 2}
	for _, f := range []Form{ext, plain} {
		if r := NewReader(bin); r.StrBytes(f) != nil || !r.Bad() {
			t.Fatalf("%+v: bin read as a string", f)
		}
	}
	if r := NewReader([]byte{0xa2, 1, 2}); r.Bin() != nil || !r.Bad() {
		t.Fatal("a string read as bin")
	}
	for _, c := range []struct {
		b    []byte
		uint bool
	}{{[]byte{0xcc, 200}, true}, {[]byte{0xcf, 0, 0, 0, 0, 0, 0, 0, 1}, true}, {[]byte{0xd0, 0x80}, false}, {[]byte{0xff}, false}} {
		u := NewReader(c.b)
		u.Uint()
		if u.Done() != c.uint {
			t.Errorf("%x: Uint done %v", c.b, u.Done())
		}
		i := NewReader(c.b)
		i.Int()
		if i.Done() == c.uint {
			t.Errorf("%x: Int done %v", c.b, i.Done())
		}
	}
	body := append(append([]byte{0x92}, ext.AppendStr(nil, "ab")...), ext.AppendBytes(nil, []byte("cd"))...)
	r := NewReader(body)
	r.ArrayLen()
	if a := r.Str(ext); a != "ab" || r.s != string(body) {
		t.Fatalf("read %q; the strings' copy is %q", a, r.s)
	}
	if p := r.Bin(); &p[0] != &body[len(body)-2] || !r.Done() {
		t.Fatal("bin is not a view of the body")
	}
}

// TestReaderTruncated: every value cut short turns the reader bad, and a
// bad reader reads nothing more: each read returns a zero value and the
// offset stays.
func TestReaderTruncated(t *testing.T) {
	all := reads(ext)
	str, bin, sint, unsigned, array, mapOf := 0, 2, 3, 4, 5, 6
	for _, f := range []Form{ext, plain} {
		bytesRead := bin
		if !f.WriteExt {
			bytesRead = 1
		}
		for _, c := range []struct {
			v    any
			read int
		}{{strings.Repeat("s", 3), str}, {strings.Repeat("s", 40), str}, {strings.Repeat("s", 300), str},
			{strings.Repeat("s", 70000), str}, {[]byte{1, 2, 3}, bytesRead}, {bytes.Repeat([]byte{1}, 300), bytesRead},
			{bytes.Repeat([]byte{1}, 70000), bytesRead}, {make([]int, 20), array}, {make([]int, 70000), array},
			{map[string]int{"a": 1}, mapOf}, {int64(-1 << 40), sint}, {int64(-100), sint}, {uint64(1 << 40), unsigned}} {
			full := codecBytes(t, f, c.v)
			for cut := range len(full) {
				if cut > 8 && cut != len(full)/2 && cut != len(full)-1 {
					continue // the headers, a middle and the last byte
				}
				for i, read := range reads(f) {
					r := NewReader(full[:cut])
					read(&r)
					if i == c.read && !r.Bad() {
						t.Fatalf("%+v: %T cut at %d of %d: read %d not bad", f, c.v, cut, len(full), i)
					}
				}
			}
			r := NewReader(full)
			reads(f)[c.read](&r)
			if !r.Done() {
				t.Fatalf("%+v: %T: read %d not done", f, c.v, c.read)
			}
		}
	}
	r := NewReader([]byte{0xc1, 1, 0xa1, 'x', 0xc0})
	r.Int()
	if !r.Bad() {
		t.Fatal("0xc1 read as an int")
	}
	off := r.Off()
	for read, fn := range all {
		fn(&r)
		if r.Off() != off || !r.Bad() {
			t.Fatalf("read %d moved a bad reader from %d to %d", read, off, r.Off())
		}
	}
	if r.Int() != 0 || r.Uint() != 0 || r.Str(ext) != "" || r.StrBytes(ext) != nil || r.Bin() != nil ||
		r.Take(1) != nil || r.Next() != 0 || r.MapLen() != 0 || r.ArrayLen() != 0 || r.Nil() {
		t.Fatal("a bad reader read a value")
	}
}

// reads are the Reader's reads of one value each, in form f (Nil, which
// reads a value only if it is nil, is not one of them).
func reads(f Form) []func(*Reader) {
	return []func(*Reader){
		func(r *Reader) { r.Str(f) },
		func(r *Reader) { r.StrBytes(f) },
		func(r *Reader) { r.Bin() },
		func(r *Reader) { r.Int() },
		func(r *Reader) { r.Uint() },
		func(r *Reader) {
			for n := r.ArrayLen(); n > 0 && !r.Bad(); n-- {
				r.Int()
			}
		},
		func(r *Reader) {
			for n := r.MapLen(); n > 0 && !r.Bad(); n-- {
				r.Str(f)
				r.Int()
			}
		},
		func(r *Reader) { r.Take(2) },
		func(r *Reader) { r.Take(-1) },
	}
}

// FuzzReader: reads chosen by the input from the rest of it never panic,
// never read past the body, and once bad stay bad without moving.
func FuzzReader(f *testing.F) {
	f.Add([]byte{0, 0x92, 0xa1, 'x', 0xd9, 1, 'y'})
	f.Add([]byte{0x33, 0xcf, 1, 2, 3, 4, 5, 6, 7, 8, 0xc4, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		form := Form{WriteExt: data[0]&1 == 1}
		choose := data[0] >> 1
		r := NewReader(data[1:])
		all := append(reads(form), func(r *Reader) { r.Nil() })
		for range len(data) {
			wasBad, off := r.Bad(), r.Off()
			all[int(choose)%len(all)](&r)
			choose = choose*31 + 7
			if r.Off() > len(r.Body()) || r.Off() < off {
				t.Fatalf("offset %d after %d, of %d", r.Off(), off, len(r.Body()))
			}
			if wasBad && (!r.Bad() || r.Off() != off) {
				t.Fatal("a bad reader read on")
			}
		}
	})
}
