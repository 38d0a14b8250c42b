package fsm_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/fsm"
)

// gen generates a reproducible random command stream over a small set of
// kinds, subjects, families and clients, so that commands collide: reused
// hashes and ids, consumes of consumed tokens, revokes of expired ones.
type gen struct {
	r      *rand.Rand
	now    time.Time // leader clock of the last batch (may go backwards)
	stTime time.Time // the state machine's time: the latest batch time so far
	ids    []string  // every id issued or tried, in order
	nextID int
	// grants adds what the model test does not follow: reuse detection on
	// codes and refresh tokens, and rotations with and without grace.
	grants  bool
	refresh []string // refresh token ids issued or rotated to, for rotations to aim at
	// batches adds client batches of issues, consumes, revocations and
	// rotations, and revocations of a family's tokens of one kind.
	batches bool
	// familyOps puts family revocations (for good and of one kind) into
	// the client batches too.
	familyOps bool
	inBatch   bool // making the ops of a batch
}

var (
	genKinds    = []string{"access", "oauth2_code", "oauth2_refresh", "remember", "developer", "oauth1_request"}
	genSubjects = []string{"", "user:1", "user:10", "user:2", "svc"}
	genFamilies = []string{"", "", "fam-1", "fam-10", "fam-2"}
	genClients  = []string{"", "app1", "app2"}
	genTTLs     = []time.Duration{0, time.Minute, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 24 * time.Hour}
	genUses     = []int64{0, 0, 1, 1, 3}
)

func newGen(seed uint64, start time.Time) *gen {
	return &gen{r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), now: start, stTime: start}
}

func pick[T any](g *gen, xs []T) T { return xs[g.r.IntN(len(xs))] }

// advance moves the leader clock for the next batch: mostly forward by up
// to 90s, sometimes a long jump, sometimes backwards (a new leader whose
// clock is behind).
func (g *gen) advance() time.Time {
	switch p := g.r.IntN(100); {
	case p < 5:
		g.now = g.now.Add(-time.Duration(g.r.Int64N(int64(time.Hour))))
	case p < 10:
		g.now = g.now.Add(time.Duration(g.r.Int64N(int64(30 * time.Minute))))
	default:
		g.now = g.now.Add(time.Duration(g.r.Int64N(int64(90 * time.Second))))
	}
	if g.now.After(g.stTime) {
		g.stTime = g.now
	}
	return g.now
}

// someID returns an id that was issued (or tried), or now and then one
// that never was.
func (g *gen) someID() string {
	if len(g.ids) == 0 || g.r.IntN(20) == 0 {
		return fmt.Sprintf("unknown-%d", g.r.IntN(1000))
	}
	// Favour recent ids: they are more likely to be alive.
	n := len(g.ids)
	if g.r.IntN(2) == 0 && n > 40 {
		return g.ids[n-1-g.r.IntN(40)]
	}
	return g.ids[g.r.IntN(n)]
}

