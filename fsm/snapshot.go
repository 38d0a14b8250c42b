package fsm

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/google/btree"
	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
)

// Snapshot stream format, version 1:
//
//	magic "TKSNAP" | version byte | frames...
//	frame: type byte | uvarint body length | msgpack body
//
// The first frame is the meta frame; one record frame follows per record,
// in id order, then one request frame per remembered request id, then one
// family frame per remembered revoked family (a node that predates family
// frames refuses a snapshot that has any). Version 2 (snapstored.go) has
// stored record frames in place of the record frames, each profile they
// name in a frame before the first that does. Restore rejects versions it
// does not know.
const (
	snapshotMagic   = "TKSNAP"
	snapshotVersion = 1
	snapshotStored  = 2

	frameMeta    = 1
	frameRecord  = 2
	frameRequest = 3
	frameFamily  = 4

	maxFrame = 1 << 20
)

type snapshotMeta struct {
	LastNow    int64  `codec:"n"`
	Applied    uint64 `codec:"a"`
	LogVersion int    `codec:"lv,omitempty"` // the state's Fence
}

// errMidEntry refuses a snapshot taken, or a state restored, while an
// entry is being applied and has let readers in between its commands.
var errMidEntry = errors.New("an entry is being applied")

// Snapshot captures a point-in-time view: an O(1) copy-on-write clone of
// the primary index, so writes go on while it streams. The records it
// names stay in the arena until it is released.
func (f *raftFSM) Snapshot() (raft.FSMSnapshot, error) {
	m := (*Machine)(f)
	if h, halted := m.Halted(); halted {
		// A snapshot would let Raft drop the entries this node has not
		// applied; a node that can apply them needs them.
		return nil, fmt.Errorf("snapshot: %w at index %d: %s", ErrHalted, h.Index, h.Reason)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.applying {
		return nil, errMidEntry
	}
	return &snapshot{m: m, st: m.st, gen: m.st.ar.openSnapshot(), logBytes: m.logBytes.Load(),
		records: m.st.byID.Clone(), reqs: m.st.reqs.view(), families: m.st.families.byName.Clone(),
		stored: m.st.logVersion >= compactSnapshotVersion, profiles: len(m.st.profiles.ids),
		meta: snapshotMeta{LastNow: m.lastNow, Applied: m.applied.Load(), LogVersion: m.st.logVersion}}, nil
}

type snapshot struct {
	m *Machine
	// st is the state it was taken of, whose arena holds its records
	// (and whose profiles it reads) until it is released: gen is its
	// generation there.
	st       *state
	gen      uint64
	released bool
	logBytes uint64 // the machine's logBytes when it was taken
	records  *btree.BTreeG[idItem]
	reqs     reqView
	families *btree.BTreeG[*RevokedFamily]
	meta     snapshotMeta
	// stored is whether it is written in version 2 of the stream, with
	// the first profiles of the state's table (which only grows).
	stored   bool
	profiles int
}

// Persist streams the records one by one into sink. Once the sink has
// them, the machine counts the log from this snapshot on.
func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	cw := &countingWriter{w: sink}
	if err := s.write(cw); err != nil {
		sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", err)
	}
	if err := sink.Close(); err != nil {
		return err
	}
	s.m.snapLogBytes.Store(s.logBytes)
	s.m.snapBytes.Store(cw.n)
	return nil
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n uint64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += uint64(n)
	return n, err
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n uint64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += uint64(n)
	return n, err
}

// write writes the snapshot stream to w. A record that does not read back
// from the arena fails it.
func (s *snapshot) write(w io.Writer) (err error) {
	defer recoverCorrupt(&err)
	bw := bufio.NewWriterSize(w, 64<<10)
	bw.WriteString(snapshotMagic)
	version := byte(snapshotVersion)
	if s.stored {
		version = snapshotStored
	}
	bw.WriteByte(version)
	fw := frameWriter{w: bw}
	fw.frame(frameMeta, &s.meta)
	var refs *refTable
	if s.stored {
		refs = s.writeStored(&fw)
	} else {
		var rec Record // one for every frame: a Record per record is a million allocations
		s.records.Ascend(func(it idItem) bool {
			s.st.recordTo(it.h, &rec, false)
			fw.frame(frameRecord, &rec)
			return fw.err == nil
		})
	}
	var (
		req            requestFrame // as rec: one for every request frame
		reqRec, reqAcc Record
	)
	for seq := s.reqs.head; seq < s.reqs.tail && fw.err == nil; seq++ {
		s.reqs.frameTo(s.st, seq, &req, &reqRec, &reqAcc, refs)
		fw.frame(frameRequest, &req)
	}
	s.families.Ascend(func(f *RevokedFamily) bool {
		fw.frame(frameFamily, f)
		return fw.err == nil
	})
	if fw.err != nil {
		return fw.err
	}
	return bw.Flush()
}

