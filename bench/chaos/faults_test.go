package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/bench/history"
	"github.com/tokenstore/tokenstore/internal/proccluster"
)

// Every name of the command line resolves to its own type, and the lists
// the command line and the timeline use keep their names and order.
func TestFaultNamed(t *testing.T) {
	for name, want := range map[string]Fault{
		FaultKillLeader:        killLeader{},
		FaultKillNode:          killNode{},
		FaultPause:             pauseNode{},
		FaultPartitionPrimary:  partitionPrimary{},
		FaultPartitionFollower: partitionFollower{},
		FaultRandom:            randomFault{},
	} {
		f, err := FaultNamed(name)
		if err != nil || f != want || f.Name() != name {
			t.Errorf("FaultNamed(%q) = %T %v, want %T named %q", name, f, err, want, name)
		}
	}
	if want := []string{"kill-leader", "kill-node", "pause", "partition-primary", "partition-follower"}; !slices.Equal(FaultKinds, want) {
		t.Errorf("FaultKinds = %v, want %v", FaultKinds, want)
	}
	if want := []string{"kill-leader", "kill-node", "pause"}; !slices.Equal(ProcessFaults, want) {
		t.Errorf("ProcessFaults = %v, want %v", ProcessFaults, want)
	}
	for _, name := range []string{"bogus", "", "Kill-Leader", "partition"} {
		f, err := FaultNamed(name)
		if want := fmt.Sprintf("bench: unknown fault: %q", name); f != nil || !errors.Is(err, ErrUnknownFault) || err.Error() != want {
			t.Errorf("FaultNamed(%q) = %v, %v; want nil, %s", name, f, err, want)
		}
	}
}

func TestSchedule(t *testing.T) {
	all := append(slices.Clone(FaultKinds), FaultRandom)
	got, err := schedule(all, true)
	if err != nil || len(got) != len(all) {
		t.Fatalf("schedule(%v) with the network = %v, %v", all, got, err)
	}
	for i, f := range got {
		if f.Name() != all[i] {
			t.Errorf("fault %d of the schedule is %s, want %s", i, f.Name(), all[i])
		}
	}
	if _, err := schedule(append(slices.Clone(ProcessFaults), FaultRandom), false); err != nil {
		t.Errorf("process faults on loopback: %v", err)
	}
	for _, tc := range []struct {
		names   []string
		network bool
		want    error
		text    string
	}{
		{[]string{FaultKillLeader, FaultPartitionPrimary}, false, ErrNeedsNetwork, "bench: partitions need the emulated network: partition-primary"},
		{[]string{FaultPartitionFollower}, false, ErrNeedsNetwork, "bench: partitions need the emulated network: partition-follower"},
		{[]string{FaultKillLeader, "bogus", FaultPartitionPrimary}, false, ErrUnknownFault, `bench: unknown fault: "bogus"`},
		{[]string{"bogus"}, true, ErrUnknownFault, `bench: unknown fault: "bogus"`},
	} {
		if _, err := schedule(tc.names, tc.network); !errors.Is(err, tc.want) || err.Error() != tc.text {
			t.Errorf("schedule(%v, network %v) = %v, want %s", tc.names, tc.network, err, tc.text)
		}
	}
}

// The expectations are what measureFaults and the report measure of each
// fault.
func TestFaultExpectations(t *testing.T) {
	for _, tc := range []struct {
		name    string
		network bool
		want    Expectation
	}{
		{FaultKillLeader, false, Expectation{Resume: true}},
		{FaultKillNode, false, Expectation{}},
		{FaultPause, false, Expectation{}},
		{FaultPartitionPrimary, true, Expectation{MajorityAnswered: true, CutAnswered: true}},
		{FaultPartitionFollower, true, Expectation{MajorityAnswered: true, CutAnswered: true}},
		{FaultRandom, false, Expectation{}},
	} {
		f, err := FaultNamed(tc.name)
		if err != nil {
			t.Fatal(err)
		}
		if f.NeedsNetwork() != tc.network || f.Expect() != tc.want || expectOf(tc.name) != tc.want {
			t.Errorf("%s: needs the network %v, expects %+v; want %v, %+v", tc.name, f.NeedsNetwork(), f.Expect(), tc.network, tc.want)
		}
	}
	if got := expectOf("bogus"); got != (Expectation{}) {
		t.Errorf("an unknown kind expects %+v, want nothing", got)
	}
}