// command returns the next command. s is read (DueForGC) to propose
// realistic Expire commands, as the leader does.
func (g *gen) command(s *fsm.Machine) fsm.Command {
	if g.batches && !g.inBatch && g.r.IntN(10) == 0 {
		return g.clientBatch(s)
	}
	if g.grants && g.r.IntN(8) == 0 {
		return g.rotate()
	}
	switch p := g.r.IntN(100); {
	case p < 35:
		id := fmt.Sprintf("id-%06d", g.nextID)
		g.nextID++
		c := &fsm.Issue{
			Record: fsm.Record{
				ID: id, Hash: secretHash(id), Kind: pick(g, genKinds), Subject: pick(g, genSubjects),
				Family: pick(g, genFamilies), ClientID: pick(g, genClients), MaxUses: pick(g, genUses),
				Scopes: []string{"read"}, RLC: "gold", Title: "t-" + id,
			},
			TTL: int64(pick(g, genTTLs)),
		}
		if g.r.IntN(3) == 0 {
			c.Record.Data = []byte(fmt.Sprintf(`{"n":%d}`, g.r.IntN(1000)))
		}
		if g.grants && (c.Record.Kind == "oauth2_code" || c.Record.Kind == "oauth2_refresh") {
			c.Record.DetectReuse = g.r.IntN(4) != 0
		}
		if g.grants && g.r.IntN(4) == 0 {
			// An exchange issuing into the family of a code or refresh
			// token it consumed (a family starts named by its first id).
			c.Record.Family = g.someID()
		}
		switch g.r.IntN(40) {
		case 0: // an id that exists (or existed)
			c.Record.ID = g.someID()
		case 1: // a secret that exists (or existed)
			c.Record.Hash = secretHash(g.someID())
		}
		g.ids = append(g.ids, c.Record.ID)
		if c.Record.Kind == "oauth2_refresh" {
			g.refresh = append(g.refresh, c.Record.ID)
		}
		return c
	case p < 60:
		c := &fsm.Consume{Hash: secretHash(g.someID())}
		if g.grants {
			c.FamilyHold = g.hold()
		}
		if g.r.IntN(8) == 0 {
			c.Kind = pick(g, genKinds)
		}
		if g.r.IntN(8) == 0 {
			c.ClientID = pick(g, genClients)
		}
		return c
	case p < 68:
		return &fsm.Revoke{Hash: secretHash(g.someID()), Reason: "by hash"}
	case p < 75:
		return &fsm.Revoke{ID: g.someID(), Reason: "by id"}
	case p < 80:
		c := &fsm.RevokeSubject{Subject: pick(g, genSubjects), Reason: "logout"}
		if g.r.IntN(2) == 0 {
			c.Kind = pick(g, genKinds)
		}
		return c
	case p < 85:
		if g.batches && g.r.IntN(3) == 0 {
			fam := pick(g, genFamilies)
			if g.r.IntN(2) == 0 {
				fam = g.someID() // a grant's own family
			}
			return &fsm.RevokeFamilyKind{Family: fam, Kind: pick(g, genKinds), Reason: "replaced"}
		}
		c := &fsm.RevokeFamily{Family: pick(g, genFamilies), Reason: "reuse"}
		if g.grants && g.r.IntN(2) == 0 {
			// A grant's own family (named by its first id), held.
			c.Family, c.FamilyHold = g.someID(), g.hold()
		}
		return c
	default:
		// The leader proposes what its index says is due, at a cut-off
		// that may lie before or after the batch's time; a few random
		// (maybe live, maybe unknown) ids ride along.
		before := g.stTime.Add(time.Duration(g.r.Int64N(int64(20*time.Minute))) - 10*time.Minute)
		c := &fsm.Expire{Before: ns(before), IDs: s.DueForGC(ns(before), 1+g.r.IntN(20))}
		for i := g.r.IntN(3); i > 0; i-- {
			c.IDs = append(c.IDs, g.someID())
		}
		return c
	}
}

// clientBatch returns a batch of 1 to 6 client writes. Its ops name recent
// ids, so that they often touch what the ops before them issued.
func (g *gen) clientBatch(s *fsm.Machine) *fsm.ClientBatch {
	g.inBatch = true
	defer func() { g.inBatch = false }()
	var ops []fsm.Command
	for n := 1 + g.r.IntN(6); len(ops) < n; {
		if g.familyOps && g.r.IntN(6) == 0 {
			ops = append(ops, g.revokeGrantAccess(s))
			continue
		}
		switch c := g.command(s).(type) {
		case *fsm.Issue, *fsm.Consume, *fsm.Revoke, *fsm.Rotate:
			ops = append(ops, c)
		case *fsm.RevokeFamily, *fsm.RevokeFamilyKind:
			if g.familyOps {
				ops = append(ops, c)
			}
		}
	}
	c, err := fsm.NewClientBatch(ops...)
	if err != nil {
		panic(err)
	}
	return c
}

// revokeGrantAccess revokes the access tokens of the grant of a recent
// live refresh token, as a server does when it rotates one.
func (g *gen) revokeGrantAccess(s *fsm.Machine) *fsm.RevokeFamilyKind {
	c := &fsm.RevokeFamilyKind{Family: g.someID(), Kind: "access", Reason: "rotated"}
	for i := len(g.refresh) - 1; i >= max(0, len(g.refresh)-10); i-- {
		if r := s.ByID(g.refresh[i]); r != nil && r.State == fsm.Active {
			c.Family = r.Family
			break
		}
	}
	return c
}

