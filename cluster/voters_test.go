package cluster

import (
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tokenstore/tokenstore/fsm"
)

// base stands in for the true time: every clock below is read against it,
// never against the machine's.
var base = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func TestVoterTime(t *testing.T) {
	slack := clockSlack
	at := func(d time.Duration) int64 { return base.Add(d).UnixNano() }
	cases := []struct {
		name    string
		own     time.Duration   // the leader's clock, from the true time
		others  []time.Duration // the other voters' clocks
		want    time.Duration
		clamped bool
	}{
		{"all agree", 0, []time.Duration{0, 0}, 0, false},
		{"within the slack", 500 * time.Millisecond, []time.Duration{0, 0}, 500 * time.Millisecond, false},
		{"leader ahead by 1h", time.Hour, []time.Duration{0, 0}, slack, true},
		{"leader behind by 1h", -time.Hour, []time.Duration{0, 0}, -slack, true},
		{"one follower ahead by 1h", 0, []time.Duration{time.Hour, 0}, 0, false},
		{"one follower behind by 1h", 0, []time.Duration{-time.Hour, 0}, 0, false},
		// Two voters cannot tell which clock is wrong: the lower median
		// keeps log time from running ahead, at the cost of holding it back.
		{"two voters, leader ahead", time.Hour, []time.Duration{0}, slack, true},
		{"two voters, leader behind", -time.Hour, []time.Duration{0}, -time.Hour, false},
		{"five voters, two wrong followers", 0, []time.Duration{time.Hour, -time.Hour, 0, 0}, 0, false},
		{"five voters, leader and one follower ahead", time.Hour, []time.Duration{time.Hour, 0, 0, 0}, slack, true},
		{"five voters, leader ahead, followers spread", time.Hour, []time.Duration{-2 * time.Second, 0, 2 * time.Second, time.Hour}, 2*time.Second + slack, true},
		{"one voter", time.Hour, nil, time.Hour, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			clocks := []int64{at(c.own)}
			for _, o := range c.others {
				clocks = append(clocks, at(o))
			}
			got, _, clamped := voterTime(at(c.own), clocks)
			if got != at(c.want) || clamped != c.clamped {
				t.Fatalf("voterTime: want %s clamped=%v, got %s clamped=%v",
					c.want, c.clamped, time.Duration(got-base.UnixNano()), clamped)
			}
		})
	}
}

// viewOf fills a view as a leader "a" would: each other voter reported
// its clock (offset from the true time) at received.
func viewOf(received time.Time, offsets map[raft.ServerID]time.Duration) (*voterView, uint64) {
	v := &voterView{}
	gen := v.reset()
	for id, off := range offsets {
		v.put(gen, id, voterSample{clock: received.Add(off).UnixNano(), received: received})
	}
	return v, gen
}

func TestLogTimeFollowsTheVotersClocks(t *testing.T) {
	three := []raft.ServerID{"a", "b", "c"}
	received := base
	later := base.Add(30 * time.Second) // samples age; their estimates move with them

	v, _ := viewOf(received, map[raft.ServerID]time.Duration{"b": 0, "c": 0})
	got, offset, clamped, err := v.logTime("a", three, later.Add(time.Hour).UnixNano(), later)
	if err != nil || !clamped || got != later.Add(clockSlack).UnixNano() || offset != time.Hour {
		t.Fatalf("leader 1h ahead: want %s clamped with offset 1h, got %s clamped=%v offset %s, %v",
			later.Add(clockSlack), time.Unix(0, got).UTC(), clamped, offset, err)
	}
	got, _, clamped, err = v.logTime("a", three, later.UnixNano(), later)
	if err != nil || clamped || got != later.UnixNano() {
		t.Fatalf("leader right: want its own clock, got %s clamped=%v, %v", time.Unix(0, got).UTC(), clamped, err)
	}

	// One follower reported: with the leader, a majority of three.
	v, _ = viewOf(received, map[raft.ServerID]time.Duration{"b": time.Hour})
	got, _, clamped, err = v.logTime("a", three, later.UnixNano(), later)
	if err != nil || clamped || got != later.UnixNano() {
		t.Fatalf("two of three, the follower 1h ahead: want the leader's clock (lower median), got %s clamped=%v, %v",
			time.Unix(0, got).UTC(), clamped, err)
	}

	// A node of the first release reports no clock: it stands in with the
	// leader's, as log time was before voters reported clocks.
	v = &voterView{}
	gen := v.reset()
	v.put(gen, "b", voterSample{received: received})
	v.put(gen, "c", voterSample{received: received})
	if got, _, clamped, err := v.logTime("a", three, later.Add(time.Hour).UnixNano(), later); err != nil || clamped || got != later.Add(time.Hour).UnixNano() {
		t.Fatalf("followers without clocks: want the leader's clock, got %s clamped=%v, %v", time.Unix(0, got).UTC(), clamped, err)
	}
}

func TestLogTimeWithoutAMajorityIsBusy(t *testing.T) {
	five := []raft.ServerID{"a", "b", "c", "d", "e"}
	cases := []struct {
		name    string
		voters  []raft.ServerID
		sampled map[raft.ServerID]time.Duration
		busy    bool
	}{
		{"one voter: itself", []raft.ServerID{"a"}, nil, false},
		{"three voters, none sampled", five[:3], nil, true},
		{"three voters, one sampled", five[:3], map[raft.ServerID]time.Duration{"b": 0}, false},
		{"two voters, none sampled", five[:2], nil, true},
		{"two voters, the other sampled", five[:2], map[raft.ServerID]time.Duration{"b": 0}, false},
		{"five voters, one sampled", five, map[raft.ServerID]time.Duration{"b": 0}, true},
		{"five voters, two sampled", five, map[raft.ServerID]time.Duration{"b": 0, "c": 0}, false},
		{"a sample of a server no longer a voter", five[:3], map[raft.ServerID]time.Duration{"x": 0}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v, _ := viewOf(base, c.sampled)
			_, _, _, err := v.logTime("a", c.voters, base.UnixNano(), base)
			if busy := errors.Is(err, ErrBusy); busy != c.busy || (!c.busy && err != nil) {
				t.Fatalf("want busy=%v, got %v", c.busy, err)
			}
			if got := v.majority("a", c.voters); got == c.busy {
				t.Fatalf("majority: want %v, got %v", !c.busy, got)
			}
		})
	}
}

