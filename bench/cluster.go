package bench

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tokenstore/tokenstore/client"
	"github.com/tokenstore/tokenstore/internal/freeport"
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
	for _, f := range SplitList(s) {
		name, n, ok := strings.Cut(f, ":")
		v, nv, hasNV := strings.Cut(n, "+")
		d := DC{Name: name}
		var err error
		d.Nodes, err = strconv.Atoi(v)
		if hasNV && err == nil {
			d.NonVoters, err = strconv.Atoi(nv)
		}
		if !ok || name == "" || err != nil || d.Nodes < 0 || d.NonVoters < 0 || d.Nodes+d.NonVoters < 1 {
			return nil, fmt.Errorf("bench: bad datacenter %q (want name:voters or name:voters+nonvoters)", f)
		}
		out = append(out, d)
		voters += d.Nodes
	}
	if len(out) > 0 && voters == 0 {
		return nil, fmt.Errorf("bench: datacenters %q have no voter", s)
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

// ClusterConfig describes a local cluster of the real binary.
type ClusterConfig struct {
	Binary string // the tokenstore binary
	Dir    string // data directories and logs
	Nodes  int    // in one datacenter, when DCs is empty
	DCs    []DC   // the first one is the primary
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
}

// Node is one tokenstore process of a local cluster.
type Node struct {
	ID, DC string
	Voter  bool
	API    string // host:port
	proc   *Proc
	args   []string
	bin    string
	dir    string
	net    *netem.Network
}

// URL is the node's API base URL.
func (n *Node) URL() string { return "http://" + n.API }

// Pid is the node's process id.
func (n *Node) Pid() int { return n.proc.Pid() }

// Proc is the node's process.
func (n *Node) Proc() *Proc { return n.proc }

// Cluster is a local cluster; Stop ends its processes by pid.
type Cluster struct {
	Nodes []*Node
	// Net is the emulated network, when the config asked for one.
	Net *netem.Network
}

// StartCluster starts every node and waits until all are ready.
func StartCluster(ctx context.Context, cfg ClusterConfig) (*Cluster, error) {
	dcs := cfg.DCs
	if len(dcs) == 0 {
		dcs = []DC{{Name: "dc1", Nodes: max(1, cfg.Nodes)}}
	}
	c := &Cluster{}
	voters := 0
	for _, d := range dcs {
		for k := range d.Nodes + d.NonVoters {
			id := "n" + strconv.Itoa(len(c.Nodes)+1)
			c.Nodes = append(c.Nodes, &Node{ID: id, DC: d.Name, Voter: k < d.Nodes, bin: cfg.Binary, dir: cfg.Dir})
		}
		voters += d.Nodes
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
		if addrs, err = freeport.Addrs(4 * len(c.Nodes)); err != nil {
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
			c.Stop()
			return nil, err
		}
	}
	for i, n := range c.Nodes {
		a := addrs[4*i : 4*i+4]
		n.API = a[0]
		n.args = []string{"serve", "--data-dir", filepath.Join(cfg.Dir, n.ID), "--node-id", n.ID, "--dc", n.DC,
			"--api-addr", a[0], "--raft-addr", a[1], "--log-level", "info"}
		if len(c.Nodes) > 1 {
			join := addrs[2] // the first node's gossip address
			if i == 0 {
				join = addrs[4+2]
			}
			n.args = append(n.args, "--gossip-addr", a[2], "--gossip-lan-addr", a[3], "--join", join)
			if n.Voter {
				n.args = append(n.args, "--bootstrap-expect", strconv.Itoa(voters))
			} else {
				n.args = append(n.args, "--nonvoter")
			}
			if len(dcs) > 1 {
				n.args = append(n.args, "--primary-dc", dcs[0].Name)
			}
		}
		n.args = append(n.args, secure[n.ID]...)
		if c.Net != nil {
			// The API addresses in the namespaces are not loopback and
			// have no API keys, but only this bench reaches them.
			n.args = append(n.args, "--insecure")
		}
		n.args = append(n.args, cfg.Args...)
	}
	for _, n := range c.Nodes {
		if err := n.start(); err != nil {
			c.Stop()
			return nil, err
		}
	}
	for _, n := range c.Nodes {
		if err := n.waitReady(ctx, time.Minute); err != nil {
			c.Stop()
			return nil, err
		}
	}
	return c, nil
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

func (n *Node) start() error {
	bin, args := n.bin, n.args
	if n.net != nil {
		bin, args = n.net.Command(n.ID, bin, args...)
	}
	p, err := startProc(n.dir, n.ID, bin, args...)
	n.proc = p
	return err
}

func (n *Node) waitReady(ctx context.Context, timeout time.Duration) error {
	c := client.New(n.URL(), client.WithHTTPClient(probe))
	return n.proc.waitUntil(ctx, timeout, c.Ready)
}

// Restart stops the node (SIGTERM), starts it again on its data
// directory and returns the time from the start of the new process until
// it is ready: the restore of its snapshot plus the log after it.
func (n *Node) Restart(ctx context.Context) (time.Duration, error) {
	n.proc.Stop(time.Minute)
	t := time.Now()
	if err := n.start(); err != nil {
		return 0, err
	}
	err := n.waitReady(ctx, 10*time.Minute)
	return time.Since(t), err
}

// URLs are the nodes' API base URLs.
func (c *Cluster) URLs() []string {
	var out []string
	for _, n := range c.Nodes {
		out = append(out, n.URL())
	}
	return out
}

// Addrs are the URLs comma-separated, as Config.Addr takes them.
func (c *Cluster) Addrs() string { return strings.Join(c.URLs(), ",") }

// Roles returns the leader and the followers.
func (c *Cluster) Roles(ctx context.Context) (leader *Node, followers []*Node, err error) {
	info, err := client.New(c.Nodes[0].URL(), client.WithHTTPClient(probe)).Cluster(ctx)
	if err != nil {
		return nil, nil, err
	}
	for _, n := range c.Nodes {
		if n.ID == info.Leader {
			leader = n
		} else {
			followers = append(followers, n)
		}
	}
	if leader == nil {
		return nil, nil, fmt.Errorf("bench: leader %q is not a node of this cluster", info.Leader)
	}
	return leader, followers, nil
}

// Stop ends every process by its pid (SIGTERM, then SIGKILL), then
// removes the network.
func (c *Cluster) Stop() {
	for _, n := range c.Nodes {
		if n.proc != nil {
			n.proc.Stop(30 * time.Second)
		}
	}
	if c.Net != nil {
		c.Net.Close()
	}
}

// Pids are the nodes' process ids.
func (c *Cluster) Pids() []int {
	var out []int
	for _, n := range c.Nodes {
		out = append(out, n.Pid())
	}
	return out
}

// LastSnapshot finds the last completed Raft snapshot in the node's log
// and returns how long it took, from raft's "starting snapshot" line to
// its "snapshot complete" line (millisecond timestamps).
func (n *Node) LastSnapshot() (time.Duration, bool) {
	f, err := os.Open(n.proc.LogPath)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	var start time.Time
	var last time.Duration
	found := false
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.Contains(line, "starting snapshot up to"):
			start = logTime(line)
		case strings.Contains(line, "snapshot complete up to") && !start.IsZero():
			if end := logTime(line); !end.IsZero() {
				last, found = end.Sub(start), true
			}
		}
	}
	return last, found
}

// logTime parses the timestamp that starts an hclog line.
func logTime(line string) time.Time {
	f, _, _ := strings.Cut(line, " ")
	t, err := time.Parse("2006-01-02T15:04:05.000Z0700", f)
	if err != nil {
		return time.Time{}
	}
	return t
}

// Kill ends the node with SIGKILL, without a leadership transfer or a
// clean close of its stores.
func (n *Node) Kill() { n.proc.Kill() }

// Pause stops the node's process with SIGSTOP; Resume continues it.
func (n *Node) Pause() error { return n.proc.Signal(syscall.SIGSTOP) }

// Resume continues a paused node with SIGCONT.
func (n *Node) Resume() error { return n.proc.Signal(syscall.SIGCONT) }

// Start starts a node that was killed again on its data directory and
// waits until it is ready.
func (n *Node) Start(ctx context.Context) error {
	if err := n.start(); err != nil {
		return err
	}
	return n.waitReady(ctx, time.Minute)
}

// Running reports whether the node's process is alive.
func (n *Node) Running() bool { return n.proc != nil && !n.proc.Exited() }
