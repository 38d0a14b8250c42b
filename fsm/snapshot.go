package fsm

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

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
// frames refuses a snapshot that has any). Restore rejects versions it
// does not know.
const (
	snapshotMagic   = "TKSNAP"
	snapshotVersion = 1

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

// Snapshot captures a point-in-time view: an O(1) copy-on-write clone of
// the primary index, so writes go on while it streams.
func (f *raftFSM) Snapshot() (raft.FSMSnapshot, error) {
	m := (*Machine)(f)
	if h, halted := m.Halted(); halted {
		// A snapshot would let Raft drop the entries this node has not
		// applied; a node that can apply them needs them.
		return nil, fmt.Errorf("snapshot: %w at index %d: %s", ErrHalted, h.Index, h.Reason)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return &snapshot{records: m.st.byID.Clone(), reqs: m.st.reqs.Clone(), families: m.st.families.byName.Clone(),
		meta: snapshotMeta{LastNow: m.lastNow, Applied: m.applied.Load(), LogVersion: m.st.logVersion}}, nil
}

type snapshot struct {
	records  *btree.BTreeG[idItem]
	reqs     *btree.BTreeG[reqItem]
	families *btree.BTreeG[*RevokedFamily]
	meta     snapshotMeta
}

// Persist streams the records one by one into sink.
func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.write(sink); err != nil {
		sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", err)
	}
	return sink.Close()
}

// write writes the snapshot stream to w.
func (s *snapshot) write(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	bw.WriteString(snapshotMagic)
	bw.WriteByte(snapshotVersion)
	fw := frameWriter{w: bw}
	fw.frame(frameMeta, &s.meta)
	var rec Record // one for every frame: a Record per record is a million allocations
	s.records.Ascend(func(it idItem) bool {
		it.r.recordTo(&rec)
		fw.frame(frameRecord, &rec)
		return fw.err == nil
	})
	s.reqs.Ascend(func(it reqItem) bool {
		fw.frame(frameRequest, it.r.frame())
		return fw.err == nil
	})
	s.families.Ascend(func(f *RevokedFamily) bool {
		fw.frame(frameFamily, f)
		return fw.err == nil
	})
	if fw.err != nil {
		return fw.err
	}
	return bw.Flush()
}

// Release implements raft.FSMSnapshot.
func (s *snapshot) Release() {}

type frameWriter struct {
	w       *bufio.Writer
	buf     bytes.Buffer
	enc     *codec.Encoder // reused: a new encoder per frame costs more than the frame
	scratch [1024]byte
	err     error
}

func (fw *frameWriter) frame(t byte, v any) {
	if fw.err != nil {
		return
	}
	fw.buf.Reset()
	if r, ok := v.(*Record); ok && fastCodec && r.Rotated == nil {
		// Nearly every frame: the codec's bytes, without its reflection.
		fw.buf.Write(appendRecord(fw.scratch[:0], r))
	} else {
		if fw.enc == nil {
			fw.enc = codec.NewEncoder(&fw.buf, msgpackHandle)
		} else {
			fw.enc.Reset(&fw.buf)
		}
		if fw.err = fw.enc.Encode(v); fw.err != nil {
			return
		}
	}
	if fw.buf.Len() > maxFrame {
		// Restore would refuse it: fail the snapshot now, keeping the log.
		fw.err = fmt.Errorf("frame of %d bytes exceeds %d", fw.buf.Len(), maxFrame)
		return
	}
	fw.w.WriteByte(t)
	var n [binary.MaxVarintLen64]byte
	fw.w.Write(n[:binary.PutUvarint(n[:], uint64(fw.buf.Len()))])
	_, fw.err = fw.w.Write(fw.buf.Bytes())
}

// Restore replaces the whole state with the snapshot in rc.
func (f *raftFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	return (*Machine)(f).Restore(rc)
}

// Restore replaces the whole state with a snapshot stream. The new state is
// built aside and swapped in under the writer lock.
func (m *Machine) Restore(r io.Reader) error {
	br := bufio.NewReaderSize(r, 64<<10)
	head := make([]byte, len(snapshotMagic)+1)
	if _, err := io.ReadFull(br, head); err != nil {
		return fmt.Errorf("restore: read header: %w", err)
	}
	if string(head[:len(snapshotMagic)]) != snapshotMagic {
		return fmt.Errorf("restore: not a tokenstore snapshot")
	}
	if v := head[len(snapshotMagic)]; v != snapshotVersion {
		return fmt.Errorf("restore: snapshot version %d, this node reads %d", v, snapshotVersion)
	}
	st := newState()
	var reqs []*request
	var meta snapshotMeta
	var body []byte
	dec := codec.NewDecoderBytes(nil, msgpackHandle) // reused, as the encoder
	for {
		t, err := br.ReadByte()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		n, err := binary.ReadUvarint(br)
		if err != nil || n > maxFrame {
			return fmt.Errorf("restore: bad frame length %d: %v", n, err)
		}
		if uint64(cap(body)) < n {
			body = make([]byte, n)
		}
		body = body[:n]
		if _, err := io.ReadFull(br, body); err != nil {
			return fmt.Errorf("restore: truncated frame: %w", err)
		}
		dec.ResetBytes(body)
		switch t {
		case frameMeta:
			err = dec.Decode(&meta)
		case frameRecord:
			r, ok := fastRecord(body)
			if !ok {
				r = new(Record)
				err = dec.Decode(r)
			}
			if err == nil {
				if st.byHash[r.Hash] != nil || st.getID(r.ID) != nil {
					err = fmt.Errorf("duplicate record %s", r.ID)
				} else {
					st.put(nil, r)
				}
			}
		case frameRequest:
			f := new(requestFrame)
			if err = dec.Decode(f); err == nil {
				if st.request(f.ID) != nil {
					err = fmt.Errorf("duplicate request id %s", f.ID)
				} else {
					r := f.request(st)
					st.reqs.ReplaceOrInsert(reqItem{h: reqHash(r.id), id: r.id, r: r})
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
			err = fmt.Errorf("unknown frame type %d", t)
		}
		if err != nil {
			return fmt.Errorf("restore: %w", err)
		}
	}
	slices.SortFunc(reqs, func(a, b *request) int { return cmp.Or(cmp.Compare(a.at, b.at), strings.Compare(a.id, b.id)) })
	st.reqQueue = reqs
	m.mu.Lock()
	if meta.LogVersion > Version {
		return fmt.Errorf("restore: the state needs version %d of the state machine, this node runs %d", meta.LogVersion, Version)
	}
	st.logVersion = meta.LogVersion
	m.st, m.lastNow = st, meta.LastNow
	m.logVersion.Store(int32(meta.LogVersion))
	m.lastIndex = 0 // Raft goes on after the snapshot's index, which it knows and the stream does not
	m.mu.Unlock()
	// The snapshot was taken by a node that applied what halted this one.
	m.halt.Store(nil)
	m.setApplied(meta.Applied)
	return nil
}