// measureFaults fills what a fault's expectation asks for, and only that.
func TestMeasureFaults(t *testing.T) {
	s := int64(time.Second)
	ops := []history.Op{
		// Before the faults, in DC a: in as long a time just before, and
		// earlier.
		{DC: "a", Kind: history.OpLookup, Call: 1 * s, Return: 1*s + 1, Outcome: history.OutcomeOK, Result: history.ResultActive},
		{DC: "a", Kind: history.OpLookup, Call: 6 * s, Return: 6*s + 1, Outcome: history.OutcomeOK, Result: history.ResultActive},
		// During them: a write of DC a acknowledged 2.5s after the start
		// of the faults, a lookup of DC a, a write of DC b answered with
		// a 503 and one of DC b never answered.
		{DC: "a", Kind: history.OpIssue, Call: 11 * s, Return: 12*s + s/2, Outcome: history.OutcomeOK, Result: history.ResultCreated, Answered: true},
		{DC: "a", Kind: history.OpLookup, Call: 11 * s, Return: 11*s + 1, Outcome: history.OutcomeOK, Result: history.ResultActive, Answered: true},
		{DC: "b", Kind: history.OpConsume, Call: 12 * s, Return: 13 * s, Outcome: history.OutcomeFailed, Answered: true},
		{DC: "b", Kind: history.OpConsume, Call: 12 * s, Return: 17 * s, Outcome: history.OutcomeUnknown},
		// A final read counts for none.
		{DC: "a", Kind: history.OpLookup, Call: 12 * s, Return: 12*s + 1, Outcome: history.OutcomeOK, Result: history.ResultActive, Final: true},
	}
	side := FaultEvent{At: 10, Healed: 15, MajorityDCs: []string{"a"}, CutDCs: []string{"b"}}
	event := func(kind string) FaultEvent { ev := side; ev.Kind = kind; return ev }
	got := measureFaults([]FaultEvent{event(FaultKillLeader), event(FaultKillNode), event(FaultPartitionPrimary), event(FaultPartitionFollower)}, ops)
	writes := func(f FaultEvent) string { return fmt.Sprintf("%d/%d", f.WritesOK, f.Writes) }
	for i, want := range []struct {
		resume                    float64
		majority, majorityOK, cut int
		cutAnswered, before       int
	}{
		{resume: 2.5},
		{},
		{majority: 2, majorityOK: 2, before: 1, cut: 2, cutAnswered: 1},
		{majority: 2, majorityOK: 2, before: 1, cut: 2, cutAnswered: 1},
	} {
		f := got[i]
		if f.Resume != want.resume || f.MajorityOps != want.majority || f.MajorityOK != want.majorityOK || f.MajorityOpsBefore != want.before ||
			f.CutWrites != want.cut || f.CutWritesAnswered != want.cutAnswered || writes(f) != "1/3" {
			t.Errorf("%s: measured %+v, want %+v and writes 1/3", f.Kind, f, want)
		}
	}
	// A leader kill without a write acknowledged after it never resumed.
	if got := measureFaults([]FaultEvent{{Kind: FaultKillLeader, At: 20, Healed: 25}}, ops); got[0].Resume != -1 {
		t.Errorf("a leader kill without writes after it: resume %v, want -1", got[0].Resume)
	}
}

// The report's columns follow the expectations: the resume time for a
// leader kill, the sides' answers for a partition.
func TestReportColumnsFollowExpectations(t *testing.T) {
	rep := &Report{Faults: []FaultEvent{
		{Kind: FaultKillLeader, Node: "n1", DC: "a", Resume: 1.25},
		{Kind: FaultPause, Node: "n2", DC: "a"},
		{Kind: FaultPartitionPrimary, Node: "n1,n2,n3", DC: "a", At: 1, Healed: 2, MajorityDCs: []string{"a"}, MajorityOps: 4, MajorityOK: 3,
			CutDCs: []string{"b"}, CutWrites: 2, CutWritesAnswered: 2},
		{Kind: FaultPartitionPrimary, Node: "n1,n2", DC: "a", At: 1, Healed: 2},
	}}
	var b strings.Builder
	if err := rep.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| kill-leader | n1 (a) | 0.0 | 0.0 | 0 / 0 | 1.25 |  |  |\n",
		"| pause | n2 (a) | 0.0 | 0.0 | 0 / 0 |  |  |  |\n",
		"| partition-primary | n1,n2,n3 (a) | 1.0 | 2.0 | 0 / 0 |  | 3 / 4 (75.0%), 4/s (before: 0/s), clients of a | 2 / 2 (100.0%, 503s included), clients of b |\n",
		"| partition-primary | n1,n2 (a) | 1.0 | 2.0 | 0 / 0 |  | no side has a majority |  |\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("want the row %q in\n%s", want, b.String())
		}
	}
}

// fakeEnv is a cluster without processes: a network that records its
// cuts, a fixed leader and choices from a seed.
type fakeEnv struct {
	all       []*proccluster.Node
	dcList    []proccluster.DC
	lead      *proccluster.Node
	leaderErr error
	net       *fakeNet
	rng       *rand.Rand
}

type fakeNet struct {
	cut    [][]string
	healed int
}

func (n *fakeNet) Partition(side []string) error { n.cut = append(n.cut, side); return nil }
func (n *fakeNet) Heal() error                   { n.healed++; return nil }