// rotate rotates a refresh token, mostly a recent one (which may have been
// rotated already: a retry or a reuse), sometimes any id.
func (g *gen) rotate() *fsm.Rotate {
	from := g.someID()
	if n := len(g.refresh); n > 0 && g.r.IntN(5) != 0 {
		from = g.refresh[n-1-g.r.IntN(min(n, 10))]
	}
	id := fmt.Sprintf("id-%06d", g.nextID)
	g.nextID++
	c := &fsm.Rotate{Hash: secretHash(from), Kind: "oauth2_refresh", TTL: int64(pick(g, genTTLs)),
		Next: fsm.Record{ID: id, Hash: secretHash(id), IP: "192.0.2.7"}}
	g.ids = append(g.ids, id)
	g.refresh = append(g.refresh, id)
	c.FamilyHold = g.hold()
	if g.r.IntN(2) == 0 {
		c.Access = &fsm.Issue{TTL: int64(time.Hour), Record: fsm.Record{ID: id + "-at", Hash: secretHash(id + "-at"), Kind: "access"}}
		g.ids = append(g.ids, id+"-at")
	}
	if g.r.IntN(3) == 0 {
		c.Grace, c.Sealed = int64(time.Duration(g.r.IntN(5))*time.Minute), []byte(id)
	}
	if g.r.IntN(10) == 0 {
		c.ClientID = pick(g, genClients)
	}
	return c
}

// hold is how long a revoked family is remembered: short, since the run
// shares a few family names among many grants, or none (an entry older
// than remembered families).
func (g *gen) hold() int64 {
	return int64(pick(g, []time.Duration{0, 0, 0, 5 * time.Minute, 20 * time.Minute}))
}

// checkFamiliesStayRevoked fails if any token of a family the state
// remembers as revoked can be used at now: once reuse is detected (or the
// family revoked), nothing of it is usable, whatever the interleaving.
func checkFamiliesStayRevoked(t *testing.T, s *fsm.Machine, ids []string, now int64) int {
	t.Helper()
	revoked := 0
	for _, id := range ids {
		r := s.ByID(id)
		if r == nil || r.Family == "" {
			continue
		}
		f := s.RevokedFamily(r.Family, now)
		if f == nil {
			continue
		}
		revoked++
		if r.Status(now) == fsm.StatusActive {
			t.Fatalf("token %+v is usable at %d, but its family %q was revoked at %d (%s)", r, now, r.Family, f.At, f.Reason)
		}
	}
	return revoked
}

// outcome names a result for the coverage check of a random run.
func outcome(c fsm.Command, res fsm.Result) string {
	name := fmt.Sprintf("%T", c)[len("*fsm."):]
	switch {
	case res.Ops != nil:
		return fmt.Sprintf("%s: ok", name)
	case res.Err != nil && name == "ClientBatch" && res.Op > 0:
		return name + ": failed at a later op: " + res.Err.Error()
	case res.Err != nil:
		return name + ": " + res.Err.Error()
	case res.Count > 0:
		return name + ": count>0"
	case res.Record != nil:
		return name + ": ok"
	}
	return name + ": nothing"
}

// requireOutcomes fails if a random run never reached one of the outcomes
// a run of that length must reach: otherwise it would prove little.
func requireOutcomes(t *testing.T, seen map[string]int, more ...string) {
	t.Helper()
	for _, o := range append(more,
		"Issue: ok", "Issue: token exists",
		"Consume: ok", "Consume: token not found", "Consume: token consumed", "Consume: token expired",
		"Consume: token revoked", "Consume: token kind mismatch", "Consume: token client mismatch",
		"Revoke: ok", "Revoke: token not found",
		"RevokeSubject: count>0", "RevokeSubject: nothing", "RevokeFamily: count>0", "RevokeFamily: nothing",
		"Expire: count>0", "Expire: nothing",
	) {
		if seen[o] == 0 {
			t.Errorf("the random run never produced %q; outcomes: %v", o, seen)
		}
	}
}

