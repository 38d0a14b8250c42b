package membership

// The memberlist plumbing of Membership: sockets, keyring, pool settings,
// the delegates that carry and vet metadata, and log routing.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/tokenstore/tokenstore/internal/logging"
)

func newKeyring(keys [][]byte) (*memberlist.Keyring, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	own := make([][]byte, len(keys))
	for i, k := range keys {
		if err := memberlist.ValidateKey(k); err != nil {
			return nil, fmt.Errorf("gossip key %d: %w", i, err)
		}
		own[i] = append([]byte(nil), k...) // the caller may reuse its buffers
	}
	kr, err := memberlist.NewKeyring(own[1:], own[0])
	if err != nil {
		return nil, fmt.Errorf("gossip keyring: %w", err)
	}
	return kr, nil
}

// listenGossip binds a pool's UDP and TCP listeners and works out the
// address the pool advertises.
func listenGossip(bind, advertise string, lg *log.Logger) (*memberlist.NetTransport, *net.TCPAddr, error) {
	host, port, err := splitHostPort(bind)
	if err != nil {
		return nil, nil, fmt.Errorf("bind address: %w", err)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	if net.ParseIP(host) == nil {
		// memberlist would silently bind all interfaces instead.
		return nil, nil, fmt.Errorf("bind address %q: host must be an IP", bind)
	}
	var t *memberlist.NetTransport
	for attempt := 1; ; attempt++ {
		t, err = memberlist.NewNetTransport(&memberlist.NetTransportConfig{
			BindAddrs: []string{host}, BindPort: port, Logger: lg,
		})
		if err == nil {
			break
		}
		// Port 0 takes a free TCP port, then binds UDP on the same number,
		// which may be taken: try another. memberlist wraps the error as
		// text, so only the message tells.
		if port != 0 || attempt == 10 || !strings.Contains(err.Error(), "address already in use") {
			return nil, nil, fmt.Errorf("bind %s: %w", bind, err)
		}
	}
	advHost, advPort := "", 0
	if advertise != "" {
		if advHost, advPort, err = splitHostPort(advertise); err != nil {
			t.Shutdown()
			return nil, nil, fmt.Errorf("advertise address: %w", err)
		}
		if advPort == 0 {
			advPort = t.GetAutoBindPort()
		}
	}
	ip, p, err := t.FinalAdvertiseAddr(advHost, advPort)
	if err != nil {
		t.Shutdown()
		return nil, nil, fmt.Errorf("advertise address: %w", err)
	}
	if ip.IsUnspecified() {
		t.Shutdown()
		return nil, nil, fmt.Errorf("advertise address %s: not reachable, give one explicitly", ip)
	}
	return t, &net.TCPAddr{IP: ip, Port: p}, nil
}

func splitHostPort(hostport string) (string, int, error) {
	host, ps, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", 0, fmt.Errorf("%q: %w", hostport, err)
	}
	port, err := strconv.ParseUint(ps, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("%q: bad port: %w", hostport, err)
	}
	return host, int(port), nil
}

// poolConfig keeps memberlist's LAN or WAN defaults except for what ties
// the pool to this node; tests may shorten timings through cfg.tune.
func (m *Membership) poolConfig(p pool, t *memberlist.NetTransport, adv *net.TCPAddr,
	kr *memberlist.Keyring, lg *log.Logger) *memberlist.Config {
	c := memberlist.DefaultWANConfig()
	c.Label = wanLabel
	if p == poolLAN {
		c = memberlist.DefaultLANConfig()
		c.Label = lanLabel
	}
	c.Name = m.cfg.Meta.ID
	c.Transport = t
	c.BindPort = t.GetAutoBindPort() // the default port for join addresses without one
	c.AdvertiseAddr = adv.IP.String()
	c.AdvertisePort = adv.Port
	c.Keyring = kr
	c.Logger = lg
	// A node that died may come back under its id at another address (a
	// new IP, new ports); memberlist refuses that as a conflict until the
	// old entry has been dead this long.
	c.DeadNodeReclaimTime = 30 * time.Second
	d := &poolDelegate{m: m, pool: p}
	c.Delegate = d
	c.Events = d
	c.Alive = d
	c.Merge = d
	if m.cfg.tune != nil {
		m.cfg.tune(c)
	}
	return c
}

