package membership

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// fastGossip shortens memberlist's timings so failures are detected in a
// few seconds on loopback instead of tens of seconds, with enough slack in
// the probe timeout that a loaded machine running -race does not see
// healthy nodes fail.
func fastGossip(c *memberlist.Config) {
	c.ProbeInterval = 400 * time.Millisecond
	c.ProbeTimeout = 200 * time.Millisecond
	c.SuspicionMult = 4
	c.GossipInterval = 50 * time.Millisecond
	c.PushPullInterval = 2 * time.Second
	c.TCPTimeout = 2 * time.Second
}

// settle bounds every wait: a healthy run converges in a second or two,
// the rest is slack for loaded machines.
const settle = 20 * time.Second

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		h := slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})
		return slog.New(h).With("test", t.Name())
	}
	return slog.New(slog.DiscardHandler)
}

func testMeta(id, dc string) Meta {
	return Meta{
		ID:       id,
		DC:       dc,
		RaftAddr: id + ".raft:8300",
		APIAddr:  id + ".api:8080",
		Voter:    dc == "a",
		Expect:   3,
	}
}

type nodeOpts struct {
	keys     [][]byte
	onChange func()
}

func startMember(t *testing.T, id, dc string, o nodeOpts) *Membership {
	t.Helper()
	m, err := Start(Config{
		Meta:         testMeta(id, dc),
		WANBind:      "127.0.0.1:0",
		LANBind:      "127.0.0.1:0",
		Keyring:      o.keys,
		Logger:       testLogger(t),
		OnChange:     o.onChange,
		tune:         fastGossip,
		lanJoinEvery: 300 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("start %s: %v", id, err)
	}
	t.Cleanup(func() { m.Shutdown() })
	return m
}

func mustJoin(t *testing.T, m *Membership, via *Membership) {
	t.Helper()
	if n, err := m.Join([]string{via.WANAddr()}); err != nil || n != 1 {
		t.Fatalf("join %s via %s: reached %d, err %v", m.cfg.Meta.ID, via.cfg.Meta.ID, n, err)
	}
}

// waitFor polls check until it returns nil, failing the test with check's
// last complaint at the deadline.
func waitFor(t *testing.T, what string, timeout time.Duration, check func() error) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		err := check()
		if err == nil {
			return
		}
		select {
		case <-deadline.C:
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		case <-tick.C:
		}
	}
}

// seesAlive checks that obs lists exactly want, all alive, with the
// metadata each of them announces.
func seesAlive(obs *Membership, want ...*Membership) error {
	got := obs.Members()
	if len(got) != len(want) {
		ids := make([]string, len(got))
		for i, s := range got {
			ids[i] = s.ID
		}
		return fmt.Errorf("%s sees %d members %v, want %d", obs.cfg.Meta.ID, len(got), ids, len(want))
	}
	for _, w := range want {
		s, ok := obs.Member(w.cfg.Meta.ID)
		if !ok || !s.Alive {
			return fmt.Errorf("%s sees %s: known %v, alive %v", obs.cfg.Meta.ID, w.cfg.Meta.ID, ok, s.Alive)
		}
		if wm := w.currentMeta(); s.Meta != wm {
			return fmt.Errorf("%s sees %s with meta %+v, want %+v", obs.cfg.Meta.ID, w.cfg.Meta.ID, s.Meta, wm)
		}
	}
	return nil
}

// currentMeta decodes what m announces, for comparison with others' views.
func (m *Membership) currentMeta() Meta {
	m.metaMu.Lock()
	defer m.metaMu.Unlock()
	meta, err := decodeMeta(m.metaBuf)
	if err != nil {
		panic(err)
	}
	return meta
}

func poolNames(l *memberlist.Memberlist) []string {
	var names []string
	for _, n := range l.Members() {
		names = append(names, n.Name)
	}
	slices.Sort(names)
	return names
}

