package fsm

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The arena holds the state's records outside the heap the collector
// paces: memory mapped from the kernel (anonymous, private) in chunks that
// never move, each record a run of bytes in a compact layout (see
// stored.go). The collector neither scans it nor counts it towards its
// goal, so a state of a million records costs the heap their indexes
// alone. Nothing in the arena is a Go pointer: a record names its
// profile by an integer, and the indexes name records by their handle.
//
// Records are immutable: a change writes a new one and frees the old.
// Freed space is reused by size class, but never while a snapshot that
// may still read it is open: a free waits until every snapshot taken
// before it is released (openSnapshot, closeSnapshot).
//
// Only the writer allocates and frees, under the machine's write lock;
// readers read under the read lock. A snapshot reads without a lock, in
// another goroutine, only records its frozen indexes name, which stay as
// they are until it is released; the chunk table it reads through is
// replaced, never changed, when the arena grows.
type arena struct {
	table atomic.Pointer[[]chunk] // by the handle's high 32 bits
	maps  *mappings               // what is mapped, unmapped when the arena is collected

	cur  int32  // the chunk small records are carved from
	off  uint32 // the next free byte in it
	next int    // the size of the next chunk

	freed      [numClasses][]handle // freed space by size class
	freeChunks []int32              // table slots of unmapped chunks, for reuse

	gen      uint64        // the last snapshot's generation
	open     []uint64      // the generations of the open snapshots, ascending
	pending  []pendingFree // frees waiting for a snapshot, in order
	live     atomic.Int64  // bytes in records' size classes
	returned atomic.Int64  // bytes of chunk pages given back to the kernel, not yet reused
}

// handle names a record: its chunk in the high 32 bits, its offset in
// the low 32. No record is at 0 (the first chunk starts past it), so the
// zero handle is none; minHandle and maxHandle are also the bounds that
// sort before and after every record in the indexes.
type handle uint64

const (
	noHandle  handle = 0
	minHandle handle = 0
	maxHandle handle = ^handle(0)
)

type chunk struct {
	b     []byte
	large bool // holds one record alone: unmapped when it is freed
	// pages counts, for each page of a chunk records are carved from,
	// the records that have bytes in it; pageReturned marks a page given
	// back to the kernel when its last record was freed. Only the writer
	// reads or changes it.
	pages []uint16
}

// pageReturned, in a chunk's page count, marks a page whose memory was
// given back to the kernel (madvise MADV_DONTNEED): it reads as zeros
// and takes no memory until a record is written in it again. A page
// holds at most pageSize/8+1 records, far below it.
const pageReturned = 1 << 15

type pendingFree struct {
	h   handle
	gen uint64 // the last snapshot taken before the free
}

// mappings are the arena's mapped regions. They are unmapped when the
// arena is no longer reachable (a state replaced by a restore, and every
// snapshot of it released): what a record handed out holds is a copy,
// never a view of the arena.
type mappings struct {
	mu    sync.Mutex
	regs  map[*byte]int // start -> length
	bytes atomic.Int64  // their lengths
}

const (
	firstChunk = 64 << 10
	maxChunk   = 16 << 20
	// maxSmall is the largest record carved from a chunk; a larger one
	// gets a mapping of its own.
	maxSmall = 64 << 10
)

// errCorrupt is what the arena panics with when a handle or a length it
// reads back does not fit where it points: the machine halts on it
// (Machine.Apply) rather than read out of range.
type errCorrupt struct{ what string }

func (e errCorrupt) Error() string { return "state arena corrupt: " + e.what }

func corrupt(format string, args ...any) {
	panic(errCorrupt{fmt.Sprintf(format, args...)})
}

// recoverCorrupt, deferred, turns the arena's panic into *err; any other
// panic goes on.
func recoverCorrupt(err *error) {
	if r := recover(); r != nil {
		c, ok := r.(errCorrupt)
		if !ok {
			panic(r)
		}
		*err = c
	}
}

func newArena() *arena {
	a := &arena{maps: &mappings{regs: map[*byte]int{}}, next: firstChunk, cur: -1}
	t := []chunk{{}} // slot 0 holds nothing: no record has handle 0
	a.table.Store(&t)
	runtime.AddCleanup(a, func(m *mappings) { m.unmapAll() }, a.maps)
	return a
}

func (m *mappings) mmap(n int) []byte {
	b, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		panic(fmt.Sprintf("fsm: mapping %d bytes for the state: %v", n, err))
	}
	m.mu.Lock()
	m.regs[&b[0]] = n
	m.mu.Unlock()
	m.bytes.Add(int64(n))
	return b
}

func (m *mappings) munmap(b []byte) {
	m.mu.Lock()
	delete(m.regs, &b[0])
	m.mu.Unlock()
	m.bytes.Add(-int64(len(b)))
	if err := syscall.Munmap(b); err != nil {
		panic(fmt.Sprintf("fsm: unmapping %d bytes of the state: %v", len(b), err))
	}
}

