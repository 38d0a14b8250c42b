package proccluster

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tokenstore/tokenstore/client"
	"github.com/tokenstore/tokenstore/internal/netem"
	"github.com/tokenstore/tokenstore/internal/pki"
)

// DC is one datacenter of a local cluster: its name, its voters and its
// non-voters (read replicas that never lead).
type DC struct {
	Name      string
	Nodes     int
	NonVoters int
}

// ParseDCs parses "a:3,b:2", and "b:1+1" for one voter and one
// non-voter; a cluster needs a voter. An empty s is no DCs.
func ParseDCs(s string) ([]DC, error) {
	var out []DC
	voters := 0
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		name, n, ok := strings.Cut(f, ":")
		v, nv, hasNV := strings.Cut(n, "+")
		d := DC{Name: name}
		var err error
		d.Nodes, err = strconv.Atoi(v)
		if hasNV && err == nil {
			d.NonVoters, err = strconv.Atoi(nv)
		}
		if !ok || name == "" || err != nil || d.Nodes < 0 || d.NonVoters < 0 || d.Nodes+d.NonVoters < 1 {
			return nil, fmt.Errorf("proccluster: bad datacenter %q (want name:voters or name:voters+nonvoters)", f)
		}
		out = append(out, d)
		voters += d.Nodes
	}
	if len(out) > 0 && voters == 0 {
		return nil, fmt.Errorf("proccluster: datacenters %q have no voter", s)
	}
	return out, nil
}

// String is the DC as ParseDCs takes it.
func (d DC) String() string {
	if d.NonVoters > 0 {
		return fmt.Sprintf("%s:%d+%d", d.Name, d.Nodes, d.NonVoters)
	}
	return fmt.Sprintf("%s:%d", d.Name, d.Nodes)
}

// FormatDCs is dcs as ParseDCs takes them.
func FormatDCs(dcs []DC) string {
	var out []string
	for _, d := range dcs {
		out = append(out, d.String())
	}
	return strings.Join(out, ",")
}

// NodeSpec is one node of a cluster to lay out.
type NodeSpec struct {
	ID, DC   string // DC defaults to dc1
	NonVoter bool
	// Flags are the node's own serve flags, its cluster flags such as
	// --bootstrap-expect and --primary-dc included.
	Flags []string
}

// Specs lays out datacenters as StartCluster runs them: nodes n1, n2, …
// in order; when there are several nodes every voter expects all the
// voters to bootstrap, and with several datacenters every node names the
// first as the primary.
func Specs(dcs []DC) []NodeSpec {
	var out []NodeSpec
	voters := 0
	for _, d := range dcs {
		for k := range d.Nodes + d.NonVoters {
			out = append(out, NodeSpec{ID: "n" + strconv.Itoa(len(out)+1), DC: d.Name, NonVoter: k >= d.Nodes})
		}
		voters += d.Nodes
	}
	if len(out) < 2 {
		return out
	}
	for i := range out {
		if !out[i].NonVoter {
			out[i].Flags = append(out[i].Flags, "--bootstrap-expect", strconv.Itoa(voters))
		}
		if len(dcs) > 1 {
			out[i].Flags = append(out[i].Flags, "--primary-dc", dcs[0].Name)
		}
	}
	return out
}

// ClusterConfig describes a local cluster of the real binary.
type ClusterConfig struct {
	Binary string // the tokenstore binary
	Dir    string // data directories (Dir/ID) and logs (Dir/ID.log)
	Nodes  int    // in one datacenter, when DCs is empty
	DCs    []DC   // the first one is the primary
	// Specs, when set, lays out every node instead of Nodes and DCs.
	Specs []NodeSpec
	// Args are added to every node's serve flags.
	Args []string
	// Net, when set, puts every node in a network namespace of its own
	// behind an emulated network (see netem.Network); otherwise all
	// listen on 127.0.0.1.
	Net *netem.Config
	// Secure runs the nodes with mutual TLS and a gossip key made for
	// this run (nodeSecurity). Always so with Net: its addresses are not
	// loopback.
	Secure bool
	// LogLevel is every node's --log-level, info when empty.
	LogLevel string
	// ReadyTimeout bounds the wait until a node is ready, a minute when
	// zero.
	ReadyTimeout time.Duration
}

