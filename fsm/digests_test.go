package fsm

import (
	"math/rand/v2"
	"testing"
)

// TestDigestsWithSharedKeys drives the index by digest with digests that
// share their first eight bytes (as a client can make them), against a
// map of whole digests.
func TestDigestsWithSharedKeys(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	st := newState()
	d := newDigests(0, ^uint64(0), st.ar)
	want := map[string]handle{}
	digest := func() string {
		// Four prefixes, so most digests share one; then a tail of
		// four values, so digests repeat.
		b := []byte("prefix-0" + "tail-0")
		b[7] = byte('0' + rng.IntN(4))
		b[len(b)-1] = byte('0' + rng.IntN(4))
		if rng.IntN(8) == 0 {
			b = b[:rng.IntN(8)] // short and empty digests, as a malformed command could carry
		}
		return string(b)
	}
	for i := range 20000 {
		h := digest()
		switch rng.IntN(3) {
		case 0, 1:
			r := st.compact(&Record{ID: "id", Hash: h})
			d.put(r)
			want[h] = r
		case 2:
			d.delete(h)
			delete(want, h)
		}
		for j := range 4 {
			h := digest()
			if got := d.get(h); got != want[h] {
				t.Fatalf("step %d.%d: get(%q) = %v, want %v", i, j, h, got, want[h])
			}
		}
		if d.len() != len(want) {
			t.Fatalf("step %d: %d records, want %d", i, d.len(), len(want))
		}
	}
}
