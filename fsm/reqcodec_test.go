package fsm

import (
	"bytes"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/hashicorp/go-msgpack/v2/codec"
)

// TestFastRequestFrames: the request frames written without reflection
// are the codec's bytes, and read back as the codec reads them; what the
// fast path leaves out (a rotated record, a revoked family) goes to the
// codec both ways.
func TestFastRequestFrames(t *testing.T) {
	if !fastRequests {
		t.Fatal("the request codec is off: request or Outcome has fields it does not know")
	}
	rng := rand.New(rand.NewPCG(7, 8))
	record := func() *Record {
		if rng.IntN(4) == 0 {
			return nil
		}
		r := new(Record)
		randomFill(t, rng, reflect.ValueOf(r).Elem())
		if rng.IntN(10) == 0 {
			r.Rotated = &Rotation{Successor: randomString(rng)}
		}
		return r
	}
	var scratch []byte
	for i := range 3000 {
		q := &requestFrame{ID: randomString(rng), At: randomInt(rng)}
		q.Record, q.Access = record(), record()
		if rng.IntN(2) == 0 {
			q.Count = int(randomInt(rng))
		}
		if rng.IntN(2) == 0 {
			q.Err = randomString(rng)
		}
		if rng.IntN(3) == 0 {
			q.Sealed = []byte(randomString(rng))
		}
		if rng.IntN(20) == 0 {
			q.Family = &RevokedFamily{Family: randomString(rng), At: randomInt(rng), Until: randomInt(rng)}
		}
		want := codecEncodeValue(t, q)
		got, ok := appendRequest(nil, q)
		leftOut := q.Family != nil || q.Record != nil && q.Record.Rotated != nil || q.Access != nil && q.Access.Rotated != nil
		if ok == leftOut {
			t.Fatalf("%d: appendRequest ok=%v for %+v", i, ok, q)
		}
		if ok && !bytes.Equal(got, want) {
			t.Fatalf("%d: %+v: appendRequest\n%x\nthe codec\n%x", i, q, got, want)
		}
		back, ok := fastRequest(want, &scratch)
		if ok == leftOut {
			t.Fatalf("%d: fastRequest ok=%v for %+v", i, ok, q)
		}
		if !ok {
			continue
		}
		ref := new(requestFrame)
		if err := codec.NewDecoderBytes(want, msgpackHandle).Decode(ref); err != nil || !reflect.DeepEqual(back, ref) {
			t.Fatalf("%d: fastRequest read %+v, the codec %+v (%v)", i, back, ref, err)
		}
	}
}

// FuzzRequestFrame: whatever a request frame holds, the fast decoder
// never panics, and what it takes the codec reads the same.
func FuzzRequestFrame(f *testing.F) {
	q := &requestFrame{ID: "q", At: 5, Outcome: Outcome{Record: &Record{ID: "i", Hash: "h", Kind: "k"}, Count: 2, Err: "e", Sealed: []byte{1}}}
	b, _ := appendRequest(nil, q)
	f.Add(b)
	f.Add([]byte("\x82\xa1a\x05\xa1i\xa1q"))
	f.Fuzz(func(t *testing.T, body []byte) {
		var scratch []byte
		back, ok := fastRequest(body, &scratch)
		if !ok {
			return
		}
		ref := new(requestFrame)
		if err := codec.NewDecoderBytes(body, msgpackHandle).Decode(ref); err != nil || !reflect.DeepEqual(back, ref) {
			t.Fatalf("fastRequest read %+v, the codec %+v (%v)", back, ref, err)
		}
	})
}
