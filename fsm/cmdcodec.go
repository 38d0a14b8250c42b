package fsm

import (
	"math"
	"reflect"
	"slices"
	"strings"

	"github.com/tokenstore/tokenstore/internal/msgpack"
)

// The commands of nearly every write, Issue and Consume, are encoded and
// decoded here without reflection: they are encoded once and decoded on
// every replica, and the codec's reflection costs more than the rest of
// their way through the node. The bytes are those the codec writes (a map
// of the fields that are not empty, in the order of their names;
// TestFastCodecMatchesCodec), so the log format does not change.
//
// The decoder takes only what the codec writes: it decodes, encodes the
// result again and compares. Any other input (another order, another
// integer width, a field it does not know, a rotated record) goes to the
// codec, which reads it as it always has. So every node reads an entry the
// same, whichever of the two decoders reads it.

// fastCodec is off if Record, Issue or Consume has fields this file does
// not know (a field added without teaching it here): then the codec
// encodes and decodes them all, as before.
var fastCodec = fieldsAre(Record{}, recordKeys) && fieldsAre(Issue{}, []string{"r", "ttl"}) &&
	fieldsAre(Consume{}, []string{"c", "fh", "h", "k"})

// recordKeys are Record's codec names, in the order they are encoded:
// those of recordFields, and Rotated's.
var recordKeys = []string{"c", "ca", "ci", "d", "dr", "ea", "f", "g", "h", "hu", "i", "ia", "ip", "k",
	"lu", "mi", "mu", "r", "re", "ro", "s", "sc", "st", "t", "ua", "ul"}

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

// fastEncode appends c's type byte and body to dst; false if c is not one
// this file encodes.
func fastEncode(dst []byte, c Command) ([]byte, bool) {
	if !fastCodec {
		return dst, false
	}
	switch c := c.(type) {
	case *Issue:
		if c == nil || c.Record.Rotated != nil {
			return dst, false
		}
		dst = append(dst, byte(TypeIssue))
		return appendIssue(dst, c), true
	case *Consume:
		if c == nil {
			return dst, false
		}
		dst = append(dst, byte(TypeConsume))
		return appendConsume(dst, c), true
	}
	return dst, false
}

func appendIssue(dst []byte, c *Issue) []byte {
	n := 1
	if c.TTL != 0 {
		n++
	}
	dst = appendMapLen(dst, n)
	dst = appendRecord(appendKey(dst, "r"), &c.Record)
	if c.TTL != 0 {
		dst = appendInt(appendKey(dst, "ttl"), c.TTL)
	}
	return dst
}

func appendConsume(dst []byte, c *Consume) []byte {
	n := 1
	for _, set := range []bool{c.ClientID != "", c.FamilyHold != 0, c.Kind != ""} {
		if set {
			n++
		}
	}
	dst = appendMapLen(dst, n)
	dst = appendStrField(dst, "c", c.ClientID)
	dst = appendIntField(dst, "fh", c.FamilyHold)
	dst = appendStr(appendKey(dst, "h"), c.Hash)
	return appendStrField(dst, "k", c.Kind)
}

// AppendRecord appends r, whose Rotated is nil, as a handle of form f
// writes it: the log's and the snapshots' records in the log's form, the
// answers of forwarded writes in the form of the calls between nodes.
func AppendRecord(dst []byte, r *Record, f msgpack.Form) []byte {
	n := 6 // i, h, k, ca, ci, mi: never left out
	for _, set := range []bool{r.ClientID != "", len(r.Data) > 0, r.DetectReuse, r.ExpiresAt != 0,
		r.Family != "", r.Generator != "", r.HoldUntil != 0, r.InvalidatedAt != 0, r.IP != "",
		r.LastUsedAt != 0, r.MaxUses != 0, r.RLC != "", r.Reason != "", r.Subject != "",
		len(r.Scopes) > 0, r.State != 0, r.Title != "", r.UserAgent != "", r.UsesLeft != 0} {
		if set {
			n++
		}
	}
	dst = msgpack.AppendMapLen(dst, n)
	dst = f.AppendStrField(dst, "c", r.ClientID)
	dst = msgpack.AppendInt(f.AppendStr(dst, "ca"), r.CreatedAt)
	dst = msgpack.AppendUint(f.AppendStr(dst, "ci"), r.CreateIndex)
	if len(r.Data) > 0 {
		dst = f.AppendBytes(f.AppendStr(dst, "d"), r.Data)
	}
	if r.DetectReuse {
		dst = append(f.AppendStr(dst, "dr"), 0xc3)
	}
	dst = f.AppendIntField(dst, "ea", r.ExpiresAt)
	dst = f.AppendStrField(dst, "f", r.Family)
	dst = f.AppendStrField(dst, "g", r.Generator)
	dst = f.AppendStr(f.AppendStr(dst, "h"), r.Hash)
	dst = f.AppendIntField(dst, "hu", r.HoldUntil)
	dst = f.AppendStr(f.AppendStr(dst, "i"), r.ID)
	dst = f.AppendIntField(dst, "ia", r.InvalidatedAt)
	dst = f.AppendStrField(dst, "ip", r.IP)
	dst = f.AppendStr(f.AppendStr(dst, "k"), r.Kind)
	dst = f.AppendIntField(dst, "lu", r.LastUsedAt)
	dst = msgpack.AppendUint(f.AppendStr(dst, "mi"), r.ModifyIndex)
	dst = f.AppendIntField(dst, "mu", r.MaxUses)
	dst = f.AppendStrField(dst, "r", r.RLC)
	dst = f.AppendStrField(dst, "re", r.Reason)
	dst = f.AppendStrField(dst, "s", r.Subject)
	if len(r.Scopes) > 0 {
		dst = msgpack.AppendArrayLen(f.AppendStr(dst, "sc"), len(r.Scopes))
		for _, s := range r.Scopes {
			dst = f.AppendStr(dst, s)
		}
	}
	if r.State != 0 {
		dst = msgpack.AppendUint(f.AppendStr(dst, "st"), uint64(r.State))
	}
	dst = f.AppendStrField(dst, "t", r.Title)
	dst = f.AppendStrField(dst, "ua", r.UserAgent)
	return f.AppendIntField(dst, "ul", r.UsesLeft)
}