func TestMembershipTwoDCs(t *testing.T) {
	a1 := startMember(t, "a1", "a", nodeOpts{})
	a2 := startMember(t, "a2", "a", nodeOpts{})
	a3 := startMember(t, "a3", "a", nodeOpts{})
	b1 := startMember(t, "b1", "b", nodeOpts{})
	b2 := startMember(t, "b2", "b", nodeOpts{})
	all := []*Membership{a1, a2, a3, b1, b2}
	// Each node knows one WAN address only, and b1 learns of DC a through a3.
	mustJoin(t, a2, a1)
	mustJoin(t, a3, a2)
	mustJoin(t, b1, a3)
	mustJoin(t, b2, b1)

	if got := a1.LANAddr(); got != a1.currentMeta().LANAddr {
		t.Fatalf("a1 announces lan %q, LANAddr() = %q", a1.currentMeta().LANAddr, got)
	}
	waitFor(t, "every node sees all five", settle, func() error {
		for _, m := range all {
			if err := seesAlive(m, all...); err != nil {
				return err
			}
		}
		return nil
	})
	pools := map[*Membership][]string{
		a1: {"a1", "a2", "a3"}, a2: {"a1", "a2", "a3"}, a3: {"a1", "a2", "a3"},
		b1: {"b1", "b2"}, b2: {"b1", "b2"},
	}
	waitFor(t, "lan pools hold their own dc only, wan pools all", settle, func() error {
		for m, want := range pools {
			if got := poolNames(m.lan); !slices.Equal(got, want) {
				return fmt.Errorf("%s lan pool holds %v, want %v", m.cfg.Meta.ID, got, want)
			}
			if n := m.wan.NumMembers(); n != 5 {
				return fmt.Errorf("%s wan pool holds %d, want 5", m.cfg.Meta.ID, n)
			}
		}
		return nil
	})

	// Metadata updates travel through the LAN pool inside a DC and the
	// WAN pool across DCs.
	for _, m := range []*Membership{a1, b2} {
		meta := m.currentMeta()
		meta.HasState = true
		meta.APIAddr = m.cfg.Meta.ID + ".api:9090"
		if err := m.UpdateMeta(meta); err != nil {
			t.Fatalf("update meta of %s: %v", m.cfg.Meta.ID, err)
		}
	}
	waitFor(t, "every node sees the updated metadata", settle, func() error {
		for _, m := range all {
			for _, id := range []string{"a1", "b2"} {
				s, _ := m.Member(id)
				if !s.HasState || s.APIAddr != id+".api:9090" {
					return fmt.Errorf("%s sees %s as %+v, want HasState and api %s.api:9090", m.cfg.Meta.ID, id, s.Meta, id)
				}
			}
		}
		return nil
	})

	bad := a1.currentMeta()
	bad.DC = "b"
	if err := a1.UpdateMeta(bad); err == nil {
		t.Fatal("UpdateMeta moving a1 to dc b: want an error, got nil")
	}
}

func TestMembershipLANRefusesOtherDC(t *testing.T) {
	a1 := startMember(t, "a1", "a", nodeOpts{})
	b1 := startMember(t, "b1", "b", nodeOpts{})
	// Joining another DC's LAN pool directly, as a misconfigured node would.
	if n, err := b1.lan.Join([]string{a1.LANAddr()}); err == nil {
		t.Fatalf("b1 joined a1's lan pool (reached %d), want refusal", n)
	}
	// A LAN address given as a WAN join address must not merge the pools.
	if n, err := b1.Join([]string{a1.LANAddr()}); err == nil {
		t.Fatalf("b1 joined the wan pool through a1's lan address (reached %d), want refusal", n)
	}
	for _, m := range []*Membership{a1, b1} {
		if got := poolNames(m.lan); len(got) != 1 {
			t.Errorf("%s lan pool holds %v, want itself only", m.cfg.Meta.ID, got)
		}
		if got := m.Members(); len(got) != 1 {
			t.Errorf("%s sees %d members, want itself only", m.cfg.Meta.ID, len(got))
		}
	}
}

