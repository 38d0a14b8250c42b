// Package proccluster starts real processes and stops them by their
// pids: `tokenstore serve` nodes, alone (NewNode) or as a cluster
// (StartCluster), on free loopback ports (FreeAddrs) or in an emulated
// network (internal/netem), and the servers beside them: memcached, the
// router and an echo upstream. The system tests and the benchmarks start
// their processes through it.
package proccluster

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

var (
	// ErrNotInstalled is a server binary that is not on the PATH.
	ErrNotInstalled = errors.New("proccluster: server binary not installed")
	// ErrRunning is a start of a server whose last process still runs:
	// its pid would be lost.
	ErrRunning = errors.New("proccluster: process still running")
)

// pollEvery is how often a process is asked whether it is ready.
const pollEvery = 25 * time.Millisecond

// Proc is a process started by StartProc; it is stopped by its pid.
type Proc struct {
	Name    string
	LogPath string
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
}

// StartProc runs bin with args, its output appended to dir/name.log.
// Where the platform allows (Linux), the process is killed when the
// process that started it dies, even without running its cleanups.
func StartProc(dir, name, bin string, args ...string) (*Proc, error) {
	logPath := filepath.Join(dir, name+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	p := &Proc{Name: name, LogPath: logPath, cmd: exec.Command(bin, args...), exited: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	started := make(chan error, 1)
	go p.run(logf, started)
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return p, nil
}

// run starts the process, says so on started and waits until it exits,
// all on one goroutine: dieWithStarter ties the process to the OS thread
// that starts it, and that thread is held until the process is gone.
func (p *Proc) run(logf *os.File, started chan<- error) {
	release := dieWithStarter(p.cmd)
	defer release()
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		started <- err
		return
	}
	started <- nil
	p.waitErr = p.cmd.Wait()
	logf.Close()
	close(p.exited)
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process is gone.
func (p *Proc) Exited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// Kill sends SIGKILL to the pid and returns once the process is gone.
func (p *Proc) Kill() {
	if p.Exited() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// Stop sends SIGTERM to the pid and returns the exit error once the
// process is gone (nil: exit status 0). A process still running after
// grace gets SIGKILL, and Stop says it ignored SIGTERM. A paused process
// is continued first: stopped, it would not act on SIGTERM before the
// SIGKILL.
func (p *Proc) Stop(grace time.Duration) error {
	if p.Exited() {
		return p.waitErr
	}
	p.cmd.Process.Signal(syscall.SIGCONT)
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return p.waitErr
	case <-time.After(grace):
		p.Kill()
		return fmt.Errorf("%s (pid %d) ignored SIGTERM for %s", p.Name, p.Pid(), grace)
	}
}

// Pause stops the process with SIGSTOP and, where /proc tells, waits
// until the kernel reports it stopped, so that nothing sent afterwards is
// answered. Resume continues it.
func (p *Proc) Pause() error {
	pid := p.Pid()
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		return fmt.Errorf("SIGSTOP %s (pid %d): %w", p.Name, pid, err)
	}
	if runtime.GOOS != "linux" {
		return nil
	}
	err := Poll(context.Background(), 10*time.Second, 5*time.Millisecond, func(context.Context) error {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		// The state is the field after the parenthesised command name.
		if i := bytes.LastIndexByte(b, ')'); err == nil && i > 0 && i+2 < len(b) && b[i+2] == 'T' {
			return nil
		}
		return fmt.Errorf("state not T: %q, %v", b, err)
	})
	if err != nil {
		return fmt.Errorf("%s (pid %d) not stopped 10s after SIGSTOP: %w", p.Name, pid, err)
	}
	return nil
}

// Resume continues a paused process with SIGCONT.
func (p *Proc) Resume() error { return p.cmd.Process.Signal(syscall.SIGCONT) }

// RSS is the resident set size of the process, from /proc.
func (p *Proc) RSS() (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.Pid()))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", p.Pid())
}

// Log is what the process wrote so far, stdout and stderr, after what
// earlier processes with the same log wrote.
func (p *Proc) Log() string {
	b, _ := os.ReadFile(p.LogPath)
	return string(b)
}

// LogTail is the last lines of Log.
func (p *Proc) LogTail(lines int) string { return Tail(p.Log(), lines) }

// Tail is the last lines of s, a log.
func Tail(s string, lines int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(l[max(0, len(l)-lines):], "\n")
}

// WaitUntil polls ready until it returns nil, the process exits or
// timeout passes; the error of the last two ends with the log's tail.
func (p *Proc) WaitUntil(ctx context.Context, timeout time.Duration, ready func(ctx context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-p.exited:
			cancel()
		case <-ctx.Done():
		}
	}()
	err := Poll(ctx, timeout, pollEvery, ready)
	switch {
	case err == nil:
		return nil
	case p.Exited():
		return fmt.Errorf("%s exited before it was ready (%v):\n%s", p.Name, p.waitErr, p.LogTail(50))
	default:
		return fmt.Errorf("%s not ready after %s: %v\n%s", p.Name, timeout, err, p.LogTail(50))
	}
}

// Poll calls cond, then again every interval, until it returns nil,
// timeout passes or ctx ends; it returns nil or cond's last error.
func Poll(ctx context.Context, timeout, interval time.Duration, cond func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := cond(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(interval):
		}
	}
}

// Probe is the HTTP client of readiness and health checks: a server that
// hangs must not stall a poll. It never goes through a proxy: nodes may
// be on private addresses.
var Probe = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil}}

// GetOK is a readiness check: a GET of url answers 200.
func GetOK(url string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := Probe.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return nil
	}
}

// Accepts is a readiness check: addr accepts TCP connections.
func Accepts(addr string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	}
}

// LookPath finds a server binary on the PATH.
func LookPath(bin string) (string, error) {
	p, err := exec.LookPath(bin)
	if err != nil {
		return "", fmt.Errorf("%s: %w", bin, ErrNotInstalled)
	}
	return p, nil
}