// logForm is how msgpackHandle writes strings and byte slices: the form
// of everything the fsm writes (log entries, snapshot frames).
var logForm = msgpack.Form{WriteExt: msgpackHandle.WriteExt}

// The fsm's codecs write with these: the msgpack package's writers in the
// log's form.

func appendRecord(dst []byte, r *Record) []byte { return AppendRecord(dst, r, logForm) }

func appendKey(dst []byte, k string) []byte { return logForm.AppendStr(dst, k) }

func appendStr(dst []byte, s string) []byte { return logForm.AppendStr(dst, s) }

func appendStrLen(dst []byte, n int) []byte { return logForm.AppendStrLen(dst, n) }

func appendBinLen(dst []byte, n int) []byte { return logForm.AppendBytesLen(dst, n) }

func appendStrField(dst []byte, key, s string) []byte { return logForm.AppendStrField(dst, key, s) }

func appendIntField(dst []byte, key string, i int64) []byte {
	return logForm.AppendIntField(dst, key, i)
}

func appendInt(dst []byte, i int64) []byte { return msgpack.AppendInt(dst, i) }

func appendUint(dst []byte, i uint64) []byte { return msgpack.AppendUint(dst, i) }

func appendArrayLen(dst []byte, n int) []byte { return msgpack.AppendArrayLen(dst, n) }

func appendMapLen(dst []byte, n int) []byte { return msgpack.AppendMapLen(dst, n) }

// cmdSlab holds the Issues and Consumes of one log entry's batch, made
// at once (one allocation for each type instead of one per command), and
// the reader they are decoded with. A decode that fails leaves its slot
// unused.
type cmdSlab struct {
	r        reader
	issues   []Issue
	consumes []Consume
}

// newCmdSlab returns a slab with room for the Issues and Consumes among
// entries, by their type bytes.
func newCmdSlab(entries [][]byte) *cmdSlab {
	var issues, consumes int
	for _, e := range entries {
		if len(e) > 0 {
			switch Type(e[0]) {
			case TypeIssue:
				issues++
			case TypeConsume:
				consumes++
			}
		}
	}
	return &cmdSlab{issues: make([]Issue, 0, issues), consumes: make([]Consume, 0, consumes)}
}

// next returns the next free element of *s, or a new one when it is full.
func next[T any](s *[]T) *T {
	if n := len(*s); n < cap(*s) {
		*s = (*s)[:n+1]
		return &(*s)[n]
	}
	return new(T)
}

// fastDecode decodes body, the encoding of a command of type t, if it is
// exactly what fastEncode writes for what it holds; false otherwise, and
// the codec decodes it.
func fastDecode(t Type, body []byte) (applier, bool) { return fastDecodeIn(t, body, nil) }

// fastDecodeIn is fastDecode taking the command from slab when it is set.
func fastDecodeIn(t Type, body []byte, slab *cmdSlab) (applier, bool) {
	if !fastCodec {
		return nil, false
	}
	if slab == nil {
		slab = new(cmdSlab)
	}
	slab.r = reader{msgpack.NewReader(body)}
	r := &slab.r
	var c applier
	switch t {
	case TypeIssue:
		v := next(&slab.issues)
		readFields(r, v, issueFields)
		c = v
	case TypeConsume:
		v := next(&slab.consumes)
		readFields(r, v, consumeFields)
		c = v
	default:
		return nil, false
	}
	if !r.Done() {
		return nil, false
	}
	// Only what the codec writes, byte for byte: then both decoders read
	// the same command.
	var scratch [512]byte
	again, ok := fastEncode(scratch[:0], c)
	if !ok || len(again) != 1+len(body) || string(again[1:]) != string(body) {
		return nil, false
	}
	return c, true
}

// reader reads msgpack as msgpackHandle writes it (internal/msgpack's
// Reader in the log's form); on anything else it turns bad and reads
// nothing more.
type reader struct {
	msgpack.Reader
}

// newReader returns a reader of body.
func newReader(body []byte) *reader { return &reader{msgpack.NewReader(body)} }