// TestReplayIsDeterministic feeds two stores the same ~2000 random commands
// in batches of 1 to 16 and requires identical results and identical final
// state. A third store joins halfway from a snapshot of the first, as a
// follower that installs a snapshot does, and must end identical too. The
// second store's subjects and families nearly all share a hash.
func TestReplayIsDeterministic(t *testing.T) {
	for _, start := range []time.Time{t0, time.Date(2250, 6, 1, 0, 0, 0, 0, time.UTC)} {
		t.Run(start.Format("2006"), func(t *testing.T) {
			g := newGen(1, start)
			g.grants, g.batches = true, true
			a, b := newHarness(t), &harness{t: t, s: fsm.NewColliding()}
			var c *harness
			seen := map[string]int{}
			for total, batches := 0, 0; total < 2000; batches++ {
				now := g.advance()
				cmds := make([]fsm.Command, 1+g.r.IntN(16))
				for i := range cmds {
					cmds[i] = g.command(a.s)
				}
				total += len(cmds)
				entry := batchEntry(t, now, cmds...)

				ra := a.applyRaw(entry, len(cmds))
				rb := b.applyRaw(entry, len(cmds))
				for i := range cmds {
					seen[outcome(cmds[i], ra[i])]++
					if !reflect.DeepEqual(ra[i], rb[i]) {
						t.Fatalf("batch %d entry %d %T %+v: store A answered %+v (record %+v), store B %+v (record %+v)",
							batches, i, cmds[i], cmds[i], ra[i], ra[i].Record, rb[i], rb[i].Record)
					}
				}
				switch {
				case c == nil && total >= 1000:
					c = &harness{t: t, s: restored(t, a.snapshot()), index: a.index}
				case c != nil:
					rc := c.applyRaw(entry, len(cmds))
					for i := range cmds {
						if !reflect.DeepEqual(ra[i], rc[i]) {
							t.Fatalf("batch %d entry %d %T %+v: store A answered %+v, restored store C %+v",
								batches, i, cmds[i], cmds[i], ra[i], rc[i])
						}
					}
				}
				if checkFamiliesStayRevoked(t, a.s, g.ids, ns(g.stTime)) > 0 {
					seen["a token of a revoked family"]++
				}
				if batches%25 == 0 {
					checkConsistent(t, a.s, g.ids, ns(g.stTime))
					for _, id := range g.ids {
						if r := a.s.ByID(id); r != nil && r.HoldUntil != 0 {
							seen["a tombstone held for its family"]++
						}
					}
				}
			}
			requireOutcomes(t, seen, "a tombstone held for its family", "Rotate: ok", "Rotate: token reused", "Rotate: token not found", "Consume: token reused",
				"Issue: family revoked", "a token of a revoked family", "ClientBatch: ok", "ClientBatch: token reused",
				"ClientBatch: failed at a later op: token not found", "RevokeFamilyKind: count>0")

			sa, sb, sc := a.snapshot(), b.snapshot(), c.snapshot()
			if !bytes.Equal(sa, sb) {
				t.Fatalf("snapshots differ: store A %d bytes, store B %d bytes", len(sa), len(sb))
			}
			if !bytes.Equal(sa, sc) {
				t.Fatalf("snapshots differ: store A %d bytes, store C (restored halfway) %d bytes", len(sa), len(sc))
			}
			countsEqual(t, "store B vs A", b.s.Counts(), a.s.Counts())
			countsEqual(t, "store C vs A", c.s.Counts(), a.s.Counts())
			if len(a.s.Counts()) == 0 {
				t.Fatalf("the run ended with an empty store; want some records left to compare")
			}
			for _, h := range []*harness{a, b, c} {
				checkConsistent(t, h.s, g.ids, ns(g.stTime))
			}
		})
	}
}

// TestRandomCommandsMatchModel applies ~2000 random commands one per batch
// and checks each result and its effect against what the command means,
// computed from the state before it through the read API; once as it runs,
// once with nearly every two subjects and families sharing a hash.
func TestRandomCommandsMatchModel(t *testing.T) {
	for _, colliding := range []bool{false, true} {
		t.Run(fmt.Sprintf("colliding=%v", colliding), func(t *testing.T) {
			h := newHarness(t)
			if colliding {
				h.s = fsm.NewColliding()
			}
			randomCommandsMatchModel(t, h)
		})
	}
}

