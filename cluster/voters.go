package cluster

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenstore/tokenstore/fsm"
)

// What the leader knows of its voters: each one's wall clock as it last
// reported it, and the command types it knows. Log time follows the
// median of the voters' clocks, not the leader's alone, so that one wrong
// clock, the leader's included, can neither run log time ahead (expiring
// every token and letting GC delete them for good) nor hold it back. After
// an outage of the whole cluster the clocks agree, and log time catches up
// at once.

// clockSlack is how far the leader's clock may be from the voters' median
// and still stamp a batch as it reads. Clocks kept by NTP agree far more
// closely; the slack also covers a sample's age error, one RPC's latency.
// Past it, log time is the median plus or minus the slack.
const clockSlack = time.Second

// clampLogEvery is how often, at most, the leader logs a line about
// clamped log time after the first, with the count: a wrong clock clamps
// every batch.
const clampLogEvery = 10 * time.Second

// errClocksUnknown is returned for a batch before a majority of the voters
// has told a new leader their clocks: it does not guess log time. Apply
// retries ErrBusy.
var errClocksUnknown = fmt.Errorf("%w: the leader is still reading the voters' clocks", ErrBusy)

// voterSample is what one voter last reported.
type voterSample struct {
	// clock is the voter's wall clock, unix nanos. 0: a node of the first
	// release, which reports none; it stands in with the leader's clock,
	// as log time was then.
	clock int64
	// received is when the report arrived here. It carries Go's monotonic
	// reading, so the voter's clock is estimated later as clock plus the
	// time since, whatever the leader's own wall clock does meanwhile.
	received time.Time
	types    []fsm.Type
	version  int // fsm.Version; 1 for a node that reports none
}

// estimate is the voter's clock at now as the leader can tell it; own is
// the leader's clock, for a voter that reports none.
func (s voterSample) estimate(now time.Time, own int64) int64 {
	if s.clock == 0 {
		return own
	}
	return s.clock + int64(now.Sub(s.received))
}

func sampleOf(r *statusReply, received time.Time) voterSample {
	s := voterSample{clock: r.Now, received: received, types: make([]fsm.Type, len(r.Types)), version: max(1, int(r.Version))}
	for i, t := range r.Types {
		s.types[i] = fsm.Type(t)
	}
	return s
}

// voterView holds the samples of one term of leadership: each term starts
// with none (reset), and a sampler of an earlier term cannot add to them.
type voterView struct {
	mu      sync.Mutex
	gen     uint64
	samples map[raft.ServerID]voterSample
	clamps  clampLog
}

// reset forgets every sample and returns the generation that put must name.
func (v *voterView) reset() uint64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.gen++
	v.samples = map[raft.ServerID]voterSample{}
	return v.gen
}

func (v *voterView) put(gen uint64, id raft.ServerID, s voterSample) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if gen == v.gen {
		v.samples[id] = s
	}
}

// keep drops the samples of servers that are not among voters.
func (v *voterView) keep(gen uint64, voters []raft.ServerID) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if gen != v.gen {
		return
	}
	for id := range v.samples {
		if !slices.Contains(voters, id) {
			delete(v.samples, id)
		}
	}
}

// reportedLocked counts the voters the leader (self) knows the clock of,
// itself included, and the majority of voters it needs.
func (v *voterView) reportedLocked(self raft.ServerID, voters []raft.ServerID) (have, need int) {
	for _, id := range voters {
		if _, ok := v.samples[id]; ok || id == self {
			have++
		}
	}
	return have, len(voters)/2 + 1
}

func (v *voterView) majority(self raft.ServerID, voters []raft.ServerID) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	have, need := v.reportedLocked(self, voters)
	return have >= need
}