// Cluster is a local cluster; Stop ends its processes by pid.
type Cluster struct {
	Nodes []*Node
	// Net is the emulated network, when the config asked for one.
	Net *netem.Network
}

// NewCluster lays out a cluster without starting it: every node's
// addresses, data directory, certificates and flags. With several nodes,
// the first joins through the second's gossip address and every other
// one through the first's.
func NewCluster(cfg ClusterConfig) (*Cluster, error) {
	specs := cfg.Specs
	if len(specs) == 0 {
		dcs := cfg.DCs
		if len(dcs) == 0 {
			dcs = []DC{{Name: "dc1", Nodes: max(1, cfg.Nodes)}}
		}
		specs = Specs(dcs)
	}
	c := &Cluster{}
	for _, s := range specs {
		n := &Node{ID: s.ID, DC: cmp.Or(s.DC, "dc1"), Voter: !s.NonVoter, DataDir: filepath.Join(cfg.Dir, s.ID),
			bin: cfg.Binary, logDir: cfg.Dir, logName: s.ID}
		n.setDefaults(cfg.LogLevel, cfg.ReadyTimeout)
		if s.NonVoter {
			n.Flags = append(n.Flags, "--nonvoter")
		}
		n.Flags = append(n.Flags, s.Flags...)
		c.Nodes = append(c.Nodes, n)
	}
	// API, Raft, WAN and LAN gossip addresses of every node.
	var addrs []string
	if cfg.Net != nil {
		var nodes []netem.Node
		for _, n := range c.Nodes {
			nodes = append(nodes, netem.Node{ID: n.ID, DC: n.DC})
		}
		net, err := netem.New(nodes, *cfg.Net)
		if err != nil {
			return nil, err
		}
		c.Net = net
		for _, n := range c.Nodes {
			n.net = net
			for port := range 4 {
				addrs = append(addrs, fmt.Sprintf("%s:%d", net.IP(n.ID), 7000+port))
			}
		}
	} else {
		var err error
		if addrs, err = FreeAddrs(4 * len(c.Nodes)); err != nil {
			return nil, err
		}
	}
	var secure map[string][]string
	if cfg.Secure || c.Net != nil {
		ip := func(string) string { return "127.0.0.1" }
		if c.Net != nil {
			ip = c.Net.IP
		}
		var err error
		if secure, err = nodeSecurity(cfg.Dir, c.Nodes, ip); err != nil {
			c.Kill()
			return nil, err
		}
	}
	for i, n := range c.Nodes {
		a := addrs[4*i : 4*i+4]
		n.API, n.Raft = a[0], a[1]
		if len(c.Nodes) > 1 {
			n.Gossip, n.GossipLAN = a[2], a[3]
			n.Join = []string{addrs[2]} // the first node's gossip address
			if i == 0 {
				n.Join = []string{addrs[4+2]}
			}
		}
		n.Flags = append(n.Flags, secure[n.ID]...)
		if c.Net != nil {
			// The API addresses in the namespaces are not loopback and
			// have no API keys, but only the host reaches them.
			n.Flags = append(n.Flags, "--insecure")
		}
		n.Flags = append(n.Flags, cfg.Args...)
	}
	return c, nil
}

