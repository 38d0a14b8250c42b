package proccluster

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// idleServer writes a program that takes any arguments and runs until it
// is signalled, never ready: a stand-in for a server binary.
func idleServer(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "idle")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\nexec sleep 300\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

// TestLaunchWhileRunning starts a node whose process still runs: the
// start fails and the running process stays the node's. Once that one is
// gone, the node starts again.
func TestLaunchWhileRunning(t *testing.T) {
	n, err := NewNode(NodeConfig{Binary: idleServer(t), Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Kill)
	if err := n.Launch(); err != nil {
		t.Fatal(err)
	}
	pid := n.Pid()
	if err := n.Launch(); !errors.Is(err, ErrRunning) {
		t.Fatalf("second Launch = %v, want ErrRunning", err)
	}
	if n.Pid() != pid || !n.Running() {
		t.Fatalf("after a refused Launch: pid %d (running %v), want %d still running", n.Pid(), n.Running(), pid)
	}
	n.Kill()
	if err := n.Launch(); err != nil {
		t.Fatalf("Launch after Kill: %v", err)
	}
	if n.Pid() == pid || !n.Running() {
		t.Errorf("Launch after Kill: pid %d (running %v), want a new running process", n.Pid(), n.Running())
	}
}

// TestStartNotReady starts nodes that never become ready: Start and
// StartNodes fail and leave none of them running.
func TestStartNotReady(t *testing.T) {
	bin := idleServer(t)
	n, err := NewNode(NodeConfig{Binary: bin, Dir: t.TempDir(), ReadyTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Kill)
	if err := n.Start(context.Background()); err == nil {
		t.Fatal("Start of a node that is never ready: want an error")
	}
	if n.Running() {
		t.Errorf("Start failed but left pid %d running", n.Pid())
	}

	c, err := NewCluster(ClusterConfig{Binary: bin, Dir: t.TempDir(), Nodes: 3, ReadyTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Kill)
	if err := StartNodes(context.Background(), c.Nodes...); err == nil {
		t.Fatal("StartNodes of nodes that are never ready: want an error")
	}
	for _, n := range c.Nodes {
		if n.Running() {
			t.Errorf("StartNodes failed but left %s (pid %d) running", n.ID, n.Pid())
		}
	}
}
