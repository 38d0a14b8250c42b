package proccluster

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"time"
)

// Memcached is a memcached process on a loopback port.
type Memcached struct {
	Addr     string // host:port
	proc     *Proc
	bin, dir string
	args     []string
}

// StartMemcached runs memcached on a free 127.0.0.1 port, its log in dir
// and args after those that place it, and waits until it accepts
// connections.
func StartMemcached(ctx context.Context, dir string, args ...string) (*Memcached, error) {
	bin, err := LookPath("memcached")
	if err != nil {
		return nil, err
	}
	addrs, err := FreeAddrs(1)
	if err != nil {
		return nil, err
	}
	m := &Memcached{Addr: addrs[0], bin: bin, dir: dir, args: slices.Clone(args)}
	if err := m.Restart(ctx); err != nil {
		return nil, err
	}
	return m, nil
}

// Restart starts the process again on the same address, after Kill or
// Stop; it fails with ErrRunning while the last process runs.
func (m *Memcached) Restart(ctx context.Context) error {
	if m.proc != nil && !m.proc.Exited() {
		return fmt.Errorf("start memcached on %s: %w (pid %d)", m.Addr, ErrRunning, m.proc.Pid())
	}
	_, port, _ := net.SplitHostPort(m.Addr)
	args := append([]string{"-l", "127.0.0.1", "-p", port, "-U", "0"}, m.args...)
	if os.Geteuid() == 0 {
		args = append(args, "-u", "root") // memcached refuses root without it
	}
	p, err := StartProc(m.dir, "memcached", m.bin, args...)
	if err != nil {
		return err
	}
	m.proc = p
	if err := p.WaitUntil(ctx, 30*time.Second, Accepts(m.Addr)); err != nil {
		p.Kill()
		return err
	}
	return nil
}

// Proc is the process of the last start.
func (m *Memcached) Proc() *Proc { return m.proc }

// Pid is the process id of the last start.
func (m *Memcached) Pid() int { return m.proc.Pid() }

// Kill ends the process with SIGKILL.
func (m *Memcached) Kill() { m.proc.Kill() }

// Stop ends the process with SIGTERM, SIGKILL after grace.
func (m *Memcached) Stop(grace time.Duration) error { return m.proc.Stop(grace) }

// Pause stops the process with SIGSTOP (see Proc.Pause); Resume
// continues it.
func (m *Memcached) Pause() error { return m.proc.Pause() }

// Resume continues a paused process with SIGCONT.
func (m *Memcached) Resume() error { return m.proc.Resume() }

// Router is one `tokenstore route` process on free loopback ports.
type Router struct {
	Addr, Admin string // the proxy's and the admin endpoints' host:port
	*Proc
}

// StartRouter runs bin (tokenstore) route with args, its log in
// dir/route.log, and waits until its /readyz answers 200: the primary DC
// is known.
func StartRouter(ctx context.Context, bin, dir string, args ...string) (*Router, error) {
	addrs, err := FreeAddrs(2)
	if err != nil {
		return nil, err
	}
	r := &Router{Addr: addrs[0], Admin: addrs[1]}
	args = append([]string{"route", "--listen", r.Addr, "--admin-listen", r.Admin}, args...)
	if r.Proc, err = StartProc(dir, "route", bin, args...); err != nil {
		return nil, err
	}
	if err := r.WaitUntil(ctx, 30*time.Second, GetOK("http://"+r.Admin+"/readyz")); err != nil {
		r.Kill()
		return nil, err
	}
	return r, nil
}

// Echo is one `tokenstore-bench echo` upstream on a free loopback port:
// it answers every request with its DC.
type Echo struct {
	Addr string // host:port
	*Proc
}

// StartEcho runs bin (tokenstore-bench) echo for dc, its log in
// dir/echo.log, and waits until it answers naming dc.
func StartEcho(ctx context.Context, bin, dir, dc string) (*Echo, error) {
	addrs, err := FreeAddrs(1)
	if err != nil {
		return nil, err
	}
	e := &Echo{Addr: addrs[0]}
	if e.Proc, err = StartProc(dir, "echo", bin, "echo", "--listen", e.Addr, "--dc", dc); err != nil {
		return nil, err
	}
	err = e.WaitUntil(ctx, 30*time.Second, func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+e.Addr+"/", nil)
		if err != nil {
			return err
		}
		resp, err := Probe.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if got := resp.Header.Get("X-Upstream-DC"); got != dc {
			return fmt.Errorf("X-Upstream-DC %q, want %q", got, dc)
		}
		return nil
	})
	if err != nil {
		e.Kill()
		return nil, err
	}
	return e, nil
}
