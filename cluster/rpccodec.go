package cluster

import (
	"bytes"
	"math"
	"reflect"
	"slices"
	"strings"
	"sync"

	"github.com/tokenstore/tokenstore/fsm"
	"github.com/tokenstore/tokenstore/internal/msgpack"
)

// The forwarded writes and their answers, nearly every node-to-node call,
// are encoded and decoded here without reflection. The bytes are those
// rpcHandle writes (a map of the fields that are not empty, in the order
// of their names; strings without the str8 form, byte slices as strings:
// rpcForm), written with the fsm's writers in that form
// (internal/msgpack, fsm.AppendRecord). TestFastRPCMatchesCodec compares
// them, so the wire does not change and
// a node of an earlier release reads them, and is read, as before.
//
// The decoders take only those bytes: they decode, encode the result
// again and compare. Anything else (another order, another integer width,
// a field they do not know, an answer with what this file leaves to the
// codec) goes to the codec, which reads it as it always has
// (FuzzDecodeFastRPC: what they accept, the codec reads the same).

// fastRPC is off if a struct of these calls has fields this file does not
// know (a field added without teaching it here): the codec then encodes
// and decodes them all, as before.
var fastRPC = fieldsAre(applyArgs{}, []string{"e", "q"}) && fieldsAre(applyBatchArgs{}, []string{"w"}) &&
	fieldsAre(applyBatchReply{}, []string{"r"}) && fieldsAre(rpcReply{}, []string{"", "f", "i"}) &&
	fieldsAre(fsm.Outcome{}, []string{"ac", "c", "e", "fr", "o", "op", "r", "x"}) &&
	fieldsAre(fsm.Record{}, []string{"c", "ca", "ci", "d", "dr", "ea", "f", "g", "h", "hu", "i", "ia", "ip", "k",
		"lu", "mi", "mu", "r", "re", "ro", "s", "sc", "st", "t", "ua", "ul"})

// rpcForm is how rpcHandle writes strings and byte slices: no str8, byte
// slices as strings.
var rpcForm = msgpack.Form{WriteExt: rpcHandle.WriteExt}

// fieldsAre tells whether the codec names of v's fields are keys.
func fieldsAre(v any, keys []string) bool {
	t := reflect.TypeOf(v)
	var names []string
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("codec"), ",")
		names = append(names, name)
	}
	slices.Sort(names)
	return slices.Equal(names, keys)
}

// appendFastRPC appends v as rpcHandle encodes it; false if v is not of
// the calls this file encodes, or holds what it leaves to the codec.
func appendFastRPC(dst []byte, v any) ([]byte, bool) {
	if !fastRPC {
		return dst, false
	}
	switch v := v.(type) {
	case *applyBatchArgs:
		if v.Writes == nil {
			return dst, false // the codec writes nil
		}
		for i := range v.Writes {
			if v.Writes[i].Entry == nil {
				return dst, false
			}
		}
		dst = msgpack.AppendArrayLen(rpcForm.AppendStr(msgpack.AppendMapLen(dst, 1), "w"), len(v.Writes))
		for i := range v.Writes {
			dst = appendApplyArgs(dst, &v.Writes[i])
		}
		return dst, true
	case *applyArgs:
		if v.Entry == nil {
			return dst, false
		}
		return appendApplyArgs(dst, v), true
	case *applyBatchReply:
		if v.Replies == nil {
			return dst, false
		}
		for i := range v.Replies {
			if !fastReply(&v.Replies[i]) {
				return dst, false
			}
		}
		dst = msgpack.AppendArrayLen(rpcForm.AppendStr(msgpack.AppendMapLen(dst, 1), "r"), len(v.Replies))
		for i := range v.Replies {
			dst = appendReply(dst, &v.Replies[i])
		}
		return dst, true
	case *rpcReply:
		if !fastReply(v) {
			return dst, false
		}
		return appendReply(dst, v), true
	}
	return dst, false
}

func appendApplyArgs(dst []byte, a *applyArgs) []byte {
	dst = rpcForm.AppendStr(msgpack.AppendMapLen(dst, 2), "e")
	dst = rpcForm.AppendBytes(dst, a.Entry)
	return rpcForm.AppendStr(rpcForm.AppendStr(dst, "q"), a.Req)
}

// fastReply tells whether appendReply writes r: an answer of a record (not
// a rotated one), a count, a business error or a failure.
func fastReply(r *rpcReply) bool {
	o := &r.Outcome
	return o.Access == nil && len(o.Sealed) == 0 && o.Family == nil && o.Ops == nil && o.Op == 0 &&
		(o.Record == nil || o.Record.Rotated == nil)
}