// logTime returns the log time for a batch formed at now (a monotonic
// reading) by the leader self, whose clock reads own: see voterTime. It
// fails with errClocksUnknown while fewer than a majority of voters have
// reported.
func (v *voterView) logTime(self raft.ServerID, voters []raft.ServerID, own int64, now time.Time) (int64, time.Duration, bool, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if have, need := v.reportedLocked(self, voters); have < need {
		return 0, 0, false, fmt.Errorf("%w (%d of %d needed)", errClocksUnknown, have, need)
	}
	clocks := []int64{own}
	for _, id := range voters {
		if s, ok := v.samples[id]; ok && id != self {
			clocks = append(clocks, s.estimate(now, own))
		}
	}
	t, offset, clamped := voterTime(own, clocks)
	return t, offset, clamped, nil
}

// voterTime picks a batch's log time from the leader's clock own and the
// clocks of the voters that reported (own among them): the leader's clock
// while it is within clockSlack of their median (the lower one for an even
// count), else the median plus or minus the slack. It also returns how far
// own is from the median, and whether it clamped.
func voterTime(own int64, clocks []int64) (t int64, offset time.Duration, clamped bool) {
	sorted := slices.Clone(clocks)
	slices.Sort(sorted)
	median := sorted[(len(sorted)-1)/2]
	offset = time.Duration(own - median)
	switch slack := int64(clockSlack); {
	case own > median+slack:
		return median + slack, offset, true
	case own < median-slack:
		return median - slack, offset, true
	}
	return own, offset, false
}

// allKnow tells whether every voter has reported knowing t; the leader
// self knows what this build knows.
func (v *voterView) allKnow(self raft.ServerID, voters []raft.ServerID, t fsm.Type) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, id := range voters {
		if id == self {
			if !slices.Contains(fsm.KnownTypes(), t) {
				return false
			}
			continue
		}
		s, ok := v.samples[id]
		if !ok || !slices.Contains(s.types, t) {
			return false
		}
	}
	return true
}

// minVersion is the lowest fsm.Version among the voters: 1 while one has
// not reported (a down voter replays the log on its return, with whatever
// version it runs then).
func (v *voterView) minVersion(self raft.ServerID, voters []raft.ServerID) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	lowest := fsm.Version
	for _, id := range voters {
		if id == self {
			continue
		}
		s, ok := v.samples[id]
		if !ok {
			return 1
		}
		lowest = min(lowest, s.version)
	}
	return lowest
}

// clampLog rate-limits the lines about clamps.
type clampLog struct {
	last    time.Time // of the last line; zero before the first
	pending int       // clamps since that line
}

// note counts a clamp at now and tells whether to log a line now, and how
// many clamps it reports.
func (c *clampLog) note(now time.Time) (bool, int) {
	c.pending++
	if !c.last.IsZero() && now.Sub(c.last) < clampLogEvery {
		return false, 0
	}
	k := c.pending
	c.last, c.pending = now, 0
	return true, k
}

func (v *voterView) noteClamp(now time.Time) (bool, int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.clamps.note(now)
}

// voterServers returns the voters of the current configuration.
func (n *Node) voterServers() []raft.Server {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return nil
	}
	var vs []raft.Server
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			vs = append(vs, s)
		}
	}
	return vs
}

func serverIDs(servers []raft.Server) []raft.ServerID {
	ids := make([]raft.ServerID, len(servers))
	for i, s := range servers {
		ids[i] = s.ID
	}
	return ids
}

// logNow returns the log time of a new batch: this node's clock while it
// agrees with the voters' median, else that median plus or minus
// clockSlack. Every clamp is counted and logged (rate-limited). It fails
// with an ErrBusy until a majority of the voters has reported.
func (n *Node) logNow() (int64, error) {
	now := time.Now() // for the samples' age: monotonic
	voters := serverIDs(n.voterServers())
	t, offset, clamped, err := n.seen.logTime(raft.ServerID(n.cfg.NodeID), voters, n.cfg.Now().UnixNano(), now)
	if err != nil {
		return 0, err
	}
	if clamped {
		n.metrics.clockClamped.Inc()
		if ok, k := n.seen.noteClamp(now); ok {
			n.log.Warn("log time clamped: this node's clock disagrees with the voters' median",
				"offset", offset, "slack", clockSlack, "clamps", k)
		}
	}
	return t, nil
}

