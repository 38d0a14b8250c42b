package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tokenstore/tokenstore/client"
	"github.com/tokenstore/tokenstore/internal/freeport"
)

// DC is one datacenter of a local cluster: its name and node count.
type DC struct {
	Name  string
	Nodes int
}

// ParseDCs parses "a:3,b:2".
func ParseDCs(s string) ([]DC, error) {
	var out []DC
	for _, f := range splitList(s) {
		name, n, ok := strings.Cut(f, ":")
		count, err := strconv.Atoi(n)
		if !ok || name == "" || err != nil || count < 1 {
			return nil, fmt.Errorf("bench: bad datacenter %q (want name:nodes)", f)
		}
		out = append(out, DC{name, count})
	}
	return out, nil
}

// ClusterConfig describes a local cluster of the real binary.
type ClusterConfig struct {
	Binary string // the tokenstore binary
	Dir    string // data directories and logs
	Nodes  int    // in one datacenter, when DCs is empty
	DCs    []DC   // the first one is the primary
	// Args are added to every node's serve flags.
	Args []string
}

// Node is one tokenstore process of a local cluster.
type Node struct {
	ID, DC string
	API    string // host:port
	proc   *Proc
	args   []string
	bin    string
	dir    string
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
}

// StartCluster starts every node and waits until all are ready.
func StartCluster(ctx context.Context, cfg ClusterConfig) (*Cluster, error) {
	dcs := cfg.DCs
	if len(dcs) == 0 {
		dcs = []DC{{"dc1", max(1, cfg.Nodes)}}
	}
	total := 0
	for _, d := range dcs {
		total += d.Nodes
	}
	addrs, err := freeport.Addrs(4 * total)
	if err != nil {
		return nil, err
	}
	c := &Cluster{}
	i := 0
	for _, d := range dcs {
		for range d.Nodes {
			a := addrs[4*i : 4*i+4]
			id := "n" + strconv.Itoa(i+1)
			args := []string{"serve", "--data-dir", filepath.Join(cfg.Dir, id), "--node-id", id, "--dc", d.Name,
				"--api-addr", a[0], "--raft-addr", a[1], "--log-level", "info"}
			if total > 1 {
				join := addrs[2] // the first node's gossip address
				if i == 0 {
					join = addrs[4+2]
				}
				args = append(args, "--gossip-addr", a[2], "--gossip-lan-addr", a[3],
					"--bootstrap-expect", strconv.Itoa(total), "--join", join)
				if len(dcs) > 1 {
					args = append(args, "--primary-dc", dcs[0].Name)
				}
			}
			c.Nodes = append(c.Nodes, &Node{ID: id, DC: d.Name, API: a[0], args: append(args, cfg.Args...), bin: cfg.Binary, dir: cfg.Dir})
			i++
		}
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

func (n *Node) start() error {
	p, err := startProc(n.dir, n.ID, n.bin, n.args...)
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

// Stop ends every process by its pid (SIGTERM, then SIGKILL).
func (c *Cluster) Stop() {
	for _, n := range c.Nodes {
		if n.proc != nil {
			n.proc.Stop(30 * time.Second)
		}
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
