package proccluster

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/tokenstore/tokenstore/internal/netem"
)

// Node is one `tokenstore serve` process: a standalone node (NewNode) or
// a node of a Cluster. Its addresses and data directory stay the same
// across restarts; Join and Flags may be changed between them.
type Node struct {
	// ID and DC are passed as --node-id and --dc when set.
	ID, DC string
	Voter  bool
	// API and Raft are the node's addresses, host:port; Gossip and
	// GossipLAN its WAN and LAN gossip addresses, none on a standalone
	// node.
	API, Raft, Gossip, GossipLAN string
	DataDir                      string
	// Join are the gossip addresses the node joins through (--join).
	Join []string
	// Flags are the node's other serve flags.
	Flags []string

	bin, logDir, logName, logLevel string
	readyTimeout                   time.Duration
	net                            *netem.Network
	proc                           *Proc
}

// NodeConfig describes a standalone node: one `tokenstore serve` on free
// loopback API and Raft ports.
type NodeConfig struct {
	Binary string // the tokenstore binary
	// Dir holds the node's log, and its data unless DataDir is set.
	Dir     string
	DataDir string
	// ID and DC are passed as --node-id and --dc when set; the daemon's
	// defaults apply otherwise.
	ID, DC string
	Flags  []string
	// LogLevel is the node's --log-level, info when empty.
	LogLevel string
	// ReadyTimeout bounds Start's wait until the node is ready, a minute
	// when zero.
	ReadyTimeout time.Duration
}

// NewNode reserves a standalone node's addresses; Start starts it.
func NewNode(cfg NodeConfig) (*Node, error) {
	addrs, err := FreeAddrs(2)
	if err != nil {
		return nil, err
	}
	n := &Node{ID: cfg.ID, DC: cfg.DC, Voter: true, API: addrs[0], Raft: addrs[1], DataDir: cfg.DataDir,
		Flags: slices.Clone(cfg.Flags), bin: cfg.Binary, logDir: cfg.Dir, logName: cmp.Or(cfg.ID, "tokenstore")}
	if n.DataDir == "" {
		n.DataDir = filepath.Join(cfg.Dir, cmp.Or(cfg.ID, "data"))
	}
	n.setDefaults(cfg.LogLevel, cfg.ReadyTimeout)
	return n, nil
}

func (n *Node) setDefaults(logLevel string, readyTimeout time.Duration) {
	n.logLevel = cmp.Or(logLevel, "info")
	n.readyTimeout = readyTimeout
	if n.readyTimeout <= 0 {
		n.readyTimeout = time.Minute
	}
}

// URL is the node's API base URL.
func (n *Node) URL() string { return "http://" + n.API }

// Pid is the process id of the node's last start.
func (n *Node) Pid() int { return n.proc.Pid() }

// Proc is the node's process, nil before the first start.
func (n *Node) Proc() *Proc { return n.proc }

// Args are the node's serve command line, as the next start runs it.
func (n *Node) Args() []string {
	args := []string{"serve", "--data-dir", n.DataDir, "--api-addr", n.API, "--raft-addr", n.Raft, "--log-level", n.logLevel}
	if n.ID != "" {
		args = append(args, "--node-id", n.ID)
	}
	if n.DC != "" {
		args = append(args, "--dc", n.DC)
	}
	if n.Gossip != "" {
		args = append(args, "--gossip-addr", n.Gossip, "--gossip-lan-addr", n.GossipLAN)
	}
	args = append(args, n.Flags...)
	if len(n.Join) > 0 {
		args = append(args, "--join", strings.Join(n.Join, ","))
	}
	return args
}

// Launch starts the process without waiting until it is ready: a node of
// a cluster being formed is ready only once its peers run too. It fails
// with ErrRunning while the last process runs.
func (n *Node) Launch() error {
	if n.Running() {
		return fmt.Errorf("start %s: %w (pid %d)", n.logName, ErrRunning, n.Pid())
	}
	bin, args := n.bin, n.Args()
	if n.net != nil {
		bin, args = n.net.Command(n.ID, bin, args...)
	}
	p, err := StartProc(n.logDir, n.logName, bin, args...)
	if err != nil {
		return err
	}
	n.proc = p
	return nil
}

