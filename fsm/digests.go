package fsm

// digests is the index by digest: each record under the first eight
// bytes of its digest, an integer key, which costs a slot of 16 bytes
// (outside the collected heap: keyTable) and a hash of one word, where
// the digest itself cost 24 and a hash of 32 bytes. Two digests with the same eight bytes are rare by chance but
// easy to make on purpose (a secret a client brings, hashed without a key,
// needs about 2^32 tries), so the records that share their key with the
// one in the map wait in more, in the order they came.
type digests struct {
	m    keyTable
	more map[uint64][]handle
	mask uint64 // all bits; tests keep one, so that keys collide
	ar   *arena // the records'
}

func newDigests(n int, mask uint64, ar *arena) digests {
	return digests{m: newKeyTable(ar.maps, n), more: map[uint64][]handle{}, mask: mask, ar: ar}
}

// hashOf is the digest of the record at h.
func (d *digests) hashOf(h handle) string { return d.ar.get(h).hash() }

// key is the key of digest h: its first eight bytes (fewer, zero padded,
// for a malformed one).
func (d *digests) key(h string) uint64 { return prefix8(h) & d.mask }

// get returns the record with digest h, or noHandle.
func (d *digests) get(h string) handle {
	k := d.key(h)
	r, ok := d.m.get(k)
	if !ok || d.hashOf(r) == h {
		return r
	}
	for _, o := range d.more[k] {
		if d.hashOf(o) == h {
			return o
		}
	}
	return noHandle
}

// put stores r under its digest, in place of the record with the same
// digest, if any.
func (d *digests) put(r handle) {
	h := d.hashOf(r)
	k := d.key(h)
	cur, ok := d.m.get(k)
	if !ok || d.hashOf(cur) == h {
		d.m.set(k, r)
		return
	}
	more := d.more[k]
	for i, o := range more {
		if d.hashOf(o) == h {
			more[i] = r
			return
		}
	}
	d.more[k] = append(more, r)
}

// delete removes the record with digest h, if any.
func (d *digests) delete(h string) {
	k := d.key(h)
	cur, ok := d.m.get(k)
	if !ok {
		return
	}
	more := d.more[k]
	if d.hashOf(cur) == h {
		if len(more) == 0 {
			d.m.del(k)
			return
		}
		d.m.set(k, more[0])
		more = more[1:]
	} else {
		i := -1
		for j, o := range more {
			if d.hashOf(o) == h {
				i = j
				break
			}
		}
		if i < 0 {
			return
		}
		more = append(more[:i:i], more[i+1:]...)
	}
	if len(more) == 0 {
		delete(d.more, k)
	} else {
		d.more[k] = more
	}
}

// len is how many records the index holds.
func (d *digests) len() int {
	n := d.m.len()
	for _, more := range d.more {
		n += len(more)
	}
	return n
}