// StartCluster lays out a cluster (NewCluster), starts every node and
// waits until all are ready.
func StartCluster(ctx context.Context, cfg ClusterConfig) (*Cluster, error) {
	c, err := NewCluster(cfg)
	if err != nil {
		return nil, err
	}
	if err := c.Start(ctx); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

// Start starts every node and waits until all are ready.
func (c *Cluster) Start(ctx context.Context) error { return StartNodes(ctx, c.Nodes...) }

// StartNodes starts the nodes in order, then waits until all are ready.
// When one fails to start or to become ready, every node it started is
// killed.
func StartNodes(ctx context.Context, nodes ...*Node) (err error) {
	var started []*Node
	defer func() {
		if err != nil {
			for _, n := range started {
				n.Kill()
			}
		}
	}()
	for _, n := range nodes {
		if err := n.Launch(); err != nil {
			return err
		}
		started = append(started, n)
	}
	for _, n := range nodes {
		if err := n.WaitReady(ctx); err != nil {
			return err
		}
	}
	return nil
}

// nodeSecurity makes a CA, a certificate for every node (with the
// node's IP) and a gossip key for this run, under dir/tls, and returns
// each node's serve flags for them. The CA's key is never written.
func nodeSecurity(dir string, nodes []*Node, ip func(id string) string) (map[string][]string, error) {
	ca, err := pki.NewCA("tokenstore bench CA", 365*24*time.Hour)
	if err != nil {
		return nil, err
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	gossipKey := base64.StdEncoding.EncodeToString(key)
	out := map[string][]string{}
	for _, n := range nodes {
		f, err := ca.Issue(filepath.Join(dir, "tls", n.ID), pki.Identity{Name: n.ID, IPs: []net.IP{net.ParseIP(ip(n.ID))}, DNS: []string{n.ID}})
		if err != nil {
			return nil, err
		}
		out[n.ID] = []string{"--tls-cert", f.Cert, "--tls-key", f.Key, "--tls-ca", f.CA, "--gossip-key", gossipKey}
	}
	return out, nil
}

// Node is the node with id, or nil.
func (c *Cluster) Node(id string) *Node {
	for _, n := range c.Nodes {
		if n.ID == id {
			return n
		}
	}
	return nil
}

// URLs are the nodes' API base URLs.
func (c *Cluster) URLs() []string {
	var out []string
	for _, n := range c.Nodes {
		out = append(out, n.URL())
	}
	return out
}

// Addrs are the URLs comma-separated, as the benchmarks' --addr takes
// them.
func (c *Cluster) Addrs() string { return strings.Join(c.URLs(), ",") }

// Roles returns the leader and the followers, as the first node sees
// them.
func (c *Cluster) Roles(ctx context.Context) (leader *Node, followers []*Node, err error) {
	info, err := client.New(c.Nodes[0].URL(), client.WithHTTPClient(Probe)).Cluster(ctx)
	if err != nil {
		return nil, nil, err
	}
	leader = c.Node(info.Leader)
	if leader == nil {
		return nil, nil, fmt.Errorf("proccluster: leader %q is not a node of this cluster", info.Leader)
	}
	followers = slices.DeleteFunc(slices.Clone(c.Nodes), func(n *Node) bool { return n == leader })
	return leader, followers, nil
}

// ErrNoLeaderSeen is a cluster none of whose running nodes names a leader
// of it.
var ErrNoLeaderSeen = errors.New("proccluster: no node names a leader of this cluster")

// Leader asks the running nodes, through hc, which one leads, until one
// names a node of this cluster or 30 seconds have passed.
func (c *Cluster) Leader(ctx context.Context, hc *http.Client) (*Node, error) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, n := range c.Nodes {
			if !n.Running() {
				continue
			}
			qctx, cancel := context.WithTimeout(ctx, time.Second)
			info, err := client.New(n.URL(), client.WithHTTPClient(hc)).Cluster(qctx)
			cancel()
			if err != nil || info.Leader == "" {
				continue
			}
			if l := c.Node(info.Leader); l != nil {
				return l, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil, ErrNoLeaderSeen
}

// NodesIn are the nodes of one DC, in order.
func NodesIn(nodes []*Node, dc string) []*Node {
	var out []*Node
	for _, n := range nodes {
		if n.DC == dc {
			out = append(out, n)
		}
	}
	return out
}

// Stop ends every process by its pid (SIGTERM, then SIGKILL), all at
// once, then removes the network.
func (c *Cluster) Stop() {
	var wg sync.WaitGroup
	for _, n := range c.Nodes {
		wg.Go(func() { n.Stop(30 * time.Second) })
	}
	wg.Wait()
	c.closeNet()
}

// Kill ends every process with SIGKILL, then removes the network.
func (c *Cluster) Kill() {
	for _, n := range c.Nodes {
		n.Kill()
	}
	c.closeNet()
}

func (c *Cluster) closeNet() {
	if c.Net != nil {
		c.Net.Close()
		c.Net = nil
	}
}
