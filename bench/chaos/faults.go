package chaos

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tokenstore/tokenstore/internal/proccluster"
)

// Faults a chaos run injects, by name: the names of the command line
// (--faults) and of the report (a fault event's kind).
const (
	// FaultKillLeader SIGKILLs the leader and restarts it on its data
	// after the downtime.
	FaultKillLeader = "kill-leader"
	// FaultKillNode SIGKILLs a random node and restarts it on its data
	// after the downtime.
	FaultKillNode = "kill-node"
	// FaultPause SIGSTOPs a random node for the downtime (longer than the
	// election timeout), then SIGCONTs it.
	FaultPause = "pause"
	// FaultPartitionPrimary cuts the nodes of the primary DC off from all
	// others, gossip included, for the partition time.
	FaultPartitionPrimary = "partition-primary"
	// FaultPartitionFollower cuts a random follower off from all other
	// nodes for the partition time.
	FaultPartitionFollower = "partition-follower"
	// FaultRandom picks one of the others at random, from the seed.
	FaultRandom = "random"
)

// Fault is one kind of fault of a chaos run: its name, whether it needs
// the emulated network, what the cluster must still do while it lasts,
// and how it is made and healed.
type Fault interface {
	// Name is the fault's name on the command line and in the report.
	Name() string
	// NeedsNetwork reports whether the fault cuts links of the emulated
	// network, which a run on loopback does not have.
	NeedsNetwork() bool
	// Expect is what the checker may expect of the cluster while the
	// fault lasts, and so what it measures of it.
	Expect() Expectation
	// Inject picks the nodes the fault acts on and makes the fault. The
	// value names them and the time the fault was made; its Heal ends
	// the fault, also after an error from making it. When no target was
	// found, the error says why and Heal has nothing to do.
	Inject(ctx context.Context, env faultEnv) (Injected, error)
}

// Expectation is what the checker may expect of the cluster while a fault
// lasts. The fault event's fields that measure it are filled only for the
// faults that expect it.
type Expectation struct {
	// Resume: writes stop until a new leader is elected; the time from the
	// fault to the first acknowledged write invoked after it is measured
	// (the event's Resume).
	Resume bool
	// MajorityAnswered: the clients of the DCs wholly on the side that
	// keeps a majority of the voters go on being answered (MajorityOps,
	// MajorityOK, MajorityOpsBefore).
	MajorityAnswered bool
	// CutAnswered: the nodes of the DCs cut off from any leader answer
	// their clients' writes before the fault heals, 503s included, rather
	// than hold them until the clients give up (CutWrites,
	// CutWritesAnswered).
	CutAnswered bool
}

// Injected is a fault in effect.
type Injected struct {
	// Event names the fault, the nodes it acts on and the time it was
	// made, with the fields the fault owns; the run adds the rest.
	Event FaultEvent
	// Lasts is how long the run keeps the fault before it heals it.
	Lasts time.Duration
	heal  func(ctx context.Context) error
}

// Heal ends the fault.
func (in Injected) Heal(ctx context.Context) error {
	if in.heal == nil {
		return nil
	}
	return in.heal(ctx)
}

// faultEnv is what a fault acts on: the run's cluster, its network, its
// random choices and its clock. *chaosRun is one.
type faultEnv interface {
	nodes() []*proccluster.Node
	dcs() []proccluster.DC
	// leader asks the running nodes which one leads.
	leader(ctx context.Context) (*proccluster.Node, error)
	// network is the emulated network, nil on loopback.
	network() partitioner
	// intN is a choice in [0, n) from the run's seed.
	intN(n int) int
	// seconds is the time since the start of the run.
	seconds() float64
	// downtime is how long a killed node stays down and a paused one
	// stopped; partitionTime how long a partition lasts.
	downtime() time.Duration
	partitionTime() time.Duration
}

// partitioner cuts a side of the network off from the rest and heals it.
type partitioner interface {
	Partition(side []string) error
	Heal() error
}

// allFaults are the faults a schedule may name, in the order of
// FaultKinds: a random pick and the timeline's rows follow it.
var allFaults = []Fault{killLeader{}, killNode{}, pauseNode{}, partitionPrimary{}, partitionFollower{}}

// FaultKinds are the faults a schedule may name; the partitions need
// an emulated network.
var FaultKinds = faultNames(allFaults, true)

// ProcessFaults are the faults that need no emulated network.
var ProcessFaults = faultNames(allFaults, false)

