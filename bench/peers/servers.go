package peers

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tokenstore/tokenstore/internal/proccluster"
)

// Server is a set of peer processes the bench started.
type Server struct {
	Name  string
	Addrs []string // client addresses, host:port
	Procs []*proccluster.Proc
}

// Stop ends the processes by pid.
func (s *Server) Stop() {
	for _, p := range s.Procs {
		p.Stop(30 * time.Second)
	}
}

// procs are the processes, for their CPU time.
func (s *Server) procs() []*proccluster.Proc { return s.Procs }

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
	bin, err := proccluster.LookPath("etcd")
	if err != nil {
		return nil, err
	}
	addrs, err := proccluster.FreeAddrs(2 * members)
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
		p, err := proccluster.StartProc(dir, "etcd-"+name, bin, "--name", name, "--data-dir", filepath.Join(dir, "etcd-"+name),
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
		if err := p.WaitUntil(ctx, time.Minute, proccluster.GetOK("http://"+s.Addrs[i]+"/health")); err != nil {
			s.Stop()
			return nil, err
		}
	}
	return s, nil
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
	if bin, err = proccluster.LookPath(name); err != nil {
		return "", "", "", err
	}
	addrs, err := proccluster.FreeAddrs(1)
	if err != nil {
		return "", "", "", err
	}
	_, port, _ = strings.Cut(addrs[0], ":")
	return bin, addrs[0], port, nil
}

// startOne starts one server process listening at addr and waits until it
// accepts connections.
func startOne(ctx context.Context, dir, name, addr, bin string, args ...string) (*Server, error) {
	p, err := proccluster.StartProc(dir, name, bin, args...)
	if err != nil {
		return nil, err
	}
	s := &Server{Name: name, Addrs: []string{addr}, Procs: []*proccluster.Proc{p}}
	if err := p.WaitUntil(ctx, 30*time.Second, proccluster.Accepts(addr)); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// StartMemcached starts one memcached server, as the nonce store of a
// tokenstore node would run.
func StartMemcached(ctx context.Context, dir string) (*Server, error) {
	m, err := proccluster.StartMemcached(ctx, dir, "-t", "2", "-m", "256")
	if err != nil {
		return nil, err
	}
	return &Server{Name: "memcached", Addrs: []string{m.Addr}, Procs: []*proccluster.Proc{m.Proc()}}, nil
}