// writeStored writes the records as they are stored, each profile a
// record names in a frame before the first record that does (numbered in
// that order: the table also holds profiles no record names any more),
// and returns the records the remembered requests hold, each mapped to
// its place among the record frames.
func (s *snapshot) writeStored(fw *frameWriter) *refTable {
	stream := make([]uint32, s.profiles) // a table profile's number in the stream, plus 1; 0 before its first record
	var profiles uint32
	refs := holdRefs(&s.reqs, s.st.ar)
	var n uint32
	write := func(h handle) {
		b := s.st.ar.get(h)
		// The holders byte is the one that changes while the snapshot
		// is written: it is not read, and a restore counts its own.
		fw.rec = append(append(append(fw.rec[:0], b[:holdersAt]...), 0), b[holdersAt+1:]...)
		if b[5]&recInlineProfile == 0 {
			id := binary.LittleEndian.Uint32(b[48:])
			if uint64(id) >= uint64(len(stream)) {
				corrupt("record %s names profile %d of %d", rec(b).id(), id, len(stream))
			}
			if stream[id] == 0 {
				profiles++
				stream[id] = profiles
				fw.aux = appendProfile(fw.aux[:0], s.st.profiles.get(id))
				fw.body(frameProfile, fw.aux)
			}
			binary.LittleEndian.PutUint32(fw.rec[48:], stream[id]-1)
		}
		fw.body(frameStored, fw.rec)
		n++
		refs.place(h, n)
	}
	// The records are walked in id order, which is not where they are in
	// the arena: nearly every one is a cache miss. Their first bytes are
	// read a batch at a time before they are written, loads that do not
	// wait for one another, so the misses overlap.
	var (
		batch [64]handle
		nb    int
	)
	flush := func() {
		fw.touched += touchRecords(s.st.ar, batch[:nb])
		for _, h := range batch[:nb] {
			if fw.err != nil {
				break
			}
			write(h)
		}
		nb = 0
	}
	s.records.Ascend(func(it idItem) bool {
		batch[nb] = it.h
		if nb++; nb == len(batch) {
			flush()
		}
		return fw.err == nil
	})
	if fw.err == nil {
		flush()
	}
	return refs
}

// Release implements raft.FSMSnapshot: what the arena kept for the
// snapshot alone is freed.
func (s *snapshot) Release() {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	if !s.released {
		s.released = true
		s.st.ar.closeSnapshot(s.gen)
	}
}

type frameWriter struct {
	w   *bufio.Writer
	buf bytes.Buffer
	enc *codec.Encoder // reused: a new encoder per frame costs more than the frame
	rec []byte         // a record frame's body, reused
	aux []byte         // a profile frame's, beside the record that names it
	// head is a frame's type and length: a local array would escape
	// through bufio.Writer.Write, one allocation a frame.
	head    [1 + binary.MaxVarintLen64]byte
	touched byte // what touchRecords read, kept
	err     error
}

func (fw *frameWriter) frame(t byte, v any) {
	if fw.err != nil {
		return
	}
	switch v := v.(type) {
	case *Record:
		if fastCodec && v.Rotated == nil {
			// Nearly every frame: the codec's bytes, without its
			// reflection, from one reused buffer straight to the stream.
			fw.rec = appendRecord(fw.rec[:0], v)
			fw.body(t, fw.rec)
			return
		}
	case *requestFrame:
		if b, ok := appendRequest(fw.rec[:0], v); ok {
			fw.rec = b
			fw.body(t, b)
			return
		}
	}
	fw.buf.Reset()
	if fw.enc == nil {
		fw.enc = codec.NewEncoder(&fw.buf, msgpackHandle)
	} else {
		fw.enc.Reset(&fw.buf)
	}
	if fw.err = fw.enc.Encode(v); fw.err != nil {
		return
	}
	fw.body(t, fw.buf.Bytes())
}

// body writes a frame of type t around body, unless a frame before
// failed: the stream stops at its first error.
func (fw *frameWriter) body(t byte, body []byte) {
	if fw.err != nil {
		return
	}
	if len(body) > maxFrame {
		// Restore would refuse it: fail the snapshot now, keeping the log.
		fw.err = fmt.Errorf("frame of %d bytes exceeds %d", len(body), maxFrame)
		return
	}
	fw.head[0] = t
	fw.w.Write(fw.head[:1+binary.PutUvarint(fw.head[1:], uint64(len(body)))])
	_, fw.err = fw.w.Write(body)
}

