package cluster

import "testing"

func TestSnapshotDueBySize(t *testing.T) {
	c := Config{}
	c.setDefaults()
	for _, tt := range []struct {
		log, snap uint64
		want      bool
	}{
		{0, 0, false},
		{4<<20 - 1, 0, false}, // no snapshot yet: the floor
		{4 << 20, 0, true},
		{3 << 20, 8 << 20, false}, // a small state: the floor
		{4 << 20, 8 << 20, true},
		{12<<20 - 1, 48 << 20, false}, // a quarter of the state
		{12 << 20, 48 << 20, true},
		{16<<20 - 1, 200 << 20, false}, // a large state: the ceiling
		{16 << 20, 200 << 20, true},
		{16<<20 - 1, 2 << 30, false},
		{16<<20 - 1, 1<<64 - 1, false}, // no overflow
		{1<<64 - 1, 1<<64 - 1, true},
	} {
		if got := c.snapshotDue(tt.log, tt.snap); got != tt.want {
			t.Errorf("snapshotDue(log %d, snapshot %d) = %v, want %v", tt.log, tt.snap, got, tt.want)
		}
	}
}
