package fsm

import (
	"bytes"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/go-msgpack/v2/codec"
)

// codecEncode is Encode as it was before batches were appended: the
// msgpack codec by reflection, the reference for the log format.
func codecEncode(t testing.TB, c Command) []byte {
	t.Helper()
	var buf bytes.Buffer
	buf.WriteByte(byte(c.Type()))
	if err := codec.NewEncoder(&buf, msgpackHandle).Encode(c); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestBatchEncodingMatchesCodec checks that a Batch encodes to the bytes
// the msgpack codec writes for it, at every boundary of the msgpack
// forms, so entries written before and after read the same.
func TestBatchEncodingMatchesCodec(t *testing.T) {
	ints := []int64{0, 1, 31, 32, 127, 128, 255, 256, math.MaxInt16, math.MaxInt16 + 1, math.MaxUint16,
		math.MaxInt32, math.MaxInt32 + 1, math.MaxInt64, -1, -31, -32, -33, -127, -128, -129,
		math.MinInt16, math.MinInt16 - 1, math.MinInt32, math.MinInt32 - 1, math.MinInt64, 1_795_000_000_000_000_000}
	lens := []int{0, 1, 15, 16, 31, 32, 255, 256, 65535, 65536}
	var batches []*Batch
	for _, now := range ints {
		batches = append(batches, &Batch{Now: now})
	}
	batches = append(batches,
		&Batch{},
		&Batch{Entries: [][]byte{}},
		&Batch{Entries: [][]byte{nil, {}, {1}}, Reqs: []string{"", "a", "b"}},
		&Batch{Entries: [][]byte{{2}}, Reqs: []string{}},
		&Batch{Entries: [][]byte{{2}}, Reqs: []string{"only"}},
		&Batch{Entries: [][]byte{{2}, {3}}, Reqs: []string{"more reqs", "than", "entries"}},
	)
	for _, n := range lens {
		batches = append(batches,
			&Batch{Now: 7, Entries: [][]byte{bytes.Repeat([]byte{9}, n)}, Reqs: []string{strings.Repeat("r", n)}},
			&Batch{Now: 7, Entries: make([][]byte, n), Reqs: make([]string, n)},
		)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		b := &Batch{Now: rng.Int64() >> rng.IntN(64)}
		if rng.IntN(2) == 0 {
			b.Now = -b.Now
		}
		for range rng.IntN(40) {
			e := make([]byte, rng.IntN(600))
			for i := range e {
				e[i] = byte(rng.Uint32())
			}
			b.Entries = append(b.Entries, e)
			if rng.IntN(3) > 0 {
				b.Reqs = append(b.Reqs, strings.Repeat("q", rng.IntN(40)))
			}
		}
		batches = append(batches, b)
	}
	for i, b := range batches {
		got, err := Encode(b)
		if err != nil {
			t.Fatal(err)
		}
		want := codecEncode(t, b)
		if !bytes.Equal(got, want) {
			t.Fatalf("batch %d (now %d, %d entries, %d reqs): encoded\n%x\nthe codec writes\n%x", i, b.Now, len(b.Entries), len(b.Reqs), head(got), head(want))
		}
		if len(got) > batchSize(b) {
			t.Fatalf("batch %d: %d bytes, more than the %d reserved", i, len(got), batchSize(b))
		}
		back, ok := decodeBatch(got[1:])
		if !ok {
			t.Fatalf("batch %d: the fast decoder refused what the codec writes", i)
		}
		if want, err := decodeFresh(got); err != nil || !reflect.DeepEqual(back, want) {
			t.Fatalf("batch %d decoded as now %d, %d entries, %d reqs; the codec reads %+v, %v", i, back.Now, len(back.Entries), len(back.Reqs), want, err)
		}
	}
}

// TestFastBatchIsOn fails when Batch gained a field batchcodec.go does
// not know: the codec then encodes and decodes batches. Teach it the
// field.
func TestFastBatchIsOn(t *testing.T) {
	if !fastBatch {
		t.Fatal("the batch codec is off: a field of Batch is not in batchcodec.go")
	}
}

// FuzzDecodeBatch checks that whatever the fast batch decoder accepts,
// the codec reads the same.
func FuzzDecodeBatch(f *testing.F) {
	for _, b := range []*Batch{{}, {Now: 1 << 60, Entries: [][]byte{{2, 0x80}, nil, {}}, Reqs: []string{"a", "", "c"}},
		{Now: -5, Entries: [][]byte{bytes.Repeat([]byte{3}, 300)}}} {
		f.Add(codecEncode(f, b))
	}
	f.Fuzz(func(t *testing.T, entry []byte) {
		if len(entry) == 0 {
			return
		}
		got, ok := decodeBatch(entry[1:])
		if !ok {
			return
		}
		want, err := decodeFresh(append([]byte{byte(TypeBatch)}, entry[1:]...))
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("the fast decoder read %+v, the codec %+v, %v", got, want, err)
		}
	})
}