// strBytes reads a string's bytes, str8 included, as a view of the input.
func (r *reader) strBytes() []byte { return r.StrBytes(logForm) }

// str reads a string. The strings of one command share one copy of its
// body: one allocation instead of one per field.
func (r *reader) str() string { return r.Str(logForm) }

// bin reads a byte slice in the bin forms, copied out of the input.
func (r *reader) bin() []byte { return slices.Clone(r.Bin()) }

// int and uint are the names the field tables read integers with.

func (r *reader) int() int64 { return r.Int() }

func (r *reader) uint() uint64 { return r.Uint() }

// field is one key of a struct and how to read its value into v.
type field[T any] struct {
	key  string
	read func(r *reader, v *T)
}

// readFields reads a map into v. Its keys must come in the order of
// fields; one not in it is refused.
func readFields[T any](r *reader, v *T, fields []field[T]) {
	n := r.MapLen()
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

var issueFields = []field[Issue]{
	{"r", func(r *reader, c *Issue) { readFields(r, &c.Record, recordFields) }},
	{"ttl", func(r *reader, c *Issue) { c.TTL = r.int() }},
}

var consumeFields = []field[Consume]{
	{"c", func(r *reader, c *Consume) { c.ClientID = r.str() }},
	{"fh", func(r *reader, c *Consume) { c.FamilyHold = r.int() }},
	{"h", func(r *reader, c *Consume) { c.Hash = r.str() }},
	{"k", func(r *reader, c *Consume) { c.Kind = r.str() }},
}

// recordFields are Record's fields but Rotated, which the codec reads.
var recordFields = []field[Record]{
	{"c", func(r *reader, rec *Record) { rec.ClientID = r.str() }},
	{"ca", func(r *reader, rec *Record) { rec.CreatedAt = r.int() }},
	{"ci", func(r *reader, rec *Record) { rec.CreateIndex = r.uint() }},
	{"d", func(r *reader, rec *Record) { rec.Data = r.bin() }},
	{"dr", func(r *reader, rec *Record) { rec.DetectReuse = r.Next() == 0xc3 }},
	{"ea", func(r *reader, rec *Record) { rec.ExpiresAt = r.int() }},
	{"f", func(r *reader, rec *Record) { rec.Family = r.str() }},
	{"g", func(r *reader, rec *Record) { rec.Generator = r.str() }},
	{"h", func(r *reader, rec *Record) { rec.Hash = r.str() }},
	{"hu", func(r *reader, rec *Record) { rec.HoldUntil = r.int() }},
	{"i", func(r *reader, rec *Record) { rec.ID = r.str() }},
	{"ia", func(r *reader, rec *Record) { rec.InvalidatedAt = r.int() }},
	{"ip", func(r *reader, rec *Record) { rec.IP = r.str() }},
	{"k", func(r *reader, rec *Record) { rec.Kind = r.str() }},
	{"lu", func(r *reader, rec *Record) { rec.LastUsedAt = r.int() }},
	{"mi", func(r *reader, rec *Record) { rec.ModifyIndex = r.uint() }},
	{"mu", func(r *reader, rec *Record) { rec.MaxUses = r.int() }},
	{"r", func(r *reader, rec *Record) { rec.RLC = r.str() }},
	{"re", func(r *reader, rec *Record) { rec.Reason = r.str() }},
	{"s", func(r *reader, rec *Record) { rec.Subject = r.str() }},
	{"sc", func(r *reader, rec *Record) { rec.Scopes = r.strs() }},
	{"st", func(r *reader, rec *Record) {
		v := r.uint()
		if v > math.MaxUint8 {
			r.Fail()
		}
		rec.State = State(v)
	}},
	{"t", func(r *reader, rec *Record) { rec.Title = r.str() }},
	{"ua", func(r *reader, rec *Record) { rec.UserAgent = r.str() }},
	{"ul", func(r *reader, rec *Record) { rec.UsesLeft = r.int() }},
}

// strs reads an array of strings.
func (r *reader) strs() []string {
	n := r.ArrayLen()
	if n > r.Left() { // each element takes a byte at least
		r.Fail()
		return nil
	}
	ss := make([]string, n)
	for i := range ss {
		ss[i] = r.str()
	}
	return ss
}

// fastRecord decodes a snapshot's record frame if it is exactly what
// appendRecord writes for what it holds (a record that was not rotated);
// false otherwise, and the codec decodes it.
func fastRecord(body []byte) (*Record, bool) {
	rec := new(Record)
	if !fastRecordTo(body, rec) {
		return nil, false
	}
	return rec, true
}

// fastRecordTo is fastRecord decoding into *rec, which it sets whole:
// for a restore, which compacts each record as it is read and reuses one
// Record for them all. *rec is unspecified when it returns false.
func fastRecordTo(body []byte, rec *Record) bool {
	if !fastCodec {
		return false
	}
	*rec = Record{}
	r := newReader(body)
	readFields(r, rec, recordFields)
	if !r.Done() {
		return false
	}
	var scratch [512]byte
	return string(appendRecord(scratch[:0], rec)) == string(body)
}
