package fsm

import (
	"hash/maphash"
	"unsafe"
)

// keyTable maps a digest key (digests.key) to a record's handle: the
// index by digest's main part, outside the collected heap like the
// records. It is an open-addressing table of 16-byte slots (key, handle)
// in memory the arena maps, with linear probing from a slot the state's
// own seed picks (so that nobody outside can pick digests that pile up on
// one slot) and deletion by shifting back, so it holds no tombstones. It
// is at most three quarters full; it doubles past that. An empty slot has
// noHandle. Only the writer changes it and readers read it, each under
// the machine's lock; a snapshot never reads it.
type keyTable struct {
	maps  *mappings
	mem   []byte   // the mapping
	slots []uint64 // mem as key, handle pairs
	mask  uint64   // slots/2 - 1
	n     int
	seed  maphash.Seed
}

const minKeySlots = 1024

func newKeyTable(maps *mappings, n int) keyTable {
	t := keyTable{maps: maps, seed: maphash.MakeSeed()}
	size := minKeySlots
	for size*3/4 < n {
		size *= 2
	}
	t.alloc(size)
	return t
}

func (t *keyTable) alloc(size int) {
	t.mem = t.maps.mmap(size * 16)
	t.slots = unsafe.Slice((*uint64)(unsafe.Pointer(&t.mem[0])), size*2)
	t.mask = uint64(size - 1)
}

func (t *keyTable) home(k uint64) uint64 { return maphash.Comparable(t.seed, k) & t.mask }

// get returns the handle under key k.
func (t *keyTable) get(k uint64) (handle, bool) {
	for i := t.home(k); ; i = (i + 1) & t.mask {
		h := handle(t.slots[2*i+1])
		if h == noHandle {
			return noHandle, false
		}
		if t.slots[2*i] == k {
			return h, true
		}
	}
}

// set puts h (not noHandle) under k, in place of what was there.
func (t *keyTable) set(k uint64, h handle) {
	for i := t.home(k); ; i = (i + 1) & t.mask {
		switch {
		case handle(t.slots[2*i+1]) == noHandle:
			t.slots[2*i], t.slots[2*i+1] = k, uint64(h)
			if t.n++; t.n > int(t.mask+1)*3/4 {
				t.grow()
			}
			return
		case t.slots[2*i] == k:
			t.slots[2*i+1] = uint64(h)
			return
		}
	}
}

func (t *keyTable) grow() {
	old, oldMem := t.slots, t.mem
	t.alloc(int(t.mask+1) * 2)
	t.n = 0
	for i := 0; i < len(old); i += 2 {
		if old[i+1] != 0 {
			t.set(old[i], handle(old[i+1]))
		}
	}
	t.maps.munmap(oldMem)
}

// del removes key k, if it is there.
func (t *keyTable) del(k uint64) {
	i := t.home(k)
	for ; ; i = (i + 1) & t.mask {
		if handle(t.slots[2*i+1]) == noHandle {
			return
		}
		if t.slots[2*i] == k {
			break
		}
	}
	t.n--
	// Shift back the slots after i whose probe passes through i.
	for j := (i + 1) & t.mask; ; j = (j + 1) & t.mask {
		if handle(t.slots[2*j+1]) == noHandle {
			break
		}
		home := t.home(t.slots[2*j])
		// j's entry may move to i if i lies cyclically in [home, j).
		if (j-home)&t.mask >= (j-i)&t.mask {
			t.slots[2*i], t.slots[2*i+1] = t.slots[2*j], t.slots[2*j+1]
			i = j
		}
	}
	t.slots[2*i], t.slots[2*i+1] = 0, 0
}

// len is how many keys the table holds.
func (t *keyTable) len() int { return t.n }
