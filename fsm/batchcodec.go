package fsm

import (
	"bytes"
	"sync"
)

// A Batch is encoded by appending its entries, already encoded, into one
// buffer of the exact size: no reflection, no copy through a growing
// buffer. The bytes are those the msgpack codec writes for a Batch
// (TestBatchEncodingMatchesCodec), so the log format does not change.

// fastBatch is off if Batch has fields this file does not know: then the
// codec encodes and decodes batches, as before.
var fastBatch = fieldsAre(Batch{}, []string{"e", "n", "q"})

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

// decodeBatch decodes body, a Batch's encoding, if it is exactly what
// appendBatch writes for what it holds; false otherwise, and the codec
// decodes it. The entries are slices of body, not copies: a log entry's
// data is never changed, and the commands decoded from them copy what
// they keep. The request ids share one copy of the bytes that hold them.
func decodeBatch(body []byte) (*Batch, bool) {
	r := newReader(body)
	b := new(Batch)
	fields := r.MapLen()
	if r.Bad() || fields < 2 || fields > 3 || string(r.strBytes()) != "e" {
		return nil, false
	}
	var ok bool
	if b.Entries, ok = r.binViews(); !ok {
		return nil, false
	}
	if string(r.strBytes()) != "n" {
		return nil, false
	}
	b.Now = r.int()
	if fields == 3 {
		if string(r.strBytes()) != "q" {
			return nil, false
		}
		b.Reqs = r.reqs()
	}
	if !r.Done() {
		return nil, false
	}
	// Only the codec's own bytes: then both decoders read the same batch.
	if !encodesTo(b, body) {
		return nil, false
	}
	return b, true
}

// checkBufs are the scratch buffers of encodesTo.
var checkBufs = sync.Pool{New: func() any { return new([]byte) }}

// encodesTo tells whether appendBatch writes body for b.
func encodesTo(b *Batch, body []byte) bool {
	buf := checkBufs.Get().(*[]byte)
	*buf = appendBatch((*buf)[:0], b)
	same := len(*buf) == 1+len(body) && bytes.Equal((*buf)[1:], body)
	if cap(*buf) <= maxPooledBuf {
		checkBufs.Put(buf)
	}
	return same
}

// reqs reads an array of strings that share one copy of the bytes from
// the first to the end of the input.
func (r *reader) reqs() []string {
	n := r.ArrayLen()
	if r.Bad() || n > r.Left() {
		r.Fail()
		return nil
	}
	base := r.Off()
	shared := string(r.Body()[base:])
	out := make([]string, n)
	for i := range out {
		p := r.strBytes()
		if r.Bad() {
			return nil
		}
		out[i] = shared[r.Off()-len(p)-base : r.Off()-base]
	}
	return out
}

// A ClientBatch is encoded the same way: a map of its one field, the ops
// already encoded, as the codec writes it (TestClientBatchMatchesCodec).

// fastClientBatch is off if ClientBatch has fields this file does not
// know: then the codec encodes and decodes client batches.
var fastClientBatch = fieldsAre(ClientBatch{}, []string{"o"})

// clientBatchSize is the length of c encoded, at most.
func clientBatchSize(c *ClientBatch) int {
	n := 1 + 1 + 2 + 5
	for _, op := range c.Ops {
		n += 5 + len(op)
	}
	return n
}

// appendClientBatch appends the type byte and the msgpack body of c.
func appendClientBatch(dst []byte, c *ClientBatch) []byte {
	dst = append(dst, byte(TypeClientBatch), 0x81, 0xa1, 'o')
	if c.Ops == nil {
		return append(dst, mpNil)
	}
	dst = appendArrayLen(dst, len(c.Ops))
	for _, op := range c.Ops {
		if op == nil {
			dst = append(dst, mpNil)
			continue
		}
		dst = append(appendBinLen(dst, len(op)), op...)
	}
	return dst
}

// decodeClientBatch decodes body, a ClientBatch's encoding, if it is
// exactly what appendClientBatch writes for what it holds; false
// otherwise, and the codec decodes it. The ops are slices of body, as a
// Batch's entries are.
func decodeClientBatch(body []byte) (*ClientBatch, bool) {
	r := newReader(body)
	c := new(ClientBatch)
	if r.MapLen() != 1 || r.Bad() || string(r.strBytes()) != "o" {
		return nil, false
	}
	var ok bool
	if c.Ops, ok = r.binViews(); !ok {
		return nil, false
	}
	if !r.Done() {
		return nil, false
	}
	buf := checkBufs.Get().(*[]byte)
	*buf = appendClientBatch((*buf)[:0], c)
	same := len(*buf) == 1+len(body) && bytes.Equal((*buf)[1:], body)
	if cap(*buf) <= maxPooledBuf {
		checkBufs.Put(buf)
	}
	if !same {
		return nil, false
	}
	return c, true
}

// binViews reads an array of binary values, or nil, as views of the
// reader's bytes (a nil element stays nil): a Batch's entries, a
// ClientBatch's ops. False if the array's length cannot fit in what is
// left, each element taking a byte at least.
func (r *reader) binViews() ([][]byte, bool) {
	if r.Nil() {
		return nil, true
	}
	n := r.ArrayLen()
	if r.Bad() || n > r.Left() {
		return nil, false
	}
	out := make([][]byte, n)
	for i := range out {
		if r.Nil() {
			continue
		}
		out[i] = r.Bin()
	}
	return out, true
}