// WaitReady waits until the node's /readyz answers 200.
func (n *Node) WaitReady(ctx context.Context) error { return n.waitReady(ctx, n.readyTimeout) }

func (n *Node) waitReady(ctx context.Context, timeout time.Duration) error {
	return n.proc.WaitUntil(ctx, timeout, GetOK(n.URL()+"/readyz"))
}

// Start starts the node, the first time or again on its data directory
// after Kill or Stop, and waits until it is ready. A node that does
// not become ready is killed.
func (n *Node) Start(ctx context.Context) error {
	if err := n.Launch(); err != nil {
		return err
	}
	if err := n.WaitReady(ctx); err != nil {
		n.Kill()
		return err
	}
	return nil
}

// Restart stops the node (SIGTERM), starts it again on its data
// directory and returns the time from the start of the new process until
// it is ready: the restore of its snapshot plus the log after it, which
// may take minutes. A node whose stop fails (see Proc.Stop) is not
// started again.
func (n *Node) Restart(ctx context.Context) (time.Duration, error) {
	if err := n.Stop(time.Minute); err != nil {
		return 0, fmt.Errorf("restart %s: %w", n.logName, err)
	}
	t := time.Now()
	if err := n.Launch(); err != nil {
		return 0, err
	}
	err := n.waitReady(ctx, max(n.readyTimeout, 10*time.Minute))
	return time.Since(t), err
}

// RestartKilled ends the node with SIGKILL, as a crash would, starts it
// again on its data directory and returns the time from the start of the
// new process until it is ready.
func (n *Node) RestartKilled(ctx context.Context) (time.Duration, error) {
	n.Kill()
	t := time.Now()
	if err := n.Launch(); err != nil {
		return 0, err
	}
	err := n.waitReady(ctx, max(n.readyTimeout, 10*time.Minute))
	return time.Since(t), err
}

// Kill ends the node with SIGKILL, without a leadership transfer or a
// clean close of its stores.
func (n *Node) Kill() {
	if n.proc != nil {
		n.proc.Kill()
	}
}

// Stop ends the node with SIGTERM, SIGKILL after grace (see Proc.Stop).
func (n *Node) Stop(grace time.Duration) error {
	if n.proc == nil {
		return nil
	}
	return n.proc.Stop(grace)
}

// Pause stops the node's process with SIGSTOP; Resume continues it.
func (n *Node) Pause() error { return n.proc.Pause() }

// Resume continues a paused node with SIGCONT.
func (n *Node) Resume() error { return n.proc.Resume() }

// Running reports whether the node's process is alive.
func (n *Node) Running() bool { return n.proc != nil && !n.proc.Exited() }

// Log is everything the node's processes wrote, over all its starts.
func (n *Node) Log() string {
	b, _ := os.ReadFile(filepath.Join(n.logDir, n.logName+".log"))
	return string(b)
}

// LastSnapshot finds the last completed Raft snapshot in the node's log
// and returns how long it took, from raft's "starting snapshot" line to
// its "snapshot complete" line (millisecond timestamps).
func (n *Node) LastSnapshot() (time.Duration, bool) {
	f, err := os.Open(filepath.Join(n.logDir, n.logName+".log"))
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

// logTime parses the time of a node's log line, as slog's text handler
// writes it: time=2006-01-02T15:04:05.000Z07:00 first.
func logTime(line string) time.Time {
	f, _, _ := strings.Cut(line, " ")
	t, err := time.Parse("2006-01-02T15:04:05.000Z07:00", strings.TrimPrefix(f, "time="))
	if err != nil {
		return time.Time{}
	}
	return t
}
