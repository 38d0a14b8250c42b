package bench

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tokenstore/tokenstore/internal/freeport"
)

// probe answers readiness checks; a server that hangs must not stall a poll.
// It never goes through a proxy: the nodes may be on private addresses.
var probe = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil}}

// Server is a set of peer processes the bench started.
type Server struct {
	Name  string
	Addrs []string // client addresses, host:port
	Procs []*Proc
}

// Stop ends the processes by pid.
func (s *Server) Stop() {
	for _, p := range s.Procs {
		p.Stop(30 * time.Second)
	}
}

// RSS is the resident set size of each process.
func (s *Server) RSS() map[string]int64 {
	out := map[string]int64{}
	for _, p := range s.Procs {
		if b, err := p.RSS(); err == nil {
			out[p.Name] = b
		}
	}
	return out
}

// StartEtcd starts a members-member etcd cluster on loopback with its
// data in dir.
func StartEtcd(ctx context.Context, dir string, members int) (*Server, error) {
	bin, err := lookPath("etcd")
	if err != nil {
		return nil, err
	}
	addrs, err := freeport.Addrs(2 * members)
	if err != nil {
		return nil, err
	}
	var initial []string
	for i := range members {
		initial = append(initial, fmt.Sprintf("e%d=http://%s", i+1, addrs[2*i+1]))
	}
	s := &Server{Name: "etcd"}
	for i := range members {
		name, client, peer := fmt.Sprintf("e%d", i+1), addrs[2*i], addrs[2*i+1]
		p, err := startProc(dir, "etcd-"+name, bin, "--name", name, "--data-dir", filepath.Join(dir, "etcd-"+name),
			"--listen-client-urls", "http://"+client, "--advertise-client-urls", "http://"+client,
			"--listen-peer-urls", "http://"+peer, "--initial-advertise-peer-urls", "http://"+peer,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", "bench", "--logger", "zap", "--log-level", "warn",
			"--quota-backend-bytes", fmt.Sprint(8<<30))
		if err != nil {
			s.Stop()
			return nil, err
		}
		s.Procs = append(s.Procs, p)
		s.Addrs = append(s.Addrs, client)
	}
	for i, p := range s.Procs {
		url := "http://" + s.Addrs[i] + "/health"
		if err := p.waitUntil(ctx, time.Minute, func(ctx context.Context) error { return httpOK(ctx, url) }); err != nil {
			s.Stop()
			return nil, err
		}
	}
	return s, nil
}

// httpOK GETs url and wants 200.
func httpOK(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := probe.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}

// StartRedis starts one Redis server that fsyncs every write
// (appendonly, appendfsync always) and never snapshots, with its files in
// dir.
func StartRedis(ctx context.Context, dir string) (*Server, error) {
	bin, addr, port, err := onePort("redis-server")
	if err != nil {
		return nil, err
	}
	rdir := filepath.Join(dir, "redis")
	if err := os.MkdirAll(rdir, 0o700); err != nil {
		return nil, err
	}
	return startOne(ctx, dir, "redis", addr, bin, "--port", port, "--bind", "127.0.0.1", "--appendonly", "yes",
		"--appendfsync", "always", "--save", "", "--dir", rdir, "--daemonize", "no", "--protected-mode", "no")
}

// onePort finds a single-process peer's binary and a free loopback
// address, and its port, for it to listen on.
func onePort(name string) (bin, addr, port string, err error) {
	if bin, err = lookPath(name); err != nil {
		return "", "", "", err
	}
	addrs, err := freeport.Addrs(1)
	if err != nil {
		return "", "", "", err
	}
	_, port, _ = strings.Cut(addrs[0], ":")
	return bin, addrs[0], port, nil
}

// startOne starts one server process listening at addr and waits until it
// accepts connections.
func startOne(ctx context.Context, dir, name, addr, bin string, args ...string) (*Server, error) {
	p, err := startProc(dir, name, bin, args...)
	if err != nil {
		return nil, err
	}
	s := &Server{Name: name, Addrs: []string{addr}, Procs: []*Proc{p}}
	if err := p.waitUntil(ctx, 30*time.Second, func(ctx context.Context) error { return dialable(ctx, addr) }); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// StartMemcached starts one memcached server, as the nonce store of a
// tokenstore node would run.
func StartMemcached(ctx context.Context, dir string) (*Server, error) {
	bin, addr, port, err := onePort("memcached")
	if err != nil {
		return nil, err
	}
	args := []string{"-l", "127.0.0.1", "-p", port, "-U", "0", "-t", "2", "-m", "256"}
	if os.Geteuid() == 0 {
		args = append(args, "-u", "root") // memcached refuses root without it
	}
	return startOne(ctx, dir, "memcached", addr, bin, args...)
}
