// Package memcachedtest runs a real memcached for tests, on a free
// loopback port, and stops it by its process id.
package memcachedtest

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/internal/testnet"
)

// Server is one memcached process.
type Server struct {
	t    testing.TB
	Addr string
	cmd  *exec.Cmd
	done chan struct{}
}

// Start runs memcached on 127.0.0.1 and waits until it accepts connections.
// make test installs memcached when it is missing.
func Start(t testing.TB) *Server {
	t.Helper()
	if _, err := exec.LookPath("memcached"); err != nil {
		t.Fatalf("memcached is not installed (make test installs it): %v", err)
	}
	s := &Server{t: t, Addr: testnet.Addr(t)}
	s.Restart()
	t.Cleanup(s.Kill)
	return s
}

// Restart starts the process again on the same address (after Kill).
func (s *Server) Restart() {
	s.t.Helper()
	_, port, _ := net.SplitHostPort(s.Addr)
	args := []string{"-l", "127.0.0.1", "-p", port, "-U", "0", "-m", "16", "-c", "512"}
	if os.Geteuid() == 0 {
		args = append(args, "-u", "root") // memcached refuses root without it
	}
	s.cmd = exec.Command("memcached", args...)
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("start memcached: %v", err)
	}
	s.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		cmd.Wait()
		close(done)
	}(s.cmd, s.done)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.Addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-s.done:
			s.t.Fatalf("memcached on %s exited at start", s.Addr)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("memcached on %s not accepting after 10s: %v", s.Addr, err)
		}
	}
}

// Kill sends SIGKILL to the process and waits for it to exit.
func (s *Server) Kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.done:
		return
	default:
	}
	s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.done
}

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
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Pause stops the process with SIGSTOP and waits until the kernel reports
// it stopped, so that no request sent afterwards is answered.
func (s *Server) Pause(t testing.TB) {
	t.Helper()
	pid := s.PID()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP memcached: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		// The state is the field after the parenthesised command name.
		if i := bytes.LastIndexByte(b, ')'); err == nil && i > 0 && i+2 < len(b) && b[i+2] == 'T' {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("memcached %d not stopped 10s after SIGSTOP", pid)
		}
		<-time.After(5 * time.Millisecond)
	}
}

// Resume continues a paused process.
func (s *Server) Resume() { syscall.Kill(s.PID(), syscall.SIGCONT) }