func (m *mappings) unmapAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for p, n := range m.regs {
		// A region the arena mapped, of the length it mapped: nothing
		// else refers to it once the arena is gone.
		_ = syscall.Munmap(unsafeBytes(p, n))
	}
	clear(m.regs)
	m.bytes.Store(0)
}

// Size classes: 8-byte steps up to 256 bytes, 32-byte steps up to 1 KiB,
// then four classes per doubling up to maxSmall. A record takes the
// smallest class that holds it.
const numClasses = 32 + 24 + 24 + 1

var classSize = func() (s [numClasses]uint32) {
	i := 0
	for n := uint32(8); n <= 256; n += 8 {
		s[i] = n
		i++
	}
	for n := uint32(288); n <= 1024; n += 32 {
		s[i] = n
		i++
	}
	for base := uint32(1024); base < maxSmall; base *= 2 {
		for q := uint32(1); q <= 4; q++ {
			s[i] = base + base/4*q
			i++
		}
	}
	return s
}()

// classOf is the size class of a record of n bytes (1 to maxSmall).
func classOf(n int) int {
	switch {
	case n <= 256:
		return (n+7)/8 - 1
	case n <= 1024:
		return 32 + (n-256+31)/32 - 1
	}
	// 1024 < n <= maxSmall: four classes per doubling.
	e := bits.Len(uint(n-1)) - 1 // 2^e < n <= 2^(e+1)
	base := 1 << e
	q := (n - base + base/4 - 1) / (base / 4) // 1..4
	return 56 + (e-10)*4 + q - 1
}

// chunks returns the chunk table.
func (a *arena) chunks() []chunk { return *a.table.Load() }

// addChunk puts c in the table, in a free slot if there is one, and
// returns its slot. The table is copied, so that a snapshot reading the
// old one concurrently reads what it read before.
func (a *arena) addChunk(c chunk) int32 {
	old := a.chunks()
	t := make([]chunk, len(old), len(old)+1)
	copy(t, old)
	var i int32
	if n := len(a.freeChunks); n > 0 {
		i = a.freeChunks[n-1]
		a.freeChunks = a.freeChunks[:n-1]
		t[i] = c
	} else {
		i = int32(len(t))
		t = append(t, c)
	}
	a.table.Store(&t)
	return i
}

// alloc returns the handle of n free bytes (8 ≤ n) and the bytes.
func (a *arena) alloc(n int) (handle, []byte) {
	if n > maxSmall {
		size := (n + pageSize - 1) &^ (pageSize - 1)
		b := a.maps.mmap(size)
		i := a.addChunk(chunk{b: b, large: true})
		a.live.Add(int64(size))
		return handle(i) << 32, b[:n:n]
	}
	c := classOf(n)
	size := classSize[c]
	a.live.Add(int64(size))
	if fl := a.freed[c]; len(fl) > 0 {
		h := fl[len(fl)-1]
		a.freed[c] = fl[:len(fl)-1]
		b := a.bytesAt(h, size)
		a.hold(h, size)
		return h, b[:n:n]
	}
	t := a.chunks()
	if a.cur < 0 || int(a.off)+int(size) > len(t[a.cur].b) {
		b := a.maps.mmap(a.next)
		a.cur, a.off = a.addChunk(chunk{b: b, pages: make([]uint16, len(b)/pageSize)}), 0
		a.next = min(a.next*2, maxChunk)
		t = a.chunks()
	}
	h := handle(a.cur)<<32 | handle(a.off)
	b := t[a.cur].b[a.off : a.off+size]
	a.off += size
	a.hold(h, size)
	return h, b[:n:n]
}

// hold counts a record of size bytes at h in the pages it spans; a page
// that was given back to the kernel is in use again (the kernel maps it
// anew, zeroed, as the record is written).
func (a *arena) hold(h handle, size uint32) {
	pages := a.chunks()[h>>32].pages
	first, last := int(uint32(h))/pageSize, (int(uint32(h))+int(size)-1)/pageSize
	for p := first; p <= last; p++ {
		if pages[p]&pageReturned != 0 {
			pages[p] = 0
			a.returned.Add(-int64(pageSize))
		}
		pages[p]++
	}
}

// unhold is hold undone when the record of size bytes at h is freed: a
// page no record has bytes in any more goes back to the kernel, which
// takes its memory from the process's RSS at once. The runs of such
// pages are given back in one call each.
func (a *arena) unhold(h handle, size uint32) {
	c := a.chunks()[h>>32]
	first, last := int(uint32(h))/pageSize, (int(uint32(h))+int(size)-1)/pageSize
	run := -1 // the first page of the run of emptied pages being built
	for p := first; p <= last+1; p++ {
		if p <= last {
			if c.pages[p] == 0 || c.pages[p]&pageReturned != 0 {
				corrupt("handle %#x: page %d of its chunk holds no record", uint64(h), p)
			}
			if c.pages[p]--; c.pages[p] == 0 {
				if run < 0 {
					run = p
				}
				continue
			}
		}
		if run >= 0 {
			a.giveBack(c, run, p)
			run = -1
		}
	}
}

