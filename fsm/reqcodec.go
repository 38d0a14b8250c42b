package fsm

// The remembered requests of a snapshot (one frame each, a request with
// the outcome it was answered, its record included) are encoded and
// decoded here without reflection, as the record frames are: the bytes
// are those the codec writes (TestFastRequestFrames), and the decoder
// takes only those, decoding, encoding again and comparing; anything
// else (a rotated record, a revoked family or a client batch's results
// in the outcome) goes to the codec. At 1M live tokens under load a
// snapshot holds some 100k of them.

// fastRequests is off if requestFrame or Outcome has fields this file does
// not know.
var fastRequests = fastCodec && fieldsAre(requestFrame{}, []string{"", "a", "an", "i", "rn"}) &&
	fieldsAre(Outcome{}, []string{"ac", "c", "e", "fr", "o", "op", "r", "x"})

// appendRequest appends q as the codec writes it; false if q holds what
// this file leaves to the codec.
func appendRequest(dst []byte, q *requestFrame) ([]byte, bool) {
	if !fastRequests || q.Family != nil || q.Ops != nil || q.Op != 0 || q.Record != nil && q.Record.Rotated != nil || q.Access != nil && q.Access.Rotated != nil {
		return dst, false
	}
	n := 2 // a, i: never left out
	for _, set := range []bool{q.Access != nil, q.AccRef != 0, q.Count != 0, q.Err != "", q.Record != nil, q.RecRef != 0, len(q.Sealed) > 0} {
		if set {
			n++
		}
	}
	dst = appendMapLen(dst, n)
	dst = appendInt(appendKey(dst, "a"), q.At)
	if q.Access != nil {
		dst = appendRecord(appendKey(dst, "ac"), q.Access)
	}
	if q.AccRef != 0 {
		dst = appendUint(appendKey(dst, "an"), uint64(q.AccRef))
	}
	if q.Count != 0 {
		dst = appendInt(appendKey(dst, "c"), int64(q.Count))
	}
	dst = appendStrField(dst, "e", q.Err)
	dst = appendStr(appendKey(dst, "i"), q.ID)
	if q.Record != nil {
		dst = appendRecord(appendKey(dst, "r"), q.Record)
	}
	if q.RecRef != 0 {
		dst = appendUint(appendKey(dst, "rn"), uint64(q.RecRef))
	}
	if len(q.Sealed) > 0 {
		dst = append(appendBinLen(appendKey(dst, "x"), len(q.Sealed)), q.Sealed...)
	}
	return dst, true
}

var requestFields = []field[requestFrame]{
	{"a", func(r *reader, q *requestFrame) { q.At = r.int() }},
	{"ac", func(r *reader, q *requestFrame) { q.Access = new(Record); readFields(r, q.Access, recordFields) }},
	{"an", func(r *reader, q *requestFrame) { q.AccRef = uint32(r.uint()) }},
	{"c", func(r *reader, q *requestFrame) { q.Count = int(r.int()) }},
	{"e", func(r *reader, q *requestFrame) { q.Err = r.str() }},
	{"i", func(r *reader, q *requestFrame) { q.ID = r.str() }},
	{"r", func(r *reader, q *requestFrame) { q.Record = new(Record); readFields(r, q.Record, recordFields) }},
	{"rn", func(r *reader, q *requestFrame) { q.RecRef = uint32(r.uint()) }},
	{"x", func(r *reader, q *requestFrame) { q.Sealed = r.bin() }},
}

// fastRequest decodes a request frame's body if it is exactly what
// appendRequest writes for what it holds; false otherwise, and the codec
// decodes it. scratch is reused for the check.
func fastRequest(body []byte, scratch *[]byte) (*requestFrame, bool) {
	if !fastRequests {
		return nil, false
	}
	r := newReader(body)
	q := new(requestFrame)
	readFields(r, q, requestFields)
	if !r.Done() {
		return nil, false
	}
	again, ok := appendRequest((*scratch)[:0], q)
	*scratch = again
	if !ok || string(again) != string(body) {
		return nil, false
	}
	return q, true
}
