package membership

import (
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// ErrShutdown is returned by a call on a membership after its Shutdown.
var ErrShutdown = errors.New("membership is shut down")

// Membership runs the two gossip pools of a node, as Consul does: a WAN pool
// holding every node of every DC, with WAN timings, and a LAN pool holding
// only the nodes of this node's DC, with LAN timings, so failures inside a
// DC are detected quickly while cross-DC gossip stays cheap. A node joins
// through the WAN pool; it finds the LAN addresses of its own DC's nodes in
// their WAN metadata and joins them in the LAN pool itself.
type Membership struct {
	cfg      Config
	log      *slog.Logger
	wan, lan *memberlist.Memberlist
	wanAddr  string
	lanAddr  string

	updateMu sync.Mutex // serialises UpdateMeta
	metaMu   sync.Mutex // guards metaBuf, read by memberlist via NodeMeta
	metaBuf  []byte

	mu      sync.Mutex // guards members; never held while calling memberlist
	members map[string]*memberEntry

	lifeMu sync.Mutex // orders Leave against Shutdown: memberlist panics on Leave after Shutdown
	down   bool
	left   atomic.Bool

	changed chan struct{} // OnChange pending; capacity 1 coalesces bursts
	lanKick chan struct{} // look for own-DC nodes missing from the LAN pool now
	closing chan struct{}
	wg      sync.WaitGroup
}

// Meta is what a node tells the others about itself.
type Meta struct {
	ID       string `json:"id"`               // Raft server id
	DC       string `json:"dc"`               // datacenter
	RaftAddr string `json:"raft"`             // where peers reach its Raft/RPC port
	APIAddr  string `json:"api"`              // client HTTP API address
	LANAddr  string `json:"lan"`              // its LAN gossip address
	Voter    bool   `json:"voter"`            // wants to be a voter (false: non-voter)
	Expect   int    `json:"expect,omitempty"` // its --bootstrap-expect
	HasState bool   `json:"state,omitempty"`  // it has Raft state already (never bootstrap with it)
}

// Status is one known node.
type Status struct {
	Meta
	// Alive reports whether the node is alive in the pool that knows it
	// best (the LAN pool for own-DC nodes once it knows them, else the WAN
	// pool).
	Alive bool
	// Since is when Alive last changed (for dead-node removal).
	Since time.Time
}

// Config configures Start.
type Config struct {
	// Meta describes this node; ID and DC are required. LANAddr is filled in
	// with the LAN pool's advertised address.
	Meta Meta
	// WANBind is host:port of the WAN pool (the --gossip-addr); the host must
	// be an IP (empty: all interfaces); port 0 picks a free port.
	WANBind string
	// WANAdvertise is the address other nodes reach the WAN pool at; default:
	// the bound IP and port (a private IP when bound to all interfaces).
	WANAdvertise string
	// LANBind is host:port of the LAN pool, as WANBind.
	LANBind string
	// LANAdvertise is the address own-DC nodes reach the LAN pool at, as
	// WANAdvertise.
	LANAdvertise string
	// Keyring encrypts gossip, the same keys for both pools: nil means no
	// encryption; the first key is primary (used to encrypt), all are tried
	// to decrypt, so keys rotate without downtime. Each is 16, 24 or 32 bytes.
	Keyring [][]byte
	// Logger receives membership logs and memberlist's own; default
	// slog.Default().
	Logger *slog.Logger
	// OnChange, when set, is called after any member joins, leaves, fails or
	// updates: never concurrently, never under a lock of the membership, and
	// coalesced (one call may cover several changes). It must not call
	// Shutdown, which waits for it.
	OnChange func()

	// tune, set only by this package's tests, adjusts each pool's memberlist
	// config before it starts (shorter timings).
	tune func(*memberlist.Config)
	// lanJoinEvery overrides lanJoinInterval, for tests.
	lanJoinEvery time.Duration
}

const (
	// lanJoinInterval bounds how long an own-DC node can stay missing from
	// the LAN pool after a failed LAN join; WAN joins trigger a look at once.
	lanJoinInterval = 15 * time.Second
	// Labels keep a LAN address given to the WAN pool (or the reverse) from
	// merging the pools: memberlist drops traffic with another label.
	wanLabel = "tokenstore-wan"
	lanLabel = "tokenstore-lan"
)

// pool names one of the two gossip pools.
type pool int

const (
	poolWAN pool = iota
	poolLAN
)

func (p pool) String() string {
	if p == poolLAN {
		return "lan"
	}
	return "wan"
}

// memberEntry is what each pool last said about a node.
type memberEntry struct {
	wan, lan poolView
	alive    bool // as reported in Status
	since    time.Time
}

type poolView struct {
	known bool
	alive bool
	meta  Meta
}

// view prefers the LAN pool: it knows own-DC nodes sooner and better.
func (e *memberEntry) view() poolView {
	if e.lan.known {
		return e.lan
	}
	return e.wan
}

func (e *memberEntry) status() Status {
	v := e.view()
	return Status{Meta: v.meta, Alive: v.alive, Since: e.since}
}

// Start binds both pools and starts gossiping. The node is alone
// until Join.
func Start(cfg Config) (*Membership, error) {
	if cfg.Meta.ID == "" || cfg.Meta.DC == "" {
		return nil, errors.New("start membership: node id and dc are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	keyring, err := newKeyring(cfg.Keyring)
	if err != nil {
		return nil, fmt.Errorf("start membership: %w", err)
	}
	m := &Membership{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "membership"),
		members: make(map[string]*memberEntry),
		changed: make(chan struct{}, 1),
		lanKick: make(chan struct{}, 1),
		closing: make(chan struct{}),
	}
	lanLog := gossipLogger(m.log.With("pool", "lan"))
	wanLog := gossipLogger(m.log.With("pool", "wan"))

	// The transports are bound before the pools start so that the LAN
	// address, needed in the metadata of the very first alive message, is
	// known even when the port is 0.
	lanT, lanAdv, err := listenGossip(cfg.LANBind, cfg.LANAdvertise, lanLog)
	if err != nil {
		return nil, fmt.Errorf("start membership: lan pool: %w", err)
	}
	wanT, wanAdv, err := listenGossip(cfg.WANBind, cfg.WANAdvertise, wanLog)
	if err != nil {
		lanT.Shutdown()
		return nil, fmt.Errorf("start membership: wan pool: %w", err)
	}
	m.lanAddr = lanAdv.String()
	m.wanAddr = wanAdv.String()
	m.cfg.Meta.LANAddr = m.lanAddr
	if m.metaBuf, err = encodeMeta(m.cfg.Meta); err != nil {
		lanT.Shutdown()
		wanT.Shutdown()
		return nil, fmt.Errorf("start membership: %w", err)
	}

	m.lan, err = memberlist.Create(m.poolConfig(poolLAN, lanT, lanAdv, keyring, lanLog))
	if err != nil {
		lanT.Shutdown()
		wanT.Shutdown()
		return nil, fmt.Errorf("start membership: lan pool on %s: %w", m.lanAddr, err)
	}
	m.wan, err = memberlist.Create(m.poolConfig(poolWAN, wanT, wanAdv, keyring, wanLog))
	if err != nil {
		m.lan.Shutdown()
		wanT.Shutdown()
		return nil, fmt.Errorf("start membership: wan pool on %s: %w", m.wanAddr, err)
	}

	every := lanJoinInterval
	if cfg.lanJoinEvery > 0 {
		every = cfg.lanJoinEvery
	}
	m.wg.Add(1)
	go m.joinLANLoop(every)
	if cfg.OnChange != nil {
		m.wg.Add(1)
		go m.notifyLoop()
	}
	m.log.Info("gossip started", "id", cfg.Meta.ID, "dc", cfg.Meta.DC,
		"wan_addr", m.wanAddr, "lan_addr", m.lanAddr, "encrypted", keyring != nil)
	return m, nil
}

// Join contacts the given WAN gossip addresses of existing nodes and
// returns how many answered; one is enough. Own-DC nodes are then joined in
// the LAN pool in the background.
func (m *Membership) Join(addrs []string) (int, error) {
	if m.isDown() {
		return 0, fmt.Errorf("join: %w", ErrShutdown)
	}
	if m.left.Load() {
		return 0, errors.New("join: membership has left")
	}
	if len(addrs) == 0 {
		return 0, errors.New("join: no addresses given")
	}
	n, err := m.wan.Join(addrs)
	if err != nil {
		return n, fmt.Errorf("join wan pool via %s: %w", strings.Join(addrs, ", "), err)
	}
	signal(m.lanKick)
	return n, nil
}

// Members returns every node known in either pool, this node included,
// sorted by ID. Failed and departed nodes stay, with Alive false, until
// forgotten.
func (m *Membership) Members() []Status {
	m.mu.Lock()
	out := make([]Status, 0, len(m.members))
	for _, e := range m.members {
		out = append(out, e.status())
	}
	m.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Member returns the node with the given ID, if known.
func (m *Membership) Member(id string) (Status, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.members[id]
	if !ok {
		return Status{}, false
	}
	return e.status(), true
}

// Forget drops a node that is not alive from Members (e.g. once it has been
// removed from Raft); it reports whether it did. If the node comes back, it
// is listed again.
func (m *Membership) Forget(id string) bool {
	m.mu.Lock()
	e, ok := m.members[id]
	ok = ok && !e.alive && id != m.cfg.Meta.ID
	if ok {
		delete(m.members, id)
	}
	m.mu.Unlock()
	if ok {
		signal(m.changed)
	}
	return ok
}

// UpdateMeta changes this node's metadata (e.g. HasState turns true) and
// hands it to both pools, which gossip it; it does not wait for the gossip
// to reach anyone. ID and DC cannot change; LANAddr is always this node's
// own.
func (m *Membership) UpdateMeta(meta Meta) error {
	if meta.ID != m.cfg.Meta.ID || meta.DC != m.cfg.Meta.DC {
		return fmt.Errorf("update meta: id and dc cannot change (have %s/%s, got %s/%s)",
			m.cfg.Meta.ID, m.cfg.Meta.DC, meta.ID, meta.DC)
	}
	meta.LANAddr = m.lanAddr
	buf, err := encodeMeta(meta)
	if err != nil {
		return fmt.Errorf("update meta: %w", err)
	}
	m.updateMu.Lock()
	defer m.updateMu.Unlock()
	if m.isDown() {
		return fmt.Errorf("update meta: %w", ErrShutdown)
	}
	if m.left.Load() {
		// memberlist ignores news about a node that has left, itself included.
		return errors.New("update meta: membership has left")
	}
	m.metaMu.Lock()
	m.metaBuf = buf
	m.metaMu.Unlock()
	return m.both(func(p pool, l *memberlist.Memberlist) error {
		return m.pushMeta(p, l, meta)
	})
}

// pushMeta makes one pool take the current metadata. It skips memberlist's
// wait for the broadcast, which can miss the end of a fast broadcast and
// then stalls for its whole timeout; gossip and state syncs deliver the
// update anyway.
func (m *Membership) pushMeta(p pool, l *memberlist.Memberlist, want Meta) error {
	const attempts = 3
	for range attempts {
		_ = l.UpdateNode(time.Millisecond) // its only error is that timeout
		if m.ownMeta(p) == want {
			return nil
		}
		// A refutation racing the update took a newer incarnation with the
		// old metadata, so memberlist dropped the update; another attempt
		// takes a newer incarnation still.
		m.log.Debug("metadata update overtaken, retrying", "pool", p.String())
	}
	return fmt.Errorf("update meta in %s pool: not taken after %d attempts", p, attempts)
}

// ownMeta is this node's metadata as pool p last reported it.
func (m *Membership) ownMeta(p pool) Meta {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.members[m.cfg.Meta.ID]
	if e == nil {
		return Meta{}
	}
	if p == poolLAN {
		return e.lan.meta
	}
	return e.wan.meta
}

// WANAddr returns the advertised WAN gossip address, for other nodes' Join.
func (m *Membership) WANAddr() string { return m.wanAddr }

// LANAddr returns the advertised LAN gossip address.
func (m *Membership) LANAddr() string { return m.lanAddr }

// Leave announces a graceful departure in both pools, waiting up to timeout
// (0: no limit) for each announcement to go out. The pools keep running
// until Shutdown so the news spreads.
func (m *Membership) Leave(timeout time.Duration) error {
	m.lifeMu.Lock()
	defer m.lifeMu.Unlock()
	if m.down {
		return fmt.Errorf("leave: %w", ErrShutdown)
	}
	m.left.Store(true) // stop rejoining the LAN pool
	return m.both(func(p pool, l *memberlist.Memberlist) error {
		if err := l.Leave(timeout); err != nil {
			return fmt.Errorf("leave %s pool: %w", p, err)
		}
		return nil
	})
}

// Shutdown stops both pools without announcing anything; the others see
// this node fail. Call Leave first to depart gracefully. Safe to call more
// than once.
func (m *Membership) Shutdown() error {
	m.lifeMu.Lock()
	if m.down {
		m.lifeMu.Unlock()
		return nil
	}
	m.down = true
	m.lifeMu.Unlock()
	close(m.closing)
	m.wg.Wait()
	return m.both(func(p pool, l *memberlist.Memberlist) error {
		if err := l.Shutdown(); err != nil {
			return fmt.Errorf("shut down %s pool: %w", p, err)
		}
		return nil
	})
}

func (m *Membership) isDown() bool {
	m.lifeMu.Lock()
	defer m.lifeMu.Unlock()
	return m.down
}

// both runs f on the two pools at once, since each may wait for a
// broadcast.
func (m *Membership) both(f func(pool, *memberlist.Memberlist) error) error {
	var lanErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		lanErr = f(poolLAN, m.lan)
	}()
	wanErr := f(poolWAN, m.wan)
	<-done
	return errors.Join(lanErr, wanErr)
}

// observe records what a pool said about a node.
func (m *Membership) observe(p pool, n *memberlist.Node, alive bool) {
	meta, err := decodeMeta(n.Meta)
	if err != nil {
		// NotifyAlive refused such nodes, so this is not expected.
		m.log.Warn("ignoring member with bad metadata", "pool", p.String(), "node", n.Name, "err", err)
		return
	}
	now := time.Now()
	m.mu.Lock()
	e := m.members[n.Name]
	if e == nil {
		e = &memberEntry{since: now}
		m.members[n.Name] = e
	}
	v := poolView{known: true, alive: alive, meta: meta}
	if p == poolLAN {
		e.lan = v
	} else {
		e.wan = v
	}
	if a := e.view().alive; a != e.alive {
		e.alive = a
		e.since = now
	}
	missingFromLAN := p == poolWAN && alive && !e.lan.alive &&
		meta.DC == m.cfg.Meta.DC && n.Name != m.cfg.Meta.ID
	m.mu.Unlock()
	signal(m.changed)
	if missingFromLAN {
		signal(m.lanKick)
	}
}

// joinLANLoop joins own-DC nodes that the WAN pool knows and the LAN pool
// does not, on every kick and periodically, so that nodes joining later
// through another DC's node are found too.
func (m *Membership) joinLANLoop(every time.Duration) {
	defer m.wg.Done()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-m.closing:
			return
		case <-tick.C:
		case <-m.lanKick:
		}
		m.joinLAN()
	}
}

func (m *Membership) joinLAN() {
	if m.left.Load() {
		return
	}
	var addrs []string
	m.mu.Lock()
	for id, e := range m.members {
		if id != m.cfg.Meta.ID && e.wan.alive && !e.lan.alive &&
			e.wan.meta.DC == m.cfg.Meta.DC && e.wan.meta.LANAddr != "" {
			addrs = append(addrs, e.wan.meta.LANAddr)
		}
	}
	m.mu.Unlock()
	if len(addrs) == 0 {
		return
	}
	sort.Strings(addrs)
	n, err := m.lan.Join(addrs)
	if err != nil {
		// Expected briefly after a node fails: the WAN pool notices later.
		m.log.Warn("joining own-dc nodes in lan pool", "addrs", addrs, "err", err)
		return
	}
	m.log.Debug("joined own-dc nodes in lan pool", "addrs", addrs, "reached", n)
}

func (m *Membership) notifyLoop() {
	defer m.wg.Done()
	for {
		select {
		case <-m.closing:
			return
		case <-m.changed:
			m.cfg.OnChange()
		}
	}
}

// signal marks ch pending without blocking; pending marks coalesce.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