func TestMembershipFailureAndLeave(t *testing.T) {
	a1 := startMember(t, "a1", "a", nodeOpts{})
	a2 := startMember(t, "a2", "a", nodeOpts{})
	a3 := startMember(t, "a3", "a", nodeOpts{})
	b1 := startMember(t, "b1", "b", nodeOpts{})
	all := []*Membership{a1, a2, a3, b1}
	mustJoin(t, a2, a1)
	mustJoin(t, a3, a1)
	mustJoin(t, b1, a2)
	waitFor(t, "every node sees all four", settle, func() error {
		for _, m := range all {
			if err := seesAlive(m, all...); err != nil {
				return err
			}
		}
		// a3 must be in a1's LAN pool, or a1 would judge it by the slower WAN pool.
		if n := a1.lan.NumMembers(); n != 3 {
			return fmt.Errorf("a1 lan pool holds %d, want 3", n)
		}
		return nil
	})

	aliveSince, _ := a1.Member("a3")
	// Crash: no leave message, the others must detect it.
	if err := a3.Shutdown(); err != nil {
		t.Fatalf("shut down a3: %v", err)
	}
	if err := a3.Shutdown(); err != nil {
		t.Fatalf("second shutdown of a3: %v", err)
	}
	waitFor(t, "a3 seen failed", settle, func() error {
		for _, m := range []*Membership{a1, a2, b1} {
			s, ok := m.Member("a3")
			if !ok || s.Alive {
				return fmt.Errorf("%s sees a3: known %v, alive %v", m.cfg.Meta.ID, ok, s.Alive)
			}
			if !s.Since.After(aliveSince.Since) {
				return fmt.Errorf("%s sees a3 dead since %v, not after it was alive since %v", m.cfg.Meta.ID, s.Since, aliveSince.Since)
			}
		}
		return nil
	})

	if err := a2.Leave(5 * time.Second); err != nil {
		t.Fatalf("a2 leave: %v", err)
	}
	// a2 still runs and would answer probes: only its leave message can
	// make the others drop it.
	waitFor(t, "a2 seen gone after leaving", settle, func() error {
		for _, m := range []*Membership{a1, a2, b1} {
			if s, ok := m.Member("a2"); !ok || s.Alive {
				return fmt.Errorf("%s sees a2: known %v, alive %v", m.cfg.Meta.ID, ok, s.Alive)
			}
		}
		return nil
	})
	if err := a2.UpdateMeta(a2.currentMeta()); err == nil {
		t.Error("update meta after leave: want an error, got nil")
	}
	if err := a2.Shutdown(); err != nil {
		t.Fatalf("shut down a2: %v", err)
	}
	if _, err := a2.Join([]string{a1.WANAddr()}); err == nil {
		t.Error("join after shutdown: want an error, got nil")
	}
	if err := a2.Leave(time.Second); err == nil {
		t.Error("leave after shutdown: want an error, got nil")
	}
	if !a1.Forget("a3") {
		t.Error("a1 could not forget failed a3")
	}
	if a1.Forget("b1") {
		t.Error("a1 forgot b1, which is alive")
	}
	if _, ok := a1.Member("a3"); ok {
		t.Error("a1 still lists a3 after forgetting it")
	}
}

