// Package memcachedtest runs a real memcached for tests, on a free
// loopback port, and stops it by its process id: the harness's
// memcached (proccluster.StartMemcached) with a test's failures.
package memcachedtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/internal/proccluster"
)

// Server is one memcached process (proccluster.Memcached).
type Server struct {
	t    testing.TB
	Addr string
	m    *proccluster.Memcached
}

// Start runs memcached on 127.0.0.1 and waits until it accepts connections.
// make test installs memcached when it is missing.
func Start(t testing.TB) *Server {
	t.Helper()
	m, err := proccluster.StartMemcached(context.Background(), t.TempDir(), "-m", "16", "-c", "512")
	if errors.Is(err, proccluster.ErrNotInstalled) {
		t.Fatalf("memcached is not installed (make test installs it): %v", err)
	}
	if err != nil {
		t.Fatalf("start memcached: %v", err)
	}
	t.Cleanup(m.Kill)
	return &Server{t: t, Addr: m.Addr, m: m}
}

// Restart starts the process again on the same address, after Kill; the
// test fails if the last process still runs.
func (s *Server) Restart() {
	s.t.Helper()
	if err := s.m.Restart(context.Background()); err != nil {
		s.t.Fatalf("restart memcached: %v", err)
	}
}

// Kill sends SIGKILL to the process and waits for it to exit.
func (s *Server) Kill() { s.m.Kill() }

// Items returns the server's curr_items statistic.
func (s *Server) Items() (int, error) {
	c, err := net.DialTimeout("tcp", s.Addr, time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprintf(c, "stats\r\n")
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "STAT curr_items "); ok {
			return strconv.Atoi(v)
		}
		if line == "END" {
			break
		}
	}
	return 0, fmt.Errorf("no curr_items in stats")
}

// PID returns the process id.
func (s *Server) PID() int { return s.m.Pid() }

// Pause stops the process with SIGSTOP and waits until the kernel reports
// it stopped, so that no request sent afterwards is answered.
func (s *Server) Pause(t testing.TB) {
	t.Helper()
	if err := s.m.Pause(); err != nil {
		t.Fatalf("pause memcached: %v", err)
	}
}

// Resume continues a paused process.
func (s *Server) Resume() { s.m.Resume() }