func head(b []byte) []byte { return b[:min(len(b), 64)] }

// TestEncodeMatchesCodec checks that pooled encoders write what a new
// encoder writes, one command after another.
func TestEncodeMatchesCodec(t *testing.T) {
	cmds := []Command{
		&Issue{TTL: 5, Record: Record{ID: "i", Hash: "h", Kind: "access", Data: bytes.Repeat([]byte("d"), 70000)}},
		&Consume{Hash: "h", Kind: "k", FamilyHold: -1},
		&Issue{Record: Record{ID: "j", Hash: "h2", Kind: "access", Scopes: []string{"a", "b"}}},
		&Revoke{ID: "x"},
		&Rotate{Hash: "h", Kind: "oauth2_refresh", Next: Record{ID: "n"}, Access: &Issue{Record: Record{ID: "a"}}},
		&Touch{Uses: []Use{{Hash: "h", At: 3}}},
		&Expire{Before: 9, IDs: []string{"a", "b"}},
		&Fence{Version: 2},
		&RevokeSubject{Subject: "s"},
		&RevokeFamily{Family: "f", FamilyHold: 10},
		&RevokeFamilyKind{Family: "f", Kind: "access", Reason: "r"},
		&ClientBatch{Ops: [][]byte{{2, 0x80}, {3, 0x80}}},
	}
	for round := range 3 {
		for _, c := range cmds {
			got, err := Encode(c)
			if err != nil {
				t.Fatal(err)
			}
			if want := codecEncode(t, c); !bytes.Equal(got, want) {
				t.Fatalf("round %d, %T: pooled encoder wrote %x, a new one %x", round, c, head(got), head(want))
			}
		}
	}
}

// TestPooledDecoderForgets checks that what a pooled decoder reads does
// not depend on what it read before: an entry decodes the same after a
// failed decode, a larger entry and an entry of another type.
func TestPooledDecoderForgets(t *testing.T) {
	big, _ := Encode(&Issue{Record: Record{ID: "big", Hash: "h", Kind: "access", Subject: "s", Scopes: []string{"x", "y", "z"}, Data: []byte("{}")}})
	small, _ := Encode(&Issue{Record: Record{ID: "small", Hash: "h2", Kind: "access"}})
	consume, _ := Encode(&Consume{Hash: "h3"})
	bad := append([]byte{byte(TypeIssue)}, 0x85, 0xa1, 'r', 0xdd, 0xff)
	want, err := decodeFresh(small)
	if err != nil {
		t.Fatal(err)
	}
	for _, before := range [][]byte{bad, big, consume, {byte(TypeIssue)}, small} {
		for range 4 { // the pool may hand out any decoder
			decodeEntry(before)
		}
		got, err := decodeEntry(small)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("after decoding %x: %+v, %v; a new decoder reads %+v", head(before), got, err, want)
		}
	}
}

// decodeFresh is decodeEntry with a new decoder.
func decodeFresh(b []byte) (applier, error) {
	c := registry[Type(b[0])]()
	if err := codec.NewDecoderBytes(b[1:], msgpackHandle).Decode(c); err != nil {
		return nil, err
	}
	return c, nil
}