func TestMembershipEncryption(t *testing.T) {
	key := func(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }
	k1, k2 := key(1, 16), key(2, 32)
	kOld, kNew := key(3, 24), key(4, 32)

	t.Run("same key joins, wrong key cannot", func(t *testing.T) {
		s1 := startMember(t, "s1", "a", nodeOpts{keys: [][]byte{k1}})
		s2 := startMember(t, "s2", "a", nodeOpts{keys: [][]byte{k1}})
		mustJoin(t, s2, s1)
		waitFor(t, "s1 and s2 see each other", settle, func() error {
			for _, m := range []*Membership{s1, s2} {
				if err := seesAlive(m, s1, s2); err != nil {
					return err
				}
				if n := m.lan.NumMembers(); n != 2 {
					return fmt.Errorf("%s lan pool holds %d, want 2", m.cfg.Meta.ID, n)
				}
			}
			return nil
		})
		wrong := startMember(t, "wrong", "a", nodeOpts{keys: [][]byte{k2}})
		if n, err := wrong.Join([]string{s1.WANAddr()}); err == nil {
			t.Fatalf("node with another key joined (reached %d), want an error", n)
		}
		plain := startMember(t, "plain", "a", nodeOpts{})
		if n, err := plain.Join([]string{s1.WANAddr()}); err == nil {
			t.Fatalf("node without a key joined (reached %d), want an error", n)
		}
		// A third good node converging shows gossip went on; the others
		// must not have slipped in meanwhile.
		s3 := startMember(t, "s3", "a", nodeOpts{keys: [][]byte{k1}})
		mustJoin(t, s3, s2)
		waitFor(t, "s1 sees s3 and no intruder", settle, func() error {
			return seesAlive(s1, s1, s2, s3)
		})
	})

	t.Run("rotation", func(t *testing.T) {
		// Mid-rotation every node holds both keys, some still encrypting
		// with the old one, some already with the new.
		r1 := startMember(t, "r1", "a", nodeOpts{keys: [][]byte{kOld, kNew}})
		r2 := startMember(t, "r2", "a", nodeOpts{keys: [][]byte{kNew, kOld}})
		mustJoin(t, r2, r1)
		waitFor(t, "old-primary and new-primary nodes see each other", settle, func() error {
			for _, m := range []*Membership{r1, r2} {
				if err := seesAlive(m, r1, r2); err != nil {
					return err
				}
				if n := m.lan.NumMembers(); n != 2 {
					return fmt.Errorf("%s lan pool holds %d, want 2", m.cfg.Meta.ID, n)
				}
			}
			return nil
		})
		// The old key may leave a ring only once no node encrypts with it.
		r3 := startMember(t, "r3", "a", nodeOpts{keys: [][]byte{kOld, kNew}})
		early := startMember(t, "early", "a", nodeOpts{keys: [][]byte{kNew}})
		if n, err := early.Join([]string{r3.WANAddr()}); err == nil {
			t.Fatalf("node without the old key joined one encrypting with it (reached %d), want an error", n)
		}
	})

	t.Run("bad keys refused", func(t *testing.T) {
		for _, keys := range [][][]byte{{key(1, 15)}, {k1, key(1, 33)}} {
			_, err := Start(Config{
				Meta:    testMeta("x", "a"),
				WANBind: "127.0.0.1:0", LANBind: "127.0.0.1:0",
				Keyring: keys, Logger: testLogger(t),
			})
			if err == nil || !strings.Contains(err.Error(), "gossip key") {
				t.Errorf("keys of %d and %d bytes: got %v, want a gossip key error", len(keys[0]), len(keys[len(keys)-1]), err)
			}
		}
	})
}

func TestMembershipOnChange(t *testing.T) {
	var self atomic.Pointer[Membership]
	sawPeer := make(chan struct{}, 1)
	n1 := startMember(t, "n1", "a", nodeOpts{onChange: func() {
		// Calling back in proves OnChange runs outside the membership's locks.
		if m := self.Load(); m != nil {
			if s, ok := m.Member("n2"); ok && s.Alive {
				signal(sawPeer)
			}
		}
	}})
	self.Store(n1)
	n2 := startMember(t, "n2", "b", nodeOpts{})
	mustJoin(t, n2, n1)
	timeout := time.NewTimer(settle)
	defer timeout.Stop()
	select {
	case <-sawPeer:
	case <-timeout.C:
		t.Fatalf("OnChange never ran with n2 alive; n1 sees %+v", n1.Members())
	}
}

func TestMembershipGossipLogLevels(t *testing.T) {
	var buf bytes.Buffer
	h := slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})
	lg := gossipLogger(slog.New(h))
	cases := []struct{ line, want string }{
		{"[ERR] memberlist: boom", `level=ERROR msg=boom module=memberlist`},
		{"[ERROR] memberlist: bust", `level=ERROR msg=bust module=memberlist`},
		{"[WARN] memberlist: careful", `level=WARN msg=careful module=memberlist`},
		{"[INFO] memberlist: fyi", `level=INFO msg=fyi module=memberlist`},
		{"[DEBUG] memberlist: noise", `level=DEBUG msg=noise module=memberlist`},
		{"no prefix", `level=INFO msg="no prefix" module=memberlist`},
	}
	for _, c := range cases {
		buf.Reset()
		lg.Print(c.line)
		if !strings.Contains(buf.String(), c.want) {
			t.Errorf("%q logged as %q, want it to contain %q", c.line, buf.String(), c.want)
		}
	}
	// Trace is below Debug, as for Raft's lines.
	buf.Reset()
	lg.Print("[TRACE] memberlist: finer")
	if buf.Len() != 0 {
		t.Errorf("a trace line reached a handler at DEBUG: %q", buf.String())
	}
}