func randomCommandsMatchModel(t *testing.T, h *harness) {
	g := newGen(7, t0)
	g.batches = true
	seen := map[string]int{}
	for i := 0; i < 2000; i++ {
		now := g.advance()
		cmd := g.command(h.s)
		stNow := ns(g.stTime)
		before := liveRecords(h.s, g.ids)
		if cb, ok := cmd.(*fsm.ClientBatch); ok {
			snap := h.snapshot()
			res := h.do(now, cmd)
			seen[outcome(cmd, res)]++
			checkBatchModel(t, h, cb, res, snap, now)
			continue
		}
		res := h.do(now, cmd)
		seen[outcome(cmd, res)]++
		changed := checkModel(t, h.s, cmd, res, before, stNow, h.index)
		after := liveRecords(h.s, g.ids)
		for id, r := range before {
			if !changed[id] && !reflect.DeepEqual(after[id], r) {
				t.Fatalf("command %d %T %+v changed record %q, which it should not touch: %+v -> %+v", i, cmd, cmd, id, r, after[id])
			}
		}
		if i%100 == 0 {
			checkConsistent(t, h.s, g.ids, stNow)
		}
	}
	requireOutcomes(t, seen, "ClientBatch: ok", "ClientBatch: failed at a later op: token not found",
		"ClientBatch: failed at a later op: token exists", "RevokeFamilyKind: count>0", "RevokeFamilyKind: nothing")
	checkConsistent(t, h.s, g.ids, ns(g.stTime))
}

// TestRandomBatchesMatchTheirOps applies random commands, grants and
// client batches among them, and checks every batch against its ops one
// after the other (checkBatchModel), reuse detection included.
func TestRandomBatchesMatchTheirOps(t *testing.T) {
	for _, tc := range []struct {
		seed      uint64
		familyOps bool
	}{{11, false}, {12, false}, {13, true}, {14, true}} {
		t.Run(fmt.Sprint(tc.seed), func(t *testing.T) {
			g := newGen(tc.seed, t0)
			g.grants, g.batches, g.familyOps = true, true, tc.familyOps
			h := newHarness(t)
			seen := map[string]int{}
			for range 4000 {
				now := g.advance()
				cmd := g.command(h.s)
				cb, ok := cmd.(*fsm.ClientBatch)
				if !ok {
					h.do(now, cmd)
					continue
				}
				snap := h.snapshot()
				res := h.do(now, cb)
				seen[outcome(cmd, res)]++
				if tc.familyOps {
					seen[familyOutcome(t, cb, res)]++
				}
				checkBatchModel(t, h, cb, res, snap, now)
			}
			want := []string{"ClientBatch: ok", "ClientBatch: token reused", "ClientBatch: failed at a later op: token reused",
				"ClientBatch: failed at a later op: token not found", "ClientBatch: failed at a later op: family revoked"}
			if tc.familyOps {
				want = []string{"ClientBatch: ok", "ClientBatch: failed at a later op: token reused",
					"ClientBatch: failed at a later op: family revoked",
					"family op applied: RevokeFamily", "family op applied: RevokeFamilyKind",
					"family op undone: RevokeFamily", "family op undone: RevokeFamilyKind"}
			}
			for _, o := range want {
				if seen[o] == 0 {
					t.Errorf("the random run never produced %q; outcomes: %v", o, seen)
				}
			}
		})
	}
}

// familyOutcome names what became of the family revocations of a batch
// that revoked something: applied, or undone by a later op's failure.
func familyOutcome(t *testing.T, cb *fsm.ClientBatch, res fsm.Result) string {
	ops, err := cb.DecodeOps()
	if err != nil {
		t.Fatal(err)
	}
	for i, op := range ops {
		switch op.(type) {
		case *fsm.RevokeFamily, *fsm.RevokeFamilyKind:
		default:
			continue
		}
		name := fmt.Sprintf("%T", op)[len("*fsm."):]
		switch {
		case res.Err == nil && res.Ops[i].Count > 0:
			return "family op applied: " + name
		case res.Err != nil && res.Op > i:
			return "family op undone: " + name
		}
	}
	return ""
}

