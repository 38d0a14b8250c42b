package msgpack

// Reader reads msgpack values from one body, from its start, in the forms
// the codec writes. On anything else, or past the end of the body, it
// turns bad: each read from then on reads nothing and returns a zero
// value, so a decoder reads a whole struct and checks Done once. The
// strings it returns share one copy of the body (Str); the byte slices it
// returns are views of the body.
type Reader struct {
	b   []byte
	s   string // b as a string, once a string is read
	off int
	bad bool
}

// NewReader returns a Reader of body.
func NewReader(body []byte) Reader { return Reader{b: body} }

// Body is the body read.
func (r *Reader) Body() []byte { return r.b }

// Off is how many bytes of the body were read.
func (r *Reader) Off() int { return r.off }

// Left is how many bytes of the body are left to read.
func (r *Reader) Left() int { return len(r.b) - r.off }

// Bad tells whether the reader met what it does not read.
func (r *Reader) Bad() bool { return r.bad }

// Fail turns the reader bad: a decoder refusing a value it read.
func (r *Reader) Fail() { r.bad = true }

// Done tells whether the whole body was read, and well.
func (r *Reader) Done() bool { return !r.bad && r.off == len(r.b) }

// Next reads one byte.
func (r *Reader) Next() byte {
	if r.bad || r.off >= len(r.b) {
		r.bad = true
		return 0
	}
	c := r.b[r.off]
	r.off++
	return c
}

// Take reads n bytes, as a view of the body.
func (r *Reader) Take(n int) []byte {
	if r.bad || n < 0 || n > len(r.b)-r.off {
		r.bad = true
		return nil
	}
	p := r.b[r.off : r.off+n]
	r.off += n
	return p
}

// be reads an n-byte big-endian unsigned integer.
func (r *Reader) be(n int) uint64 {
	var v uint64
	for _, c := range r.Take(n) {
		v = v<<8 | uint64(c)
	}
	return v
}

// Nil reads a nil if one is next, and tells whether it did.
func (r *Reader) Nil() bool {
	if !r.bad && r.off < len(r.b) && r.b[r.off] == 0xc0 {
		r.off++
		return true
	}
	return false
}

// MapLen reads the header of a map: its count of pairs, which is not
// checked against what is left of the body.
func (r *Reader) MapLen() int { return r.containerLen(0x80, 0xde) }

// ArrayLen reads the header of an array: its count of elements, which is
// not checked against what is left of the body.
func (r *Reader) ArrayLen() int { return r.containerLen(0x90, 0xdc) }

// containerLen reads the length of an array or a map: fix holds the fixed
// form's high bits, c16 is the 16-bit form's code and the 32-bit form's is
// the next one.
func (r *Reader) containerLen(fix, c16 byte) int {
	switch c := r.Next(); {
	case c&0xf0 == fix:
		return int(c & 0x0f)
	case c == c16:
		return int(r.be(2))
	case c == c16+1:
		return int(r.be(4))
	}
	r.bad = true
	return 0
}

// StrBytes reads a string in the forms a handle of form f writes, as a
// view of the body: the str8 form only with WriteExt.
func (r *Reader) StrBytes(f Form) []byte {
	var n int
	switch c := r.Next(); {
	case c&0xe0 == 0xa0:
		n = int(c & 0x1f)
	case c == 0xd9 && f.WriteExt:
		n = int(r.be(1))
	case c == 0xda:
		n = int(r.be(2))
	case c == 0xdb:
		n = int(r.be(4))
	default:
		r.bad = true
	}
	return r.Take(n)
}

// Str reads a string as StrBytes does. The strings of one body share one
// copy of it: one allocation for them all instead of one each.
func (r *Reader) Str(f Form) string {
	p := r.StrBytes(f)
	if r.bad {
		return ""
	}
	if r.s == "" {
		r.s = string(r.b)
	}
	return r.s[r.off-len(p) : r.off]
}

// Bin reads a byte slice in the bin forms, as a view of the body.
func (r *Reader) Bin() []byte {
	var n int
	switch r.Next() {
	case 0xc4:
		n = int(r.be(1))
	case 0xc5:
		n = int(r.be(2))
	case 0xc6:
		n = int(r.be(4))
	default:
		r.bad = true
	}
	return r.Take(n)
}

// Int reads a signed integer: a fixint, positive or negative, or an int
// form of any width. It takes a wider form than the codec writes for the
// value too: the decoders that need the codec's own bytes encode what they
// read again and compare.
func (r *Reader) Int() int64 {
	c := r.Next()
	switch {
	case c <= 0x7f:
		return int64(c)
	case c >= 0xe0:
		return int64(int8(c))
	}
	switch c {
	case 0xd0:
		return int64(int8(r.be(1)))
	case 0xd1:
		return int64(int16(r.be(2)))
	case 0xd2:
		return int64(int32(r.be(4)))
	case 0xd3:
		return int64(r.be(8))
	}
	r.bad = true
	return 0
}

// Uint reads an unsigned integer: a positive fixint or a uint form.
func (r *Reader) Uint() uint64 {
	c := r.Next()
	switch {
	case c <= 0x7f:
		return uint64(c)
	case c == 0xcc:
		return r.be(1)
	case c == 0xcd:
		return r.be(2)
	case c == 0xce:
		return r.be(4)
	case c == 0xcf:
		return r.be(8)
	}
	r.bad = true
	return 0
}
