package fsm

import (
	"encoding/binary"
	"math"
)

// A Batch is encoded by appending its entries, already encoded, into one
// buffer of the exact size: no reflection, no copy through a growing
// buffer. The bytes are those the msgpack codec writes for a Batch
// (TestBatchEncodingMatchesCodec), so the log format does not change.

// batchSize is the length of b encoded, at most.
func batchSize(b *Batch) int {
	n := 1 + 1 + 2 + 9 + 2 + 5 + 2 + 5
	for _, e := range b.Entries {
		n += 5 + len(e)
	}
	for _, r := range b.Reqs {
		n += 5 + len(r)
	}
	return n
}

// appendBatch appends the type byte and the msgpack body of b to dst:
// a map of its fields in the codec's order (by name), Reqs left out
// when empty.
func appendBatch(dst []byte, b *Batch) []byte {
	fields := byte(2)
	if len(b.Reqs) > 0 {
		fields = 3
	}
	dst = append(dst, byte(TypeBatch), 0x80|fields)
	dst = append(dst, 0xa1, 'e')
	if b.Entries == nil {
		dst = append(dst, mpNil)
	} else {
		dst = appendArrayLen(dst, len(b.Entries))
		for _, e := range b.Entries {
			if e == nil {
				dst = append(dst, mpNil)
				continue
			}
			dst = appendBinLen(dst, len(e))
			dst = append(dst, e...)
		}
	}
	dst = append(dst, 0xa1, 'n')
	dst = appendInt(dst, b.Now)
	if fields == 3 {
		dst = append(dst, 0xa1, 'q')
		dst = appendArrayLen(dst, len(b.Reqs))
		for _, r := range b.Reqs {
			dst = appendStrLen(dst, len(r))
			dst = append(dst, r...)
		}
	}
	return dst
}

const mpNil = 0xc0

// appendInt writes i as the codec writes a signed integer: the shortest
// signed form, positive fixints included.
func appendInt(dst []byte, i int64) []byte {
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

func appendArrayLen(dst []byte, n int) []byte {
	switch {
	case n < 16:
		return append(dst, 0x90|byte(n))
	case n < 1<<16:
		return binary.BigEndian.AppendUint16(append(dst, 0xdc), uint16(n))
	}
	return binary.BigEndian.AppendUint32(append(dst, 0xdd), uint32(n))
}

func appendBinLen(dst []byte, n int) []byte {
	switch {
	case n < 1<<8:
		return append(dst, 0xc4, byte(n))
	case n < 1<<16:
		return binary.BigEndian.AppendUint16(append(dst, 0xc5), uint16(n))
	}
	return binary.BigEndian.AppendUint32(append(dst, 0xc6), uint32(n))
}

func appendStrLen(dst []byte, n int) []byte {
	switch {
	case n < 32:
		return append(dst, 0xa0|byte(n))
	case n < 1<<8:
		return append(dst, 0xd9, byte(n))
	case n < 1<<16:
		return binary.BigEndian.AppendUint16(append(dst, 0xda), uint16(n))
	}
	return binary.BigEndian.AppendUint32(append(dst, 0xdb), uint32(n))
}