// checkBatchModel checks a client batch's result and effect against its
// ops applied one after the other (as a coalescing batch of them, at the
// same time and index) on a copy of the state before it, snap: when every
// op succeeds there, the batch answers the same results and leaves the
// same state; else it answers the first failure, naming its op, and
// leaves the state before, but for the family revocation of a reuse the
// failing op detected, as that revocation alone would.
func checkBatchModel(t *testing.T, h *harness, cb *fsm.ClientBatch, res fsm.Result, snap []byte, now time.Time) {
	t.Helper()
	ops, err := cb.DecodeOps()
	if err != nil {
		t.Fatal(err)
	}
	seq := &harness{t: t, s: restored(t, snap), index: h.index - 1}
	rs := seq.applyRaw(encode(t, &fsm.Batch{Now: ns(now), Entries: cb.Ops}), len(cb.Ops))
	failed := -1
	for i, r := range rs {
		if r.Err != nil {
			failed = i
			break
		}
	}
	if failed < 0 {
		if res.Err != nil || !reflect.DeepEqual(res.Ops, rs) {
			t.Fatalf("batch %+v answered %+v (op %d), want the results of its ops one after the other %+v", ops, res, res.Op, rs)
		}
		if !bytes.Equal(h.snapshot(), seq.snapshot()) {
			t.Fatalf("batch %+v left another state than its ops one after the other", ops)
		}
		return
	}
	want := &harness{t: t, s: restored(t, snap), index: h.index - 1}
	if rs[failed].Err == fsm.ErrReused {
		r := rs[failed].Record
		var hold int64
		switch op := ops[failed].(type) {
		case *fsm.Consume:
			hold = op.FamilyHold
		case *fsm.Rotate:
			hold = op.FamilyHold
		}
		alone := want.do(now, &fsm.RevokeFamily{Family: r.Family, Reason: fmt.Sprintf("reuse of consumed %s %s detected", r.Kind, r.ID), FamilyHold: hold})
		if res.Err != fsm.ErrReused || res.Op != failed || res.Count != alone.Count || !reflect.DeepEqual(res.Record, want.s.ByID(r.ID)) {
			t.Fatalf("batch %+v answered %+v (op %d), want op %d's reuse, %d revoked, the token %+v", ops, res, res.Op, failed, alone.Count, want.s.ByID(r.ID))
		}
	} else {
		want.applyRaw(encode(t, &fsm.Batch{Now: ns(now), Entries: [][]byte{}}), 0)
		got := res
		got.Op = 0
		if res.Op != failed || !reflect.DeepEqual(got, rs[failed]) {
			t.Fatalf("batch %+v answered %+v (op %d), want op %d's %+v", ops, res, res.Op, failed, rs[failed])
		}
	}
	if !bytes.Equal(h.snapshot(), want.snapshot()) {
		t.Fatalf("batch %+v failing at op %d (%v) left another state than the state before it", ops, failed, rs[failed].Err)
	}
}

// liveRecords returns the stored records among ids, by id.
func liveRecords(s *fsm.Machine, ids []string) map[string]*fsm.Record {
	out := map[string]*fsm.Record{}
	for _, id := range ids {
		if r := s.ByID(id); r != nil {
			out[id] = r
		}
	}
	return out
}