func appendReply(dst []byte, r *rpcReply) []byte {
	n := 1 // i: never left out
	for _, set := range []bool{r.Count != 0, r.Err != "", r.Fail != "", r.Record != nil} {
		if set {
			n++
		}
	}
	dst = msgpack.AppendMapLen(dst, n)
	dst = rpcForm.AppendIntField(dst, "c", int64(r.Count))
	dst = rpcForm.AppendStrField(dst, "e", r.Err)
	dst = rpcForm.AppendStrField(dst, "f", r.Fail)
	dst = msgpack.AppendUint(rpcForm.AppendStr(dst, "i"), r.Index)
	if r.Record != nil {
		dst = fsm.AppendRecord(rpcForm.AppendStr(dst, "r"), r.Record, rpcForm)
	}
	return dst
}

// decodeFastRPC decodes body into v if v is of the calls this file
// decodes and body is exactly what appendFastRPC writes for what it
// holds; false otherwise (v is then untouched), and the codec decodes it.
// What v keeps is copied out of body: strings share one copy of it, byte
// slices another, so a pooled body can be reused once this returns.
func decodeFastRPC(body []byte, v any) bool {
	ok, _ := readFastRPC(body, v)
	return ok
}

// readFastRPC is decodeFastRPC that also tells when body holds more
// writes or answers than a call may (maxForwardBatch): decodeRPC refuses
// such a body rather than hand it to the codec, which would make room
// for every element it claims, up to the body's size in elements of
// 40-128 bytes each.
func readFastRPC(body []byte, v any) (ok bool, tooMany int) {
	if !fastRPC {
		return false, 0
	}
	r := &rpcReader{Reader: msgpack.NewReader(body)}
	defer func() { tooMany = r.tooMany }()
	switch v := v.(type) {
	case *applyBatchArgs:
		var out applyBatchArgs
		readRPCFields(r, &out, batchArgsFields)
		if !r.Done() || !encodesTo(&out, body) {
			return false, 0
		}
		*v = out
	case *applyArgs:
		var out applyArgs
		readRPCFields(r, &out, applyArgsFields)
		if !r.Done() || !encodesTo(&out, body) {
			return false, 0
		}
		*v = out
	case *applyBatchReply:
		var out applyBatchReply
		readRPCFields(r, &out, batchReplyFields)
		if !r.Done() || !encodesTo(&out, body) {
			return false, 0
		}
		*v = out
	case *rpcReply:
		var out rpcReply
		readRPCFields(r, &out, replyFields)
		if !r.Done() || !encodesTo(&out, body) {
			return false, 0
		}
		*v = out
	default:
		return false, 0
	}
	return true, 0
}

// encodesTo tells whether v encodes to body, byte for byte.
func encodesTo(v any, body []byte) bool {
	match := false
	withScratch(func(scratch *[]byte) {
		again, ok := appendFastRPC((*scratch)[:0], v)
		*scratch = again
		match = ok && bytes.Equal(again, body)
	})
	return match
}

// scratchBufs hold the encodings that decoding compares with its input.
var scratchBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// withScratch calls f with a pooled buffer.
func withScratch(f func(*[]byte)) {
	bp := scratchBufs.Get().(*[]byte)
	f(bp)
	if cap(*bp) <= maxPooledRPCBuf {
		scratchBufs.Put(bp)
	}
}

// rpcReader reads msgpack as rpcHandle writes it (internal/msgpack's
// Reader in rpcForm: no str8, byte slices as strings); on anything else it
// turns bad and reads nothing more.
type rpcReader struct {
	msgpack.Reader
	own []byte // the body copied, once a byte slice is read
	// tooMany: the count of writes or answers an array claims, when more
	// than a call may hold.
	tooMany int
}

// batchLen reads the length of a call's array of writes or answers: at
// most maxForwardBatch, which the leader also checks of what it decodes.
func (r *rpcReader) batchLen() int {
	n := r.arrayLen()
	if n > maxForwardBatch {
		r.Fail()
		r.tooMany = n
		return 0
	}
	return n
}

// arrayLen and mapLen read an array's or a map's length; a length beyond
// what is left to read (each element takes a byte at least) is bad.

func (r *rpcReader) arrayLen() int { return r.within(r.ArrayLen()) }

func (r *rpcReader) mapLen() int { return r.within(r.MapLen()) }

func (r *rpcReader) within(n int) int {
	if n > r.Left() {
		r.Fail()
		return 0
	}
	return n
}

// strBytes reads a string's bytes (no str8), as a view of the input.
func (r *rpcReader) strBytes() []byte { return r.StrBytes(rpcForm) }

// str reads a string: the strings of one body share one copy of it.
func (r *rpcReader) str() string { return r.Str(rpcForm) }

// bytes reads a byte slice, written as a string: the byte slices of one
// body share one copy of it.
func (r *rpcReader) bytes() []byte {
	p := r.strBytes()
	if r.Bad() {
		return nil
	}
	if r.own == nil {
		r.own = bytes.Clone(r.Body())
	}
	off := r.Off()
	return r.own[off-len(p) : off : off]
}

// rpcField is one key of a struct and how to read its value into v.
type rpcField[T any] struct {
	key  string
	read func(r *rpcReader, v *T)
}