// votersKnow tells whether the leader may propose a command of type t:
// t is of the first release, or every voter of the current configuration
// has reported knowing it. A new leader knows nothing of its voters until
// it has sampled them, so a new type waits for that.
func (n *Node) votersKnow(t fsm.Type) bool {
	if fsm.IsBaseType(t) {
		return true
	}
	return n.seen.allKnow(raft.ServerID(n.cfg.NodeID), serverIDs(n.voterServers()), t)
}

// votersVersion is the fsm.Version every voter runs, as far as the leader
// knows.
func (n *Node) votersVersion() int {
	return n.seen.minVersion(raft.ServerID(n.cfg.NodeID), serverIDs(n.voterServers()))
}

// maybeFence writes the fence of this build's fsm.Version once every voter
// runs it, so that the log may hold its fields from there on; a node of an
// older version that still applies the log halts at the fence instead of
// ignoring them.
func (n *Node) maybeFence(ctx context.Context) {
	if n.fsm.LogVersion() >= fsm.Version || n.votersVersion() < fsm.Version || !n.votersKnow(fsm.TypeFence) {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, _, err := n.Apply(ctx, &fsm.Fence{Version: fsm.Version}); err != nil {
		n.log.Warn("writing the log's version fence", "version", fsm.Version, "err", err)
		return
	}
	n.log.Info("the log now needs state machine version", "version", fsm.Version)
}

// sampleVoters asks every other voter for its status in parallel, each
// call bounded by statusTimeout, records what they report, and drops the
// samples of servers that are no longer voters.
func (n *Node) sampleVoters(ctx context.Context, gen uint64) {
	voters := n.voterServers()
	var wg sync.WaitGroup
	for _, s := range voters {
		if s.ID == raft.ServerID(n.cfg.NodeID) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := n.remoteStatus(ctx, string(s.Address))
			if err != nil {
				n.log.Debug("sampling a voter", "node", s.ID, "err", err)
				return
			}
			if r.ID != string(s.ID) {
				n.log.Debug("sampling a voter: another node answered", "node", s.ID, "answered", r.ID)
				return
			}
			n.seen.put(gen, s.ID, sampleOf(r, time.Now()))
		}()
	}
	wg.Wait()
	n.seen.keep(gen, serverIDs(voters))
}

// waitForVoters samples the voters until a majority of them (this node
// included) has reported. It returns false if ctx ends first.
func (n *Node) waitForVoters(ctx context.Context, gen uint64) bool {
	self := raft.ServerID(n.cfg.NodeID)
	for round := 1; ; round++ {
		n.sampleVoters(ctx, gen)
		if n.seen.majority(self, serverIDs(n.voterServers())) {
			return true
		}
		if round == 3 {
			n.log.Warn("waiting for a majority of the voters to report their clocks")
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// refreshVoters samples the voters every ReconcileInterval while this
// node leads.
func (n *Node) refreshVoters(ctx context.Context, gen uint64) {
	t := time.NewTicker(n.cfg.ReconcileInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n.sampleVoters(ctx, gen)
		n.maybeFence(ctx)
	}
}

// voterClocks exports, on the leader, how far each voter's clock is
// estimated to be from the leader's own: the way to find a wrong clock.
type voterClocks struct{ n *Node }

var voterClockDesc = prometheus.NewDesc("tokenstore_voter_clock_offset_seconds",
	"On the leader: each voter's wall clock as last reported, less the leader's own.",
	[]string{"node"}, nil)

func (c voterClocks) Describe(ch chan<- *prometheus.Desc) { ch <- voterClockDesc }

func (c voterClocks) Collect(ch chan<- prometheus.Metric) {
	if !c.n.IsLeader() {
		return
	}
	now, own := time.Now(), c.n.cfg.Now().UnixNano()
	v := &c.n.seen
	v.mu.Lock()
	defer v.mu.Unlock()
	for id, s := range v.samples {
		off := time.Duration(s.estimate(now, own) - own)
		ch <- prometheus.MustNewConstMetric(voterClockDesc, prometheus.GaugeValue, off.Seconds(), string(id))
	}
}