// checkModel checks res and the state after cmd against the state before
// (live) and returns the ids cmd may have changed.
func checkModel(t *testing.T, s *fsm.Machine, cmd fsm.Command, res fsm.Result, live map[string]*fsm.Record, now int64, index uint64) map[string]bool {
	t.Helper()
	changed := map[string]bool{}
	byHash := map[string]*fsm.Record{}
	for _, r := range live {
		byHash[r.Hash] = r
	}
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("%T %+v at %d: %s", cmd, cmd, now, fmt.Sprintf(format, args...))
	}
	// A consumed token keeps its data in the tombstone; a revoked one none.
	wantTombstone := func(got *fsm.Record, state fsm.State, reason string, data []byte) {
		t.Helper()
		if got == nil || got.State != state || got.InvalidatedAt != now || got.Reason != reason ||
			!bytes.Equal(got.Data, data) || got.UsesLeft != 0 || got.ModifyIndex != index {
			fail("tombstone %+v, want state %d, invalidated at %d, reason %q, data %q, index %d", got, state, now, reason, data, index)
		}
	}
	switch c := cmd.(type) {
	case *fsm.Issue:
		if byHash[c.Record.Hash] != nil || live[c.Record.ID] != nil {
			if res.Err != fsm.ErrExists || res.Record != nil {
				fail("got %+v, want ErrExists: hash or id taken", res)
			}
			return changed
		}
		changed[c.Record.ID] = true
		want := c.Record
		want.CreatedAt, want.UsesLeft, want.CreateIndex, want.ModifyIndex = now, c.Record.MaxUses, index, index
		if c.TTL > 0 {
			want.ExpiresAt = now + c.TTL
		}
		if res.Err != nil || !reflect.DeepEqual(res.Record, &want) {
			fail("got %+v (record %+v), want record %+v", res, res.Record, &want)
		}
		if got := s.ByHash(c.Record.Hash); !reflect.DeepEqual(got, res.Record) {
			fail("ByHash after issue = %+v, want the issued record", got)
		}
	case *fsm.Consume:
		r := byHash[c.Hash]
		switch {
		case r == nil:
			if res.Err != fsm.ErrNotFound || res.Record != nil {
				fail("got %+v, want ErrNotFound", res)
			}
		case fsm.StatusErr(r.Status(now)) != nil:
			if want := fsm.StatusErr(r.Status(now)); res.Err != want || !reflect.DeepEqual(res.Record, r) {
				fail("got %+v, want %v with the stored record %+v", res, want, r)
			}
		case c.Kind != "" && c.Kind != r.Kind:
			if res.Err != fsm.ErrKindMismatch || res.Record != nil {
				fail("got %+v, want ErrKindMismatch", res)
			}
		case c.ClientID != "" && c.ClientID != r.ClientID:
			if res.Err != fsm.ErrClientMismatch || res.Record != nil {
				fail("got %+v, want ErrClientMismatch", res)
			}
		default:
			changed[r.ID] = true
			want := *r
			want.LastUsedAt, want.ModifyIndex = now, index
			if r.MaxUses > 0 {
				want.UsesLeft--
			}
			if r.MaxUses > 0 && want.UsesLeft <= 0 {
				// The last use answers the record consumed, data and all.
				want.State, want.InvalidatedAt, want.Reason = fsm.Consumed, now, "consumed"
			}
			if res.Err != nil || !reflect.DeepEqual(res.Record, &want) {
				fail("got %+v (record %+v), want record %+v", res, res.Record, &want)
			}
			after := s.ByHash(c.Hash)
			if r.MaxUses > 0 && want.UsesLeft <= 0 {
				wantTombstone(after, fsm.Consumed, "consumed", r.Data)
			} else if !reflect.DeepEqual(after, &want) {
				fail("stored after consume %+v, want %+v", after, &want)
			}
		}
	case *fsm.Revoke:
		r := byHash[c.Hash]
		if r == nil {
			r = live[c.ID]
		}
		switch {
		case r == nil:
			if res.Err != fsm.ErrNotFound || res.Record != nil {
				fail("got %+v, want ErrNotFound", res)
			}
		case r.State != fsm.Active:
			if res.Err != nil || !reflect.DeepEqual(res.Record, r) {
				fail("got %+v, want the existing tombstone %+v and no error", res, r)
			}
		default:
			changed[r.ID] = true
			if res.Err != nil {
				fail("unexpected error %v", res.Err)
			}
			wantTombstone(res.Record, fsm.Revoked, c.Reason, nil)
			if got := s.ByID(r.ID); !reflect.DeepEqual(got, res.Record) {
				fail("ByID after revoke = %+v, want the tombstone", got)
			}
		}
	case *fsm.RevokeSubject, *fsm.RevokeFamily, *fsm.RevokeFamilyKind:
		n := 0
		for id, r := range live {
			var match bool
			var reason string
			switch c := c.(type) {
			case *fsm.RevokeSubject:
				match, reason = r.Subject == c.Subject && (c.Kind == "" || r.Kind == c.Kind), c.Reason
			case *fsm.RevokeFamily:
				match, reason = r.Family == c.Family, c.Reason
			case *fsm.RevokeFamilyKind:
				match, reason = r.Family == c.Family && r.Kind == c.Kind, c.Reason
			}
			// A record without a subject (family) is never one of the
			// subject (family) "".
			if !match || r.Status(now) != fsm.StatusActive || (r.Subject == "" && isSubject(c)) || (r.Family == "" && !isSubject(c)) {
				continue
			}
			n++
			changed[id] = true
			wantTombstone(s.ByID(id), fsm.Revoked, reason, nil)
		}
		if res.Err != nil || res.Count != n {
			fail("got %+v, want count %d", res, n)
		}
	case *fsm.Expire:
		n := 0
		cut := min(c.Before, now)
		for _, id := range c.IDs {
			r := live[id]
			if r == nil || changed[id] || r.GCAt() == 0 || r.GCAt() > cut {
				continue
			}
			n++
			changed[id] = true
			if s.ByID(id) != nil || s.ByHash(r.Hash) != nil {
				fail("record %q (GC at %d, cut-off %d) still stored after Expire", id, r.GCAt(), cut)
			}
		}
		if res.Err != nil || res.Count != n {
			fail("got %+v, want count %d", res, n)
		}
	default:
		fail("unexpected command type")
	}
	return changed
}

func isSubject(c fsm.Command) bool { _, ok := c.(*fsm.RevokeSubject); return ok }
