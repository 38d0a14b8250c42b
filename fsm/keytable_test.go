package fsm

import (
	"math/rand/v2"
	"testing"
)

// The digest keys' table answers as a map does through inserts,
// replacements and deletes (shifting back across the end of the table)
// while it grows from its smallest size, and one sized for n holds n
// without growing.
func TestKeyTable(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	maps := &mappings{regs: map[*byte]int{}}
	defer maps.unmapAll()
	kt := newKeyTable(maps, 0)
	want := map[uint64]handle{}
	for i := range 200_000 {
		k := rng.Uint64N(5000) * 0x9e3779b97f4a7c15 // a few thousand keys, most steps on one already there
		switch rng.IntN(5) {
		case 0, 1, 2:
			h := handle(1<<32 | i + 1)
			kt.set(k, h)
			want[k] = h
		default:
			kt.del(k)
			delete(want, k)
		}
		if i%1000 == 0 || i > 199_000 {
			for k, h := range want {
				if got, ok := kt.get(k); !ok || got != h {
					t.Fatalf("step %d: get(%#x) = %#x, %v; want %#x", i, k, got, ok, h)
				}
			}
		}
		if got, ok := kt.get(k); ok != (want[k] != noHandle) || got != want[k] {
			t.Fatalf("step %d: get(%#x) = %#x, %v; want %#x", i, k, got, ok, want[k])
		}
		if kt.len() != len(want) {
			t.Fatalf("step %d: %d keys, want %d", i, kt.len(), len(want))
		}
	}
	sized := newKeyTable(maps, 100_000)
	slots := sized.mask
	for i := range uint64(100_000) {
		sized.set(i, handle(1<<32|i))
	}
	if sized.mask != slots {
		t.Fatalf("a table sized for 100,000 keys grew from %d slots to %d", slots+1, sized.mask+1)
	}
}