func encodeMeta(meta Meta) ([]byte, error) {
	b, err := json.Marshal(meta)
	if err != nil {
		return nil, fmt.Errorf("encode member meta: %w", err)
	}
	if len(b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("member meta is %d bytes, over the gossip limit of %d", len(b), memberlist.MetaMaxSize)
	}
	return b, nil
}

func decodeMeta(b []byte) (Meta, error) {
	var meta Meta
	if err := json.Unmarshal(b, &meta); err != nil {
		return meta, fmt.Errorf("decode member meta: %w", err)
	}
	if meta.ID == "" || meta.DC == "" {
		return meta, errors.New("member meta lacks id or dc")
	}
	return meta, nil
}

// poolDelegate connects one pool's callbacks to the membership. memberlist
// calls the event and alive hooks under its own lock, so they must not call
// back into memberlist.
type poolDelegate struct {
	m    *Membership
	pool pool
}

// NodeMeta gives memberlist this node's encoded metadata.
func (d *poolDelegate) NodeMeta(limit int) []byte {
	d.m.metaMu.Lock()
	defer d.m.metaMu.Unlock()
	return d.m.metaBuf // encodeMeta kept it under the limit
}

// NotifyMsg, GetBroadcasts, LocalState and MergeRemoteState are unused:
// the metadata is the only state gossiped.
func (d *poolDelegate) NotifyMsg([]byte)                  {}
func (d *poolDelegate) GetBroadcasts(int, int) [][]byte   { return nil }
func (d *poolDelegate) LocalState(bool) []byte            { return nil }
func (d *poolDelegate) MergeRemoteState(_ []byte, _ bool) {}

// NotifyJoin, NotifyUpdate and NotifyLeave record what the pool says of a
// node; NotifyAlive vets a node before the pool takes it.
func (d *poolDelegate) NotifyJoin(n *memberlist.Node)        { d.m.observe(d.pool, n, true) }
func (d *poolDelegate) NotifyUpdate(n *memberlist.Node)      { d.m.observe(d.pool, n, true) }
func (d *poolDelegate) NotifyLeave(n *memberlist.Node)       { d.m.observe(d.pool, n, false) }
func (d *poolDelegate) NotifyAlive(n *memberlist.Node) error { return d.admit(n) }

// NotifyMerge refuses a join whose cluster holds any node this pool would
// refuse, so two DCs' LAN pools never merge.
func (d *poolDelegate) NotifyMerge(peers []*memberlist.Node) error {
	for _, n := range peers {
		if err := d.admit(n); err != nil {
			return err
		}
	}
	return nil
}

// admit accepts nodes with readable metadata naming them, and in the LAN
// pool only nodes of this node's DC.
func (d *poolDelegate) admit(n *memberlist.Node) error {
	meta, err := decodeMeta(n.Meta)
	if err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	if meta.ID != n.Name {
		return fmt.Errorf("node %s: metadata names %q", n.Name, meta.ID)
	}
	if d.pool == poolLAN && meta.DC != d.m.cfg.Meta.DC {
		return fmt.Errorf("node %s is in dc %q, this lan pool is dc %q", n.Name, meta.DC, d.m.cfg.Meta.DC)
	}
	return nil
}

// gossipLogger routes memberlist's log lines, which carry their level as a
// "[WARN]"-style prefix, into slog at the matching level, with the module
// attribute that names the library, as on Raft's lines.
func gossipLogger(l *slog.Logger) *log.Logger {
	return log.New(gossipLogWriter{l.With("module", "memberlist")}, "", 0)
}

type gossipLogWriter struct{ log *slog.Logger }

func (w gossipLogWriter) Write(p []byte) (int, error) {
	level, msg := logging.LevelPrefix(strings.TrimSpace(string(p)))
	msg = strings.TrimPrefix(msg, "memberlist: ")
	w.log.Log(context.Background(), level, msg)
	return len(p), nil
}