// faultNames are the names of faults, those that need the network only
// with network.
func faultNames(faults []Fault, network bool) []string {
	var out []string
	for _, f := range faults {
		if network || !f.NeedsNetwork() {
			out = append(out, f.Name())
		}
	}
	return out
}

// FaultNamed is the fault of a name of FaultKinds or FaultRandom.
func FaultNamed(name string) (Fault, error) {
	if name == FaultRandom {
		return randomFault{}, nil
	}
	for _, f := range allFaults {
		if f.Name() == name {
			return f, nil
		}
	}
	return nil, fmt.Errorf("%w: %q", ErrUnknownFault, name)
}

// schedule resolves the names of a run's faults; those that need the
// network need network.
func schedule(names []string, network bool) ([]Fault, error) {
	out := make([]Fault, 0, len(names))
	for _, name := range names {
		f, err := FaultNamed(name)
		if err != nil {
			return nil, err
		}
		if f.NeedsNetwork() && !network {
			return nil, fmt.Errorf("%w: %s", ErrNeedsNetwork, name)
		}
		out = append(out, f)
	}
	return out, nil
}

// expectOf is the expectation of the fault of a report's kind; nothing of
// a kind it does not know.
func expectOf(kind string) Expectation {
	f, err := FaultNamed(kind)
	if err != nil {
		return Expectation{}
	}
	return f.Expect()
}

// killLeader is FaultKillLeader.
type killLeader struct{}

func (killLeader) Name() string        { return FaultKillLeader }
func (killLeader) NeedsNetwork() bool  { return false }
func (killLeader) Expect() Expectation { return Expectation{Resume: true} }

func (f killLeader) Inject(ctx context.Context, env faultEnv) (Injected, error) {
	n, err := env.leader(ctx)
	if err != nil {
		return unmade(env, f.Name(), err)
	}
	return kill(env, f.Name(), n)
}

// killNode is FaultKillNode.
type killNode struct{}

func (killNode) Name() string        { return FaultKillNode }
func (killNode) NeedsNetwork() bool  { return false }
func (killNode) Expect() Expectation { return Expectation{} }

func (f killNode) Inject(_ context.Context, env faultEnv) (Injected, error) {
	nodes := env.nodes()
	return kill(env, f.Name(), nodes[env.intN(len(nodes))])
}

// kill SIGKILLs n; healing restarts it on its data.
func kill(env faultEnv, kind string, n *proccluster.Node) (Injected, error) {
	ev := newFaultEvent(env, kind, []*proccluster.Node{n})
	n.Kill()
	return Injected{Event: ev, Lasts: env.downtime(), heal: n.Start}, nil
}

// pauseNode is FaultPause.
type pauseNode struct{}

func (pauseNode) Name() string        { return FaultPause }
func (pauseNode) NeedsNetwork() bool  { return false }
func (pauseNode) Expect() Expectation { return Expectation{} }

func (f pauseNode) Inject(_ context.Context, env faultEnv) (Injected, error) {
	nodes := env.nodes()
	n := nodes[env.intN(len(nodes))]
	ev := newFaultEvent(env, f.Name(), []*proccluster.Node{n})
	err := n.Pause()
	return Injected{Event: ev, Lasts: env.downtime(), heal: func(context.Context) error { return n.Resume() }}, err
}

// partitionPrimary is FaultPartitionPrimary.
type partitionPrimary struct{}

func (partitionPrimary) Name() string        { return FaultPartitionPrimary }
func (partitionPrimary) NeedsNetwork() bool  { return true }
func (partitionPrimary) Expect() Expectation { return partitionExpects }

func (f partitionPrimary) Inject(_ context.Context, env faultEnv) (Injected, error) {
	return partition(env, f.Name(), proccluster.NodesIn(env.nodes(), env.dcs()[0].Name))
}

// partitionFollower is FaultPartitionFollower.
type partitionFollower struct{}

func (partitionFollower) Name() string        { return FaultPartitionFollower }
func (partitionFollower) NeedsNetwork() bool  { return true }
func (partitionFollower) Expect() Expectation { return partitionExpects }

func (f partitionFollower) Inject(ctx context.Context, env faultEnv) (Injected, error) {
	l, err := env.leader(ctx)
	if err != nil {
		return unmade(env, f.Name(), err)
	}
	others := slices.DeleteFunc(slices.Clone(env.nodes()), func(x *proccluster.Node) bool { return x == l })
	if len(others) == 0 {
		return unmade(env, f.Name(), errNoFollower)
	}
	return partition(env, f.Name(), []*proccluster.Node{others[env.intN(len(others))]})
}