func TestVoterViewKeepsOnlyItsTermsVoters(t *testing.T) {
	v, gen := viewOf(base, map[raft.ServerID]time.Duration{"b": 0, "c": 0})
	v.keep(gen, []raft.ServerID{"a", "b"})
	if _, ok := v.samples["c"]; ok {
		t.Fatal("keep: the sample of a removed voter stayed")
	}
	if _, ok := v.samples["b"]; !ok {
		t.Fatal("keep: the sample of a voter was dropped")
	}
	next := v.reset()
	v.put(gen, "b", voterSample{clock: 1, received: base})
	if len(v.samples) != 0 {
		t.Fatalf("a sampler of an earlier term added to term %d: %v", next, v.samples)
	}
	v.keep(gen, nil) // an earlier term's keep leaves the new term alone
	v.put(next, "b", voterSample{clock: 1, received: base})
	v.keep(gen, nil)
	if len(v.samples) != 1 {
		t.Fatalf("an earlier term's keep dropped samples of term %d", next)
	}
}

func TestAllVotersKnow(t *testing.T) {
	const newType fsm.Type = 42
	voters := []raft.ServerID{"a", "b", "c"}
	v := &voterView{}
	gen := v.reset()
	first := fsm.BaseTypes()
	v.put(gen, "b", voterSample{types: append(first, newType)})
	if v.allKnow("a", voters, fsm.TypeIssue) {
		t.Fatal("allKnow: true while voter c has not reported")
	}
	v.put(gen, "c", voterSample{types: fsm.BaseTypes()})
	if v.allKnow("a", voters, newType) {
		t.Fatal("allKnow: true for a type voter c does not know")
	}
	if !v.allKnow("a", voters, fsm.TypeIssue) {
		t.Fatal("allKnow: false for a type every voter reported")
	}
	v.put(gen, "c", voterSample{types: []fsm.Type{newType}})
	// The leader itself knows only what this build registers.
	if v.allKnow("a", voters, newType) {
		t.Fatal("allKnow: true for a type the leader's build does not know")
	}
	if !v.allKnow("a", voters[1:], newType) {
		t.Fatal("allKnow: false for a type every voter (the leader not among them) reported")
	}
}

func TestClampLogIsRateLimited(t *testing.T) {
	var c clampLog
	steps := []struct {
		after time.Duration // since the start
		log   bool
		count int
	}{
		{0, true, 1},
		{time.Second, false, 0},
		{5 * time.Second, false, 0},
		{clampLogEvery, true, 3},
		{clampLogEvery + time.Second, false, 0},
		{3 * clampLogEvery, true, 2},
	}
	for i, s := range steps {
		log, k := c.note(base.Add(s.after))
		if log != s.log || k != s.count {
			t.Fatalf("clamp %d at +%s: want log=%v count %d, got log=%v count %d", i, s.after, s.log, s.count, log, k)
		}
	}
}

// A one-voter cluster is its own majority: it stamps batches at once, and
// gates types by what its build knows.
func TestOneVoterKnowsItsOwnClockAndTypes(t *testing.T) {
	clock := func() time.Time { return base }
	n, err := Open(Config{DataDir: t.TempDir(), RaftAddr: "127.0.0.1:0", Bootstrap: true, Now: clock,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	deadline := time.Now().Add(30 * time.Second)
	for n.Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("not ready after 30s: %v", n.Ready())
		}
		<-time.After(20 * time.Millisecond)
	}
	if got, err := n.logNow(); err != nil || got != base.UnixNano() {
		t.Fatalf("logNow on a one-voter leader: want its own clock %s, got %s, %v", base, time.Unix(0, got).UTC(), err)
	}
	if !n.votersKnow(fsm.TypeRotate) {
		t.Error("votersKnow: false for a base type")
	}
	if n.votersKnow(fsm.Type(0x40)) {
		t.Error("votersKnow: true for a type no build registers")
	}
}

func TestVotersVersion(t *testing.T) {
	voters := []raft.ServerID{"a", "b", "c"}
	v := &voterView{}
	gen := v.reset()
	if got := v.minVersion("a", voters); got != 1 {
		t.Fatalf("minVersion with no reports = %d, want 1", got)
	}
	v.put(gen, "b", sampleOf(&statusReply{Version: fsm.Version}, time.Now()))
	if got := v.minVersion("a", voters); got != 1 {
		t.Fatalf("minVersion while voter c has not reported = %d, want 1", got)
	}
	v.put(gen, "c", sampleOf(&statusReply{}, time.Now())) // a first-release node reports none
	if got := v.minVersion("a", voters); got != 1 {
		t.Fatalf("minVersion with a first-release voter = %d, want 1", got)
	}
	v.put(gen, "c", sampleOf(&statusReply{Version: fsm.Version}, time.Now()))
	if got := v.minVersion("a", voters); got != fsm.Version {
		t.Fatalf("minVersion with every voter on this build = %d, want %d", got, fsm.Version)
	}
}
