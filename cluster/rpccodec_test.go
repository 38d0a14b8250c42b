package cluster

import (
	"bytes"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/go-msgpack/v2/codec"

	"github.com/tokenstore/tokenstore/fsm"
)

// codecBytes is v as rpcHandle's reflection encodes it.
func codecBytes(t testing.TB, v any) []byte {
	t.Helper()
	var b []byte
	if err := codec.NewEncoderBytes(&b, rpcHandle).Encode(v); err != nil {
		t.Fatal(err)
	}
	return b
}

// codecDecode decodes b into a new value of v's type with rpcHandle's
// reflection.
func codecDecode(b []byte, v any) (any, error) {
	out := reflect.New(reflect.TypeOf(v).Elem()).Interface()
	return out, codec.NewDecoderBytes(b, rpcHandle).Decode(out)
}

func sampleRPCRecords() []*fsm.Record {
	full := &fsm.Record{ID: strings.Repeat("i", 22), Hash: strings.Repeat("h", 64), Kind: "oauth2_code",
		Subject: "user:42", ClientID: "app1", Scopes: []string{"read", "write"}, Family: "grant-7",
		Data: []byte(`{"a":1}`), RLC: "rlc", MaxUses: 3, UsesLeft: -1, CreatedAt: 1764590000123456789,
		ExpiresAt: 1764590600123456789, LastUsedAt: 300, IP: "198.51.100.7", UserAgent: strings.Repeat("u", 31),
		Title: strings.Repeat("t", 32), Generator: "key:bench", State: fsm.Consumed, InvalidatedAt: -129,
		Reason: strings.Repeat("r", 256), CreateIndex: 77, ModifyIndex: 1 << 40, DetectReuse: true, HoldUntil: 1 << 31}
	return []*fsm.Record{
		{ID: "id", Hash: "h", Kind: "access"},
		{ID: strings.Repeat("x", 255), Hash: strings.Repeat("y", 65535), Kind: strings.Repeat("k", 65536), CreatedAt: -1,
			CreateIndex: 128, ModifyIndex: 255, Data: make([]byte, 40)},
		{ID: "i", Hash: "h", Kind: "k", CreatedAt: 127, CreateIndex: 256, ModifyIndex: 65536, MaxUses: 1 << 16,
			UsesLeft: -(1 << 15), ExpiresAt: 1 << 15, LastUsedAt: -(1 << 31) - 1, State: fsm.Revoked},
		full,
	}
}

// sampleRPCValues are calls and answers the fast codec writes itself.
func sampleRPCValues() []any {
	var vals []any
	vals = append(vals, &applyBatchArgs{Writes: []applyArgs{}},
		&applyBatchArgs{Writes: []applyArgs{{Req: "AbCdEfGhIjKlMnOp.1", Entry: []byte{1, 0x81, 0xa1, 'r'}}, {Req: "", Entry: []byte{}}}},
		&applyArgs{Req: strings.Repeat("q", 40), Entry: make([]byte, 300)})
	many := &applyBatchArgs{}
	for i := range 20 {
		many.Writes = append(many.Writes, applyArgs{Req: strings.Repeat("r", i), Entry: make([]byte, i*20)})
	}
	vals = append(vals, many)
	replies := []rpcReply{{}, {Fail: "not_leader"}, {Fail: "refused: " + strings.Repeat("x", 100)}, {Index: 9, Outcome: fsm.Outcome{Err: "not_found"}},
		{Index: 1 << 33, Outcome: fsm.Outcome{Count: 1000}}, {Outcome: fsm.Outcome{Count: -5}}}
	for _, rec := range sampleRPCRecords() {
		replies = append(replies, rpcReply{Index: rec.ModifyIndex, Outcome: fsm.Outcome{Record: rec}},
			rpcReply{Index: 3, Outcome: fsm.Outcome{Record: rec, Err: "reused", Count: 2}})
	}
	for i := range replies {
		vals = append(vals, &replies[i])
	}
	vals = append(vals, &applyBatchReply{Replies: []rpcReply{}}, &applyBatchReply{Replies: replies})
	return vals
}

// TestFastRPCIsOn: the fast codec knows every field of the calls' structs;
// a field added without teaching rpccodec.go turns it off, and fails here.
func TestFastRPCIsOn(t *testing.T) {
	if !fastRPC {
		t.Fatal("fastRPC is off: a struct of the forwarded calls has a field rpccodec.go does not know")
	}
}