func (e *fakeEnv) nodes() []*proccluster.Node                        { return e.all }
func (e *fakeEnv) dcs() []proccluster.DC                             { return e.dcList }
func (e *fakeEnv) leader(context.Context) (*proccluster.Node, error) { return e.lead, e.leaderErr }
func (e *fakeEnv) intN(n int) int                                    { return e.rng.IntN(n) }
func (e *fakeEnv) seconds() float64                                  { return 7 }
func (e *fakeEnv) downtime() time.Duration                           { return 3 * time.Second }
func (e *fakeEnv) partitionTime() time.Duration                      { return 8 * time.Second }
func (e *fakeEnv) network() partitioner {
	if e.net == nil {
		return nil
	}
	return e.net
}

// newFakeEnv is a:3,b:2 with n1 leading.
func newFakeEnv(network bool) *fakeEnv {
	e := &fakeEnv{dcList: []proccluster.DC{{Name: "a", Nodes: 3}, {Name: "b", Nodes: 2}}, rng: rand.New(rand.NewPCG(7, 1))}
	for i, dc := range []string{"a", "a", "a", "b", "b"} {
		e.all = append(e.all, &proccluster.Node{ID: fmt.Sprintf("n%d", i+1), DC: dc, Voter: true})
	}
	e.lead = e.all[0]
	if network {
		e.net = &fakeNet{}
	}
	return e
}

func TestPartitionPrimaryInject(t *testing.T) {
	env := newFakeEnv(true)
	in, err := partitionPrimary{}.Inject(context.Background(), env)
	if err != nil {
		t.Fatal(err)
	}
	ev := in.Event
	if ev.Kind != FaultPartitionPrimary || ev.Node != "n1,n2,n3" || ev.DC != "a" || ev.At != 7 ||
		!slices.Equal(ev.MajorityDCs, []string{"a"}) || !slices.Equal(ev.CutDCs, []string{"b"}) || in.Lasts != 8*time.Second {
		t.Errorf("partition of the primary DC: %+v, lasting %s", ev, in.Lasts)
	}
	if len(env.net.cut) != 1 || !slices.Equal(env.net.cut[0], []string{"n1", "n2", "n3"}) || env.net.healed != 0 {
		t.Errorf("want n1,n2,n3 cut off and not healed yet, got %+v", env.net)
	}
	if err := in.Heal(context.Background()); err != nil || env.net.healed != 1 {
		t.Errorf("heal: %v, healed %d times", err, env.net.healed)
	}
}

func TestPartitionFollowerInject(t *testing.T) {
	env := newFakeEnv(true)
	for range 50 {
		in, err := partitionFollower{}.Inject(context.Background(), env)
		if err != nil {
			t.Fatal(err)
		}
		if ev := in.Event; ev.Kind != FaultPartitionFollower || ev.Node == "" || strings.Contains(ev.Node, ",") || ev.Node == env.lead.ID {
			t.Fatalf("want one follower cut off, not the leader %s: %+v", env.lead.ID, ev)
		}
		if err := in.Heal(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	// Without a leader, or without a follower, nothing is cut.
	env.leaderErr = ErrNoLeaderSeen
	in, err := partitionFollower{}.Inject(context.Background(), env)
	if !errors.Is(err, ErrNoLeaderSeen) || in.Event.Kind != FaultPartitionFollower || in.Event.Node != "" || in.Heal(context.Background()) != nil {
		t.Errorf("no leader: %+v, %v", in, err)
	}
	one := &fakeEnv{all: env.all[:1], dcList: []proccluster.DC{{Name: "a", Nodes: 1}}, lead: env.all[0], net: &fakeNet{}, rng: env.rng}
	if _, err := (partitionFollower{}).Inject(context.Background(), one); err == nil || len(one.net.cut) != 0 {
		t.Errorf("a cluster of one node: want an error and no cut, got %v, %+v", err, one.net)
	}
	if len(env.net.cut) != 50 || env.net.healed != 50 {
		t.Errorf("want 50 cuts and heals, got %d and %d", len(env.net.cut), env.net.healed)
	}
}

func TestKillLeaderWithoutLeader(t *testing.T) {
	env := newFakeEnv(false)
	env.leaderErr = ErrNoLeaderSeen
	in, err := killLeader{}.Inject(context.Background(), env)
	if !errors.Is(err, ErrNoLeaderSeen) || in.Event.Kind != FaultKillLeader || in.Event.At != 7 || in.Event.Node != "" {
		t.Errorf("kill-leader without a leader: %+v, %v", in.Event, err)
	}
	if err := in.Heal(context.Background()); err != nil {
		t.Errorf("nothing to heal, got %v", err)
	}
}

// A random fault picks among the faults the run can make: the process
// faults on loopback, all of them with the network.
func TestRandomFaultPicks(t *testing.T) {
	for _, network := range []bool{false, true} {
		env := newFakeEnv(network)
		seen := map[string]bool{}
		for range 200 {
			seen[randomFault{}.pick(env).Name()] = true
		}
		want := ProcessFaults
		if network {
			want = FaultKinds
		}
		var got []string
		for _, k := range FaultKinds {
			if seen[k] {
				got = append(got, k)
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("network %v: random picked %v, want %v", network, got, want)
		}
	}
}
