// Package msgpack appends msgpack values byte for byte as the go-msgpack
// codec writes them, without reflection: the fsm's log entries and
// snapshot records, and the forwarded calls between nodes. Callers write
// maps of their fields themselves; this package writes the values.
//
// The codec's handles differ in one setting, WriteExt, which changes how
// strings and byte slices are written: a Form holds it, chosen once for
// each handle, and only those two writers look at it.
package msgpack

import (
	"encoding/binary"
	"math"
)

// Form is how a handle writes strings and byte slices. With WriteExt (the
// fsm's handle), a string of 32 to 255 bytes takes the str8 form and a
// byte slice the bin forms; without it (the handle of the node-to-node
// calls), neither: the spec before str8 and bin, a byte slice written as
// a string.
type Form struct {
	// WriteExt is the handle's WriteExt.
	WriteExt bool
}

// AppendStrLen appends the header of a string of n bytes.
func (f Form) AppendStrLen(dst []byte, n int) []byte {
	switch {
	case n < 32:
		return append(dst, 0xa0|byte(n))
	case n < 1<<8 && f.WriteExt:
		return append(dst, 0xd9, byte(n))
	case n < 1<<16:
		return binary.BigEndian.AppendUint16(append(dst, 0xda), uint16(n))
	}
	return binary.BigEndian.AppendUint32(append(dst, 0xdb), uint32(n))
}

// AppendStr appends s.
func (f Form) AppendStr(dst []byte, s string) []byte {
	return append(f.AppendStrLen(dst, len(s)), s...)
}

// AppendBytesLen appends the header of a byte slice of n bytes: bin with
// WriteExt, a string's without.
func (f Form) AppendBytesLen(dst []byte, n int) []byte {
	if !f.WriteExt {
		return f.AppendStrLen(dst, n)
	}
	switch {
	case n < 1<<8:
		return append(dst, 0xc4, byte(n))
	case n < 1<<16:
		return binary.BigEndian.AppendUint16(append(dst, 0xc5), uint16(n))
	}
	return binary.BigEndian.AppendUint32(append(dst, 0xc6), uint32(n))
}

// AppendBytes appends p, which is not nil (the codec writes nil as nil).
func (f Form) AppendBytes(dst, p []byte) []byte {
	return append(f.AppendBytesLen(dst, len(p)), p...)
}

// AppendStrField appends key and s unless s is empty (omitempty).
func (f Form) AppendStrField(dst []byte, key, s string) []byte {
	if s == "" {
		return dst
	}
	return f.AppendStr(f.AppendStr(dst, key), s)
}

// AppendIntField appends key and i unless i is 0 (omitempty).
func (f Form) AppendIntField(dst []byte, key string, i int64) []byte {
	if i == 0 {
		return dst
	}
	return AppendInt(f.AppendStr(dst, key), i)
}

// AppendInt appends i as the codec writes a signed integer: the shortest
// signed form, positive fixints included.
func AppendInt(dst []byte, i int64) []byte {
	switch {
	case i >= -32 && i <= math.MaxInt8:
		return append(dst, byte(i))
	case i >= math.MinInt8 && i < 0:
		return append(dst, 0xd0, byte(i))
	case i >= math.MinInt16 && i <= math.MaxInt16:
		return binary.BigEndian.AppendUint16(append(dst, 0xd1), uint16(i))
	case i >= math.MinInt32 && i <= math.MaxInt32:
		return binary.BigEndian.AppendUint32(append(dst, 0xd2), uint32(i))
	}
	return binary.BigEndian.AppendUint64(append(dst, 0xd3), uint64(i))
}

// AppendUint appends i as the codec writes an unsigned integer.
func AppendUint(dst []byte, i uint64) []byte {
	switch {
	case i <= math.MaxInt8:
		return append(dst, byte(i))
	case i <= math.MaxUint8:
		return append(dst, 0xcc, byte(i))
	case i <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(dst, 0xcd), uint16(i))
	case i <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(dst, 0xce), uint32(i))
	}
	return binary.BigEndian.AppendUint64(append(dst, 0xcf), i)
}

// AppendArrayLen appends the header of an array of n elements.
func AppendArrayLen(dst []byte, n int) []byte { return appendContainerLen(dst, n, 0x90, 0xdc) }

// AppendMapLen appends the header of a map of n pairs.
func AppendMapLen(dst []byte, n int) []byte { return appendContainerLen(dst, n, 0x80, 0xde) }

// appendContainerLen writes the length of an array or a map: fix holds
// the fixed form's high bits, c16 is the 16-bit form's code and the 32-bit
// form's is the next one.
func appendContainerLen(dst []byte, n int, fix, c16 byte) []byte {
	switch {
	case n < 16:
		return append(dst, fix|byte(n))
	case n < 1<<16:
		return binary.BigEndian.AppendUint16(append(dst, c16), uint16(n))
	}
	return binary.BigEndian.AppendUint32(append(dst, c16+1), uint32(n))
}