// TestFastRPCMatchesCodec: what the fast codec writes is what rpcHandle
// writes, so a node of an earlier release reads it; and it reads what
// rpcHandle writes as rpcHandle reads it.
func TestFastRPCMatchesCodec(t *testing.T) {
	for _, v := range sampleRPCValues() {
		want := codecBytes(t, v)
		got, ok := appendFastRPC(nil, v)
		if !ok {
			t.Fatalf("%T %+v: left to the codec", v, v)
		}
		if string(got) != string(want) {
			t.Fatalf("%T %+v:\n got %x\nwant %x", v, v, got, want)
		}
		back := reflect.New(reflect.TypeOf(v).Elem()).Interface()
		if !decodeFastRPC(want, back) {
			t.Fatalf("%T: the codec's bytes %x were left to the codec", v, want)
		}
		viaCodec, err := codecDecode(want, v)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(back, viaCodec) {
			t.Fatalf("%T: decoded %+v, the codec %+v", v, back, viaCodec)
		}
		var viaRPC = reflect.New(reflect.TypeOf(v).Elem()).Interface()
		if err := decodeRPC(want, viaRPC); err != nil || !reflect.DeepEqual(viaRPC, viaCodec) {
			t.Fatalf("%T: decodeRPC %+v, %v", v, viaRPC, err)
		}
	}
}

// TestRPCFormIsNotTheLogs: the calls between nodes keep their own form,
// not the log's: a string of 32 to 255 bytes without str8, a byte slice
// as a string. A handle turned to the other form fails here, where
// TestFastRPCMatchesCodec would follow it.
func TestRPCFormIsNotTheLogs(t *testing.T) {
	q := strings.Repeat("q", 40)
	got, ok := appendFastRPC(nil, &applyArgs{Req: q, Entry: []byte{1, 2}})
	want := append([]byte{0x82, 0xa1, 'e', 0xa2, 1, 2, 0xa1, 'q', 0xda, 0, 40}, q...)
	if !ok || !bytes.Equal(got, want) {
		t.Fatalf("wrote %x (%v), want %x", got, ok, want)
	}
	for _, rec := range []fsm.Record{
		{ID: "i", Hash: strings.Repeat("h", 40), Kind: "k"},
		{ID: "i", Hash: "h", Kind: "k", Data: []byte{1}},
	} {
		entry, err := fsm.Encode(&fsm.Issue{Record: rec})
		if err != nil {
			t.Fatal(err)
		}
		head := []byte{byte(fsm.TypeIssue), 0x81, 0xa1, 'r'} // an Issue of {r: the record}
		if !bytes.HasPrefix(entry, head) {
			t.Fatalf("the log entry %x does not start with %x", entry, head)
		}
		inLog := entry[len(head):]
		if again := fsm.AppendRecord(nil, &rec, rpcForm); bytes.Equal(again, inLog) {
			t.Fatalf("%+v: written as the log writes it, %x", rec, again)
		}
	}
}

// TestFastRPCLeavesToCodec: what the fast codec does not write is the
// codec's, and decodes as before.
func TestFastRPCLeavesToCodec(t *testing.T) {
	rot := &fsm.Record{ID: "i", Hash: "h", Kind: "refresh", Rotated: &fsm.Rotation{Successor: "s"}}
	for _, v := range []any{
		&applyArgs{Req: "q"}, // no entry: nil
		&applyBatchArgs{Writes: []applyArgs{{Req: "q", Entry: []byte{1}}, {Req: "q"}}},
		&rpcReply{Outcome: fsm.Outcome{Record: rot}},
		&rpcReply{Outcome: fsm.Outcome{Access: &fsm.Record{ID: "a"}}},
		&rpcReply{Outcome: fsm.Outcome{Sealed: []byte{1}}},
		&rpcReply{Outcome: fsm.Outcome{Family: &fsm.RevokedFamily{Family: "f"}}},
		&rpcReply{Outcome: fsm.Outcome{Ops: []fsm.Outcome{{Count: 1}}, Op: 1}},
		&applyBatchReply{Replies: []rpcReply{{Index: 1}, {Outcome: fsm.Outcome{Record: rot}}}},
		&applyBatchReply{}, &applyBatchArgs{},
		&readArgs{Hash: "h", MinIndex: 3},
		&statusReply{ID: "n1"},
	} {
		if _, ok := appendFastRPC(nil, v); ok {
			t.Fatalf("%T %+v: written by the fast codec", v, v)
		}
		b, err := encodeRPC(v)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != string(codecBytes(t, v)) {
			t.Fatalf("%T: encodeRPC wrote other bytes than the codec", v)
		}
		back := reflect.New(reflect.TypeOf(v).Elem()).Interface()
		if decodeFastRPC(b, back) {
			t.Fatalf("%T: the fast decoder took what it does not write", v)
		}
		if err := decodeRPC(b, back); err != nil || !reflect.DeepEqual(back, v) {
			t.Fatalf("%T: decoded %+v, %v; want %+v", v, back, err, v)
		}
	}
}