// TestClientBatchMatchesCodec checks that a ClientBatch encodes to the
// bytes the msgpack codec writes for it, at the boundaries of the msgpack
// forms, and that the fast decoder reads them as the codec does.
func TestClientBatchMatchesCodec(t *testing.T) {
	issue := codecEncode(t, &Issue{Record: Record{ID: "i", Hash: "h", Kind: "access"}})
	batches := []*ClientBatch{{}, {Ops: [][]byte{}}, {Ops: [][]byte{nil, {}, issue}}}
	for _, n := range []int{0, 1, 15, 16, 17, 255, 256, 65535, 65536} {
		batches = append(batches,
			&ClientBatch{Ops: [][]byte{bytes.Repeat([]byte{9}, n)}},
			&ClientBatch{Ops: make([][]byte, n)},
		)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for range 200 {
		b := &ClientBatch{}
		for range rng.IntN(20) {
			e := make([]byte, rng.IntN(600))
			for i := range e {
				e[i] = byte(rng.Uint32())
			}
			b.Ops = append(b.Ops, e)
		}
		batches = append(batches, b)
	}
	for i, b := range batches {
		got, err := Encode(b)
		if err != nil {
			t.Fatal(err)
		}
		want := codecEncode(t, b)
		if !bytes.Equal(got, want) {
			t.Fatalf("client batch %d (%d ops): encoded\n%x\nthe codec writes\n%x", i, len(b.Ops), head(got), head(want))
		}
		if len(got) > clientBatchSize(b) {
			t.Fatalf("client batch %d: %d bytes, more than the %d reserved", i, len(got), clientBatchSize(b))
		}
		back, ok := decodeClientBatch(got[1:])
		if !ok {
			t.Fatalf("client batch %d: the fast decoder refused what the codec writes", i)
		}
		if want, err := decodeFresh(got); err != nil || !reflect.DeepEqual(back, want) {
			t.Fatalf("client batch %d decoded as %d ops; the codec reads %+v, %v", i, len(back.Ops), want, err)
		}
		if again, err := Reencode(back, got); err != nil || &again[0] != &got[0] {
			t.Fatalf("client batch %d: re-encoding a decoded batch did not keep its entry: %v", i, err)
		}
	}
	// What the codec reads but does not write goes to the codec.
	for name, body := range map[string][]byte{
		"an unknown key":  {0x82, 0xa1, 'o', 0x90, 0xa1, 'z', 0x01},
		"a str op":        {0x81, 0xa1, 'o', 0x91, 0xa1, 'x'},
		"a wide array":    {0x81, 0xa1, 'o', 0xdc, 0x00, 0x01, 0xc4, 0x01, 0x02},
		"a wide bin":      {0x81, 0xa1, 'o', 0x91, 0xc5, 0x00, 0x01, 0x02},
		"bytes after":     {0x81, 0xa1, 'o', 0x90, 0x00},
		"the ops missing": {0x80},
	} {
		if _, ok := decodeClientBatch(body); ok {
			t.Errorf("%s: decoded by the fast decoder", name)
		}
		entry := append([]byte{byte(TypeClientBatch)}, body...)
		got, gerr := decodeEntry(entry)
		want, werr := decodeFresh(entry)
		if (gerr == nil) != (werr == nil) || (werr == nil && !reflect.DeepEqual(got, want)) {
			t.Errorf("%s: decoded as %+v, %v; the codec reads %+v, %v", name, got, gerr, want, werr)
		}
	}
}

// TestFastClientBatchIsOn fails when ClientBatch gained a field
// batchcodec.go does not know: the codec then encodes and decodes client
// batches. Teach it the field.
func TestFastClientBatchIsOn(t *testing.T) {
	if !fastClientBatch {
		t.Fatal("the client batch codec is off: a field of ClientBatch is not in batchcodec.go")
	}
}

// FuzzDecodeClientBatch checks that whatever the fast client batch
// decoder accepts, the codec reads the same, and that applying any client
// batch body never panics.
func FuzzDecodeClientBatch(f *testing.F) {
	issue := codecEncode(f, &Issue{Record: Record{ID: "i", Hash: "h", Kind: "access"}})
	consume := codecEncode(f, &Consume{Hash: "h"})
	revokeFamily := codecEncode(f, &RevokeFamily{Family: "f", Reason: "r", FamilyHold: 1})
	revokeKind := codecEncode(f, &RevokeFamilyKind{Family: "f", Kind: "access"})
	for _, b := range []*ClientBatch{{}, {Ops: [][]byte{issue, consume}}, {Ops: [][]byte{nil, {}, {3}}},
		{Ops: [][]byte{revokeKind, issue, revokeFamily}}, {Ops: [][]byte{revokeFamily, {12}, {6, 0x80}}},
		{Ops: [][]byte{codecEncode(f, &ClientBatch{Ops: [][]byte{issue}})}}} {
		f.Add(codecEncode(f, b)[1:])
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		entry := append([]byte{byte(TypeClientBatch)}, body...)
		if got, ok := decodeClientBatch(body); ok {
			want, err := decodeFresh(entry)
			if err != nil || !reflect.DeepEqual(got, want) {
				t.Fatalf("the fast decoder read %+v, the codec %+v, %v", got, want, err)
			}
		}
		c, err := decodeEntry(entry)
		if err != nil {
			return
		}
		m := New()
		res := m.Apply(1, entry)
		if cb := c.(*ClientBatch); res.Err == nil && len(res.Ops) != len(cb.Ops) {
			t.Fatalf("a batch of %d ops answered %d results", len(cb.Ops), len(res.Ops))
		}
	})
}