// errNoFollower is a follower partition of a cluster of one node.
var errNoFollower = errors.New("bench: no follower to partition")

// partitionExpects is what a partition leaves working: the majority
// side's clients are answered, and so are the cut side's, with 503s.
var partitionExpects = Expectation{MajorityAnswered: true, CutAnswered: true}

// partition cuts side off from the other nodes; healing joins them again.
// The event names the DCs on the side of the voters' majority and those
// cut off from any leader.
func partition(env faultEnv, kind string, side []*proccluster.Node) (Injected, error) {
	net := env.network()
	if net == nil {
		return unmade(env, kind, fmt.Errorf("%w: %s", ErrNeedsNetwork, kind))
	}
	ev := FaultEvent{Kind: kind}
	ids, dcs := nodeIDs(side)
	nodes, all := env.nodes(), env.dcs()
	ev.Node, ev.DC = strings.Join(ids, ","), strings.Join(dcs, ",")
	ev.MajorityDCs, ev.CutDCs = majorityDCs(nodes, all, ids), cutDCs(nodes, all, ids)
	ev.At = env.seconds()
	err := net.Partition(ids)
	return Injected{Event: ev, Lasts: env.partitionTime(), heal: func(context.Context) error { return net.Heal() }}, err
}

// randomFault is FaultRandom: a fault picked from the seed among those
// the run can make, the partitions only with the emulated network.
type randomFault struct{}

func (randomFault) Name() string       { return FaultRandom }
func (randomFault) NeedsNetwork() bool { return false }

// Expect is nothing: the event of a random fault names the fault picked,
// whose expectation holds.
func (randomFault) Expect() Expectation { return Expectation{} }

func (f randomFault) Inject(ctx context.Context, env faultEnv) (Injected, error) {
	return f.pick(env).Inject(ctx, env)
}

// pick is the fault a random one makes.
func (randomFault) pick(env faultEnv) Fault {
	faults := allFaults
	if env.network() == nil {
		faults = slices.DeleteFunc(slices.Clone(faults), Fault.NeedsNetwork)
	}
	return faults[env.intN(len(faults))]
}

// unmade is the injected value of a fault whose target could not be
// found: nothing to heal.
func unmade(env faultEnv, kind string, err error) (Injected, error) {
	return Injected{Event: FaultEvent{Kind: kind, At: env.seconds()}}, err
}

// newFaultEvent is the event of a fault on nodes made now.
func newFaultEvent(env faultEnv, kind string, nodes []*proccluster.Node) FaultEvent {
	ids, dcs := nodeIDs(nodes)
	return FaultEvent{Kind: kind, Node: strings.Join(ids, ","), DC: strings.Join(dcs, ","), At: env.seconds()}
}

// nodeIDs are the ids of nodes and their DCs, each once.
func nodeIDs(nodes []*proccluster.Node) (ids, dcs []string) {
	for _, n := range nodes {
		ids = append(ids, n.ID)
		if !slices.Contains(dcs, n.DC) {
			dcs = append(dcs, n.DC)
		}
	}
	return ids, dcs
}

// majorityDCs are the DCs whose nodes are all on the side of a partition
// that holds a majority of the voters: the nodes in side, or the others.
func majorityDCs(nodes []*proccluster.Node, dcs []proccluster.DC, side []string) []string {
	return dcsOnSide(nodes, dcs, side, true)
}

// cutDCs are the DCs whose nodes are all on a side of a partition that
// holds no majority of the voters: the nodes in side, or the others.
func cutDCs(nodes []*proccluster.Node, dcs []proccluster.DC, side []string) []string {
	return dcsOnSide(nodes, dcs, side, false)
}

// dcsOnSide lists the DCs wholly on one side of a partition (the nodes in
// side, or the others) whose holding a majority of the voters is majority.
func dcsOnSide(nodes []*proccluster.Node, dcs []proccluster.DC, side []string, majority bool) []string {
	voters, inside := 0, 0
	for _, n := range nodes {
		if n.Voter {
			voters++
			if slices.Contains(side, n.ID) {
				inside++
			}
		}
	}
	var out []string
	for _, d := range dcs {
		in := 0
		of := proccluster.NodesIn(nodes, d.Name)
		for _, n := range of {
			if slices.Contains(side, n.ID) {
				in++
			}
		}
		if (in == len(of) && (2*inside > voters) == majority) || (in == 0 && (2*(voters-inside) > voters) == majority) {
			out = append(out, d.Name)
		}
	}
	return out
}