// giveBack returns pages [from, to) of c to the kernel.
func (a *arena) giveBack(c chunk, from, to int) {
	// The pages stay mapped: a later record in them faults in zeroed
	// memory. MADV_DONTNEED (not MADV_FREE, whose pages count in the RSS
	// until the kernel is short of memory).
	if err := unix.Madvise(c.b[from*pageSize:to*pageSize], unix.MADV_DONTNEED); err != nil {
		return // the pages keep their memory; they are reused all the same
	}
	for p := from; p < to; p++ {
		c.pages[p] = pageReturned
	}
	a.returned.Add(int64((to - from) * pageSize))
}

// bytesAt returns the n bytes at h, checked against its chunk.
func (a *arena) bytesAt(h handle, n uint32) []byte {
	t := a.chunks()
	ci, off := uint64(h>>32), uint64(uint32(h))
	if ci >= uint64(len(t)) || t[ci].b == nil {
		corrupt("handle %#x: no chunk %d", uint64(h), ci)
	}
	b := t[ci].b
	if off+uint64(n) > uint64(len(b)) {
		corrupt("handle %#x: %d bytes past its chunk of %d", uint64(h), n, len(b))
	}
	return b[off : off+uint64(n) : off+uint64(n)]
}

// get returns the record at h: its bytes, as long as its header says,
// checked against its chunk.
func (a *arena) get(h handle) rec {
	b := a.bytesAt(h, recHeader)
	n := binary.LittleEndian.Uint32(b)
	if n < recHeader {
		corrupt("handle %#x: a record of %d bytes", uint64(h), n)
	}
	return rec(a.bytesAt(h, n))
}

// touchRecords reads the first byte of each record at hs, so that the
// reads of them that follow find them in the cache: the loads are
// independent, and the processor has several in flight at once. It
// returns their sum, for the caller to keep, so that the compiler does
// not leave the loads out.
func touchRecords(a *arena, hs []handle) byte {
	t := a.chunks()
	var x byte
	for _, h := range hs {
		if ci, off := uint64(h>>32), uint64(uint32(h)); ci < uint64(len(t)) && off < uint64(len(t[ci].b)) {
			x += t[ci].b[off]
		}
	}
	return x
}

// freeNow makes the space of the record at h reusable.
func (a *arena) freeNow(h handle) {
	r := a.get(h)
	n := len(r)
	if n > maxSmall {
		t := a.chunks()
		ci := int32(h >> 32)
		c := t[ci]
		if !c.large || uint32(h) != 0 {
			corrupt("handle %#x: a record of %d bytes in a shared chunk", uint64(h), n)
		}
		nt := make([]chunk, len(t))
		copy(nt, t)
		nt[ci] = chunk{}
		a.table.Store(&nt)
		a.freeChunks = append(a.freeChunks, ci)
		a.live.Add(-int64(len(c.b)))
		a.maps.munmap(c.b)
		return
	}
	c := classOf(n)
	a.live.Add(-int64(classSize[c]))
	r[0], r[1], r[2], r[3] = 0, 0, 0, 0 // a stale handle reads a record of 0 bytes: corrupt
	a.freed[c] = append(a.freed[c], h)
	a.unhold(h, classSize[c])
}

// free frees the record at h once no open snapshot can read it: now if
// none is open, else when every snapshot open now is released.
func (a *arena) free(h handle) {
	if len(a.open) == 0 {
		a.freeNow(h)
		return
	}
	a.pending = append(a.pending, pendingFree{h: h, gen: a.gen})
}

// openSnapshot notes a snapshot taken now and returns its generation:
// what is freed from now on waits until closeSnapshot of it.
func (a *arena) openSnapshot() uint64 {
	a.gen++
	a.open = append(a.open, a.gen)
	return a.gen
}

// closeSnapshot notes the snapshot of generation g released, and frees
// what waited for it alone.
func (a *arena) closeSnapshot(g uint64) {
	for i, o := range a.open {
		if o == g {
			a.open = append(a.open[:i], a.open[i+1:]...)
			break
		}
	}
	oldest := ^uint64(0)
	if len(a.open) > 0 {
		oldest = a.open[0]
	}
	n := 0
	for n < len(a.pending) && a.pending[n].gen < oldest {
		a.freeNow(a.pending[n].h)
		n++
	}
	if n > 0 {
		a.pending = append(a.pending[:0], a.pending[n:]...)
		if cap(a.pending) > 1024 && len(a.pending) < cap(a.pending)/4 {
			a.pending = append([]pendingFree(nil), a.pending...)
		}
	}
}

// bytesInUse returns the bytes of the records' size classes and the
// bytes mapped (the chunks, and the digest keys' table).
func (a *arena) bytesInUse() (records, mapped int64) { return a.live.Load(), a.maps.bytes.Load() }

// bytesReturned returns the bytes of the chunks' pages given back to the
// kernel (mapped, but in no record and taking no memory).
func (a *arena) bytesReturned() int64 { return a.returned.Load() }

var pageSize = syscall.Getpagesize()

func unsafeBytes(p *byte, n int) []byte { return unsafe.Slice(p, n) }