// Restore replaces the whole state with the snapshot in rc.
func (f *raftFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	return (*Machine)(f).Restore(rc)
}

// Restore replaces the whole state with a snapshot stream. The new state is
// built aside and swapped in under the writer lock.
func (m *Machine) Restore(r io.Reader) (err error) {
	defer recoverCorrupt(&err)
	cr := &countingReader{r: r}
	br := bufio.NewReaderSize(cr, 64<<10)
	head := make([]byte, len(snapshotMagic)+1)
	if _, err := io.ReadFull(br, head); err != nil {
		return fmt.Errorf("restore: read header: %w", err)
	}
	if string(head[:len(snapshotMagic)]) != snapshotMagic {
		return fmt.Errorf("restore: not a tokenstore snapshot")
	}
	version := head[len(snapshotMagic)]
	if version != snapshotVersion && version != snapshotStored {
		return fmt.Errorf("restore: snapshot version %d, this node reads %d and %d", version, snapshotVersion, snapshotStored)
	}
	st := m.newState()
	var recs []handle
	var reqs []*request
	var meta snapshotMeta
	profiles := 0                                    // the profile frames read
	dec := codec.NewDecoderBytes(nil, msgpackHandle) // reused, as the encoder
	fr := readFrames(br)
	defer fr.stop()
	for {
		c := fr.next()
		if c == nil {
			break
		}
		for i := range c.frames {
			f := &c.frames[i]
			body := c.body(i)
			dec.ResetBytes(body)
			var err error
			// Each version has its own frames of records and profiles.
			switch {
			case version == snapshotVersion && (f.t == frameProfile || f.t == frameStored),
				version == snapshotStored && f.t == frameRecord:
				return fmt.Errorf("restore: frame type %d in a stream of version %d", f.t, version)
			}
			switch f.t {
			case frameMeta:
				err = dec.Decode(&meta)
			case frameRecord:
				r := &c.recs[i]
				if !f.fast {
					r = new(Record)
					err = dec.Decode(r)
				}
				if err == nil {
					// Compacted now, in the snapshot's order, so that only the
					// compact records are held until the indexes are built.
					recs = append(recs, st.compact(r))
				}
			case frameProfile:
				var p profile
				if p, err = readProfile(body); err == nil {
					if id, shared := st.profiles.of(p.kind, p.clientID, p.title, p.userAgent); !shared || int(id) != profiles {
						err = fmt.Errorf("profile frame %d: a profile the table holds, or cannot", profiles)
					}
					profiles++
				}
			case frameStored:
				if !f.fast {
					err = checkStored(body)
				} else if err = checkProfile(body, profiles); err == nil {
					recs = append(recs, st.storedCopy(body))
				}
			case frameRequest:
				q := f.req
				if !f.fast {
					q = new(requestFrame)
					err = dec.Decode(q)
				}
				if err == nil {
					var r *request
					if r, err = q.request(st, recs); err == nil {
						reqs = append(reqs, r)
					}
				}
			case frameFamily:
				f := new(RevokedFamily)
				if err = dec.Decode(f); err == nil {
					if f.Family == "" || st.families.byName.Has(f) {
						err = fmt.Errorf("empty or duplicate revoked family %q", f.Family)
					} else {
						st.families.put(f)
					}
				}
			default:
				err = fmt.Errorf("unknown frame type %d", f.t)
			}
			if err != nil {
				return fmt.Errorf("restore: %w", err)
			}
		}
		err := c.err
		fr.release(c)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("restore: %w", err)
		}
	}
	if err := st.load(recs, reqs, meta.LastNow); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	// Checked before the lock is taken: a refusal must leave it free.
	if meta.LogVersion > Version {
		return fmt.Errorf("restore: the state needs version %d of the state machine, this node runs %d", meta.LogVersion, Version)
	}
	m.mu.Lock()
	if m.applying {
		m.mu.Unlock()
		return fmt.Errorf("restore: %w", errMidEntry)
	}
	st.logVersion = meta.LogVersion
	m.st, m.lastNow = st, meta.LastNow
	m.logVersion.Store(int32(meta.LogVersion))
	m.lastIndex = 0 // Raft goes on after the snapshot's index, which it knows and the stream does not
	m.snapLogBytes.Store(m.logBytes.Load())
	m.snapBytes.Store(cr.n)
	m.mu.Unlock()
	// The snapshot was taken by a node that applied what halted this one.
	m.halt.Store(nil)
	m.setApplied(meta.Applied)
	return nil
}