// TestFastRPCRefusesOtherForms: the same values written in another form
// (str8, a wider integer, keys out of order, bytes past the end) are left
// to the codec.
func TestFastRPCRefusesOtherForms(t *testing.T) {
	good := codecBytes(t, &rpcReply{Index: 5, Outcome: fsm.Outcome{Err: strings.Repeat("e", 40)}})
	for name, b := range map[string][]byte{
		"trailing":  append(append([]byte{}, good...), 0xc0),
		"cut":       good[:len(good)-1],
		"str8":      []byte{0x82, 0xa1, 'e', 0xd9, 1, 'x', 0xa1, 'i', 5},
		"wide int":  []byte{0x81, 0xa1, 'i', 0xcc, 5},
		"order":     []byte{0x82, 0xa1, 'i', 5, 0xa1, 'e', 0xa1, 'x'},
		"unknown":   []byte{0x82, 0xa1, 'i', 5, 0xa1, 'z', 0xa1, 'x'},
		"empty err": []byte{0x82, 0xa1, 'e', 0xa0, 0xa1, 'i', 5},
		"huge":      []byte{0x81, 0xa1, 'r', 0xdd, 0xff, 0xff, 0xff, 0xff},
		"empty":     {},
	} {
		var r rpcReply
		if decodeFastRPC(b, &r) {
			t.Errorf("%s: %x decoded by the fast decoder as %+v", name, b, r)
		}
		var br applyBatchReply
		if decodeFastRPC(b, &br) {
			t.Errorf("%s: %x decoded as a batch answer", name, b)
		}
	}
}

// FuzzDecodeFastRPC: whatever a peer sends, the fast decoder does not
// panic, and what it accepts the codec decodes the same.
func FuzzDecodeFastRPC(f *testing.F) {
	for _, v := range sampleRPCValues() {
		f.Add(codecBytes(f, v))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, v := range []any{&applyBatchArgs{}, &applyArgs{}, &applyBatchReply{}, &rpcReply{}} {
			fast := reflect.New(reflect.TypeOf(v).Elem()).Interface()
			if !decodeFastRPC(b, fast) {
				continue
			}
			viaCodec, err := codecDecode(b, v)
			if err != nil {
				t.Fatalf("%T: %x taken by the fast decoder, the codec refused it: %v", v, b, err)
			}
			if !reflect.DeepEqual(fast, viaCodec) {
				t.Fatalf("%T: %x decoded as %+v, the codec %+v", v, b, fast, viaCodec)
			}
		}
	})
}

// FuzzFastRPCRecord: a forwarded write's answer with any record the fast
// codec writes is what the codec writes, and reads back the same.
func FuzzFastRPCRecord(f *testing.F) {
	f.Add("id", "hash", "access", "sub", "app", "read", "fam", []byte("d"), "ip", int64(1764590000123456789), int64(-1), uint64(77), uint8(1), 3)
	f.Add("", "", "", "", "", "", "", []byte{}, "", int64(0), int64(0), uint64(0), uint8(0), 0)
	f.Fuzz(func(t *testing.T, id, hash, kind, subject, client, scope, family string, data []byte, ip string,
		at, n int64, index uint64, state uint8, count int) {
		rec := &fsm.Record{ID: id, Hash: hash, Kind: kind, Subject: subject, ClientID: client, Family: family,
			Data: data, IP: ip, CreatedAt: at, ExpiresAt: n, LastUsedAt: -at, MaxUses: n, UsesLeft: at,
			CreateIndex: index, ModifyIndex: index / 3, State: fsm.State(state), DetectReuse: state&1 != 0}
		if scope != "" {
			rec.Scopes = []string{scope, scope + "2"}
		}
		if len(data) == 0 {
			rec.Data = nil // omitempty: an empty slice reads back as nil
		}
		v := &applyBatchReply{Replies: []rpcReply{{Index: index, Outcome: fsm.Outcome{Record: rec, Count: count, Err: kind}, Fail: family}}}
		want := codecBytes(t, v)
		got, ok := appendFastRPC(nil, v)
		if !ok || string(got) != string(want) {
			t.Fatalf("wrote %x, the codec %x", got, want)
		}
		var back applyBatchReply
		if !decodeFastRPC(want, &back) || !reflect.DeepEqual(&back, v) {
			t.Fatalf("decoded %+v, want %+v", back, v)
		}
	})
}

// A call claiming more writes or answers than one may hold is refused
// before anything is made for them, by either decoder.
func TestRPCRefusesTooManyElements(t *testing.T) {
	for _, c := range []struct {
		key string
		v   any
	}{{"w", &applyBatchArgs{}}, {"r", &applyBatchReply{}}} {
		// {key: [nil × n]}, n one more than a call may hold, and far more.
		for _, n := range []int{maxForwardBatch + 1, 1 << 20} {
			b := []byte{0x81, 0xa1, c.key[0], 0xdd, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
			b = append(b, bytes.Repeat([]byte{0xc0}, n)...)
			if err := decodeRPC(b, c.v); err == nil {
				t.Fatalf("%q with %d elements decoded", c.key, n)
			}
		}
		ok := []byte{0x81, 0xa1, c.key[0], 0x90}
		if err := decodeRPC(ok, c.v); err != nil {
			t.Fatalf("%q with no elements: %v", c.key, err)
		}
	}
}
