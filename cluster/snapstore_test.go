package cluster

import (
	"bytes"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// A snapshot written through the store reads back as it was written, in
// pieces of every size, and the file was found where Raft writes it: a
// release of Raft that moves it would leave snapshots without
// write-behind, and fails here.
func TestSnapshotStoreWritesBehind(t *testing.T) {
	if !writeBehindOn {
		t.Skip("no write-behind on this system")
	}
	dir := t.TempDir()
	s, err := newSnapshotStore(dir, 2, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	_, trans := raft.NewInmemTransport("")
	want := make([]byte, 7*writeBehind/2+12345)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range want {
		want[i] = byte(rng.Uint32())
	}
	sink, err := s.Create(raft.SnapshotVersionMax, 10, 2, raft.Configuration{}, 1, trans)
	if err != nil {
		t.Fatal(err)
	}
	wb, ok := sink.(*writeBehindSink)
	if !ok || wb.f == nil {
		t.Fatalf("sink %T: the snapshot's file was not found where Raft writes it", sink)
	}
	for b := want; len(b) > 0; {
		n := min(len(b), 1+rng.IntN(3<<20))
		if _, err := sink.Write(b[:n]); err != nil {
			t.Fatal(err)
		}
		b = b[n:]
	}
	if wb.f == nil {
		t.Fatal("write-behind stopped")
	}
	if wb.started != 3*writeBehind {
		t.Fatalf("%d bytes started, want %d", wb.started, 3*writeBehind)
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	metas, err := s.List()
	if err != nil || len(metas) != 1 || metas[0].Index != 10 || metas[0].Size != int64(len(want)) {
		t.Fatalf("listed %+v, %v; want the one snapshot at index 10 of %d bytes", metas, err, len(want))
	}
	_, rc, err := s.Open(metas[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the snapshot read back differs from what was written")
	}
}

// A cancelled snapshot leaves nothing listed.
func TestSnapshotStoreCancel(t *testing.T) {
	s, err := newSnapshotStore(t.TempDir(), 2, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	_, trans := raft.NewInmemTransport("")
	sink, err := s.Create(raft.SnapshotVersionMax, 10, 2, raft.Configuration{}, 1, trans)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Write(make([]byte, 3*writeBehind)); err != nil {
		t.Fatal(err)
	}
	if err := sink.Cancel(); err != nil {
		t.Fatal(err)
	}
	if metas, err := s.List(); err != nil || len(metas) != 0 {
		t.Fatalf("listed %+v, %v after a cancel; want none", metas, err)
	}
}