// readRPCFields reads a map into v. Its keys must come in the order of
// fields; one not in it is refused.
func readRPCFields[T any](r *rpcReader, v *T, fields []rpcField[T]) {
	n := r.mapLen()
	at := 0
	for ; n > 0 && !r.Bad(); n-- {
		k := r.strBytes()
		for at < len(fields) && fields[at].key != string(k) {
			at++
		}
		if at == len(fields) {
			r.Fail()
			return
		}
		fields[at].read(r, v)
		at++
	}
}

var batchArgsFields = []rpcField[applyBatchArgs]{
	{"w", func(r *rpcReader, a *applyBatchArgs) {
		a.Writes = make([]applyArgs, r.batchLen())
		for i := range a.Writes {
			readRPCFields(r, &a.Writes[i], applyArgsFields)
		}
	}},
}

var applyArgsFields = []rpcField[applyArgs]{
	{"e", func(r *rpcReader, a *applyArgs) { a.Entry = r.bytes() }},
	{"q", func(r *rpcReader, a *applyArgs) { a.Req = r.str() }},
}

var batchReplyFields = []rpcField[applyBatchReply]{
	{"r", func(r *rpcReader, a *applyBatchReply) {
		a.Replies = make([]rpcReply, r.batchLen())
		for i := range a.Replies {
			readRPCFields(r, &a.Replies[i], replyFields)
		}
	}},
}

var replyFields = []rpcField[rpcReply]{
	{"c", func(r *rpcReader, p *rpcReply) {
		c := r.Int()
		if c < math.MinInt || c > math.MaxInt {
			r.Fail()
		}
		p.Count = int(c)
	}},
	{"e", func(r *rpcReader, p *rpcReply) { p.Err = r.str() }},
	{"f", func(r *rpcReader, p *rpcReply) { p.Fail = r.str() }},
	{"i", func(r *rpcReader, p *rpcReply) { p.Index = r.Uint() }},
	{"r", func(r *rpcReader, p *rpcReply) { p.Record = new(fsm.Record); readRPCFields(r, p.Record, recordFields) }},
}

// recordFields are Record's fields but Rotated, which the codec reads.
var recordFields = []rpcField[fsm.Record]{
	{"c", func(r *rpcReader, rec *fsm.Record) { rec.ClientID = r.str() }},
	{"ca", func(r *rpcReader, rec *fsm.Record) { rec.CreatedAt = r.Int() }},
	{"ci", func(r *rpcReader, rec *fsm.Record) { rec.CreateIndex = r.Uint() }},
	{"d", func(r *rpcReader, rec *fsm.Record) { rec.Data = r.bytes() }},
	{"dr", func(r *rpcReader, rec *fsm.Record) { rec.DetectReuse = r.Next() == 0xc3 }},
	{"ea", func(r *rpcReader, rec *fsm.Record) { rec.ExpiresAt = r.Int() }},
	{"f", func(r *rpcReader, rec *fsm.Record) { rec.Family = r.str() }},
	{"g", func(r *rpcReader, rec *fsm.Record) { rec.Generator = r.str() }},
	{"h", func(r *rpcReader, rec *fsm.Record) { rec.Hash = r.str() }},
	{"hu", func(r *rpcReader, rec *fsm.Record) { rec.HoldUntil = r.Int() }},
	{"i", func(r *rpcReader, rec *fsm.Record) { rec.ID = r.str() }},
	{"ia", func(r *rpcReader, rec *fsm.Record) { rec.InvalidatedAt = r.Int() }},
	{"ip", func(r *rpcReader, rec *fsm.Record) { rec.IP = r.str() }},
	{"k", func(r *rpcReader, rec *fsm.Record) { rec.Kind = r.str() }},
	{"lu", func(r *rpcReader, rec *fsm.Record) { rec.LastUsedAt = r.Int() }},
	{"mi", func(r *rpcReader, rec *fsm.Record) { rec.ModifyIndex = r.Uint() }},
	{"mu", func(r *rpcReader, rec *fsm.Record) { rec.MaxUses = r.Int() }},
	{"r", func(r *rpcReader, rec *fsm.Record) { rec.RLC = r.str() }},
	{"re", func(r *rpcReader, rec *fsm.Record) { rec.Reason = r.str() }},
	{"s", func(r *rpcReader, rec *fsm.Record) { rec.Subject = r.str() }},
	{"sc", func(r *rpcReader, rec *fsm.Record) {
		rec.Scopes = make([]string, r.arrayLen())
		for i := range rec.Scopes {
			rec.Scopes[i] = r.str()
		}
	}},
	{"st", func(r *rpcReader, rec *fsm.Record) {
		v := r.Uint()
		if v > math.MaxUint8 {
			r.Fail()
		}
		rec.State = fsm.State(v)
	}},
	{"t", func(r *rpcReader, rec *fsm.Record) { rec.Title = r.str() }},
	{"ua", func(r *rpcReader, rec *fsm.Record) { rec.UserAgent = r.str() }},
	{"ul", func(r *rpcReader, rec *fsm.Record) { rec.UsesLeft = r.Int() }},
}
