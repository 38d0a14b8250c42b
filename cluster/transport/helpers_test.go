package transport

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/tokenstore/tokenstore/internal/testpki"
)

// Both protocols work on the one port, with and without mutual TLS: a real
// three-node Raft group forms over the muxes and the RPC server answers.

// raftNode is one member of a test Raft group built on a mux.
type raftNode struct {
	mux   *Mux
	trans *raft.NetworkTransport
	raft  *raft.Raft
	fsm   *countFSM
}

// startRaftCluster starts one Raft node per config (nil: plain TCP), all
// bootstrapped with the same configuration.
func startRaftCluster(t *testing.T, confs []*tls.Config) []*raftNode {
	t.Helper()
	nodes := make([]*raftNode, len(confs))
	var servers []raft.Server
	logs := make([]*testLogs, len(confs))
	for i, conf := range confs {
		m, l := newMux(t, conf)
		logs[i] = l
		nodes[i] = &raftNode{mux: m, trans: newTransport(t, m, l), fsm: &countFSM{}}
		servers = append(servers, raft.Server{
			ID: raft.ServerID(fmt.Sprintf("node%d", i)), Address: nodes[i].trans.LocalAddr(), Suffrage: raft.Voter,
		})
	}
	for i, n := range nodes {
		rc := raft.DefaultConfig()
		rc.LocalID = servers[i].ID
		rc.Logger = logs[i].hclog(string(rc.LocalID))
		// Raft's default timeouts (1s) tolerate a loaded machine and the
		// race detector's slow TLS handshakes; only the commit wait shrinks.
		rc.CommitTimeout = 5 * time.Millisecond
		store, snaps := raft.NewInmemStore(), raft.NewInmemSnapshotStore()
		if err := raft.BootstrapCluster(rc, store, store, snaps, n.trans, raft.Configuration{Servers: servers}); err != nil {
			t.Fatalf("bootstrap %s: %v", rc.LocalID, err)
		}
		r, err := raft.NewRaft(rc, n.fsm, store, store, snaps, n.trans)
		if err != nil {
			t.Fatalf("start raft %s: %v", rc.LocalID, err)
		}
		n.raft = r
		t.Cleanup(func() {
			if err := r.Shutdown().Error(); err != nil {
				t.Errorf("shut down raft: %v", err)
			}
		})
	}
	return nodes
}

// countFSM counts applied entries.
type countFSM struct{ applied atomic.Uint64 }

func (f *countFSM) Apply(*raft.Log) any { return f.applied.Add(1) }

func (f *countFSM) Snapshot() (raft.FSMSnapshot, error) { return countSnapshot(f.applied.Load()), nil }

func (f *countFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var n uint64
	if err := binary.Read(rc, binary.BigEndian, &n); err != nil {
		return fmt.Errorf("restore count: %w", err)
	}
	f.applied.Store(n)
	return nil
}

type countSnapshot uint64

func (s countSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := binary.Write(sink, binary.BigEndian, uint64(s)); err != nil {
		sink.Cancel()
		return fmt.Errorf("persist count: %w", err)
	}
	return sink.Close()
}

func (countSnapshot) Release() {}

func newMux(t *testing.T, conf *tls.Config) (*Mux, *testLogs) {
	t.Helper()
	logs := newTestLogs(t)
	m, err := Listen("127.0.0.1:0", nil, conf, logs.slog())
	if err != nil {
		t.Fatalf("listen mux: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("close mux: %v", err)
		}
	})
	return m, logs
}

// newTransport builds m's Raft transport; cleanup closes its pooled
// connections too, so the peers' connection handlers end.
func newTransport(t *testing.T, m *Mux, logs *testLogs) *raft.NetworkTransport {
	t.Helper()
	trans := m.RaftTransport(logs.hclog("raft-net"))
	t.Cleanup(func() {
		trans.CloseStreams()
		trans.Close()
	})
	return trans
}

func loadTLS(t *testing.T, f testpki.Files) *tls.Config {
	t.Helper()
	conf, err := LoadTLS(TLSFiles(f))
	if err != nil {
		t.Fatalf("load TLS: %v", err)
	}
	return conf
}

// withoutLoadCheck is base with f's certificate, which LoadTLS would refuse.
func withoutLoadCheck(t *testing.T, base *tls.Config, f testpki.Files) *tls.Config {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		t.Fatalf("load key pair: %v", err)
	}
	conf := base.Clone()
	conf.Certificates = []tls.Certificate{cert}
	return conf
}

// serveOK answers every RPC request with "ok".
func serveOK(t *testing.T, m *Mux) { serveRPC(t, m, okHandler) }

var okHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })

// serveRPC serves h on m's RPC protocol until the test ends.
func serveRPC(t *testing.T, m *Mux, h http.Handler) {
	t.Helper()
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(m.RPCListener()) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("rpc server: %v; want http.ErrServerClosed", err)
		}
	})
}

// rpcGet fetches / from to's RPC server, dialing through from; an answer
// other than 200 is an error.
func rpcGet(from *Mux, to net.Addr) (string, error) {
	code, body, err := rpcFetch(from, to)
	if err == nil && code != http.StatusOK {
		err = fmt.Errorf("rpc answered %d: %s", code, body)
	}
	return body, err
}

// rpcFetch fetches / from to's RPC server, dialing through from.
func rpcFetch(from *Mux, to net.Addr) (int, string, error) {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
		return from.DialRPC(ctx, addr)
	}}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + to.String() + "/")
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// answerRPCs grants every Raft RPC that reaches trans and counts them.
func answerRPCs(t *testing.T, trans *raft.NetworkTransport) *atomic.Int64 {
	t.Helper()
	var n atomic.Int64
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case rpc := <-trans.Consumer():
				n.Add(1)
				rpc.Respond(&raft.RequestVoteResponse{Term: 1, Granted: true}, nil)
			case <-stop:
				return
			}
		}
	}()
	t.Cleanup(func() {
		close(stop)
		<-done
	})
	return &n
}

func requestVote(trans *raft.NetworkTransport, target net.Addr) error {
	var resp raft.RequestVoteResponse
	return trans.RequestVote("peer", raft.ServerAddress(target.String()), &raft.RequestVoteRequest{Term: 1}, &resp)
}

// dialRaw opens a connection to addr without a protocol byte, over TLS
// when conf is set.
func dialRaw(t *testing.T, addr net.Addr, conf *tls.Config) net.Conn {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	var c net.Conn
	var err error
	if conf != nil {
		c, err = tls.DialWithDialer(d, "tcp", addr.String(), conf)
	} else {
		c, err = d.Dial("tcp", addr.String())
	}
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// muxGoroutines counts goroutines running the mux's code.
func muxGoroutines() int {
	buf := make([]byte, 1<<16)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		if bytes.Contains(g, []byte("tokenstore/cluster/transport.(*Mux)")) {
			count++
		}
	}
	return count
}

// waitUntil polls cond until it holds, failing the test after 30s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("timed out after 30s waiting for %s", what)
		case <-tick.C:
		}
	}
}

// testLogs collects what a mux and Raft log, for assertions, and prints it
// if the test fails.
type testLogs struct {
	mu   sync.Mutex
	text bytes.Buffer
	recs []logRecord
}

type logRecord struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

func newTestLogs(t *testing.T) *testLogs {
	l := &testLogs{}
	t.Cleanup(func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if t.Failed() && l.text.Len() > 0 {
			t.Logf("logs:\n%s", l.text.String())
		}
	})
	return l
}

// Write takes Raft's text log.
func (l *testLogs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.text.Write(p)
}

func (l *testLogs) slog() *slog.Logger { return slog.New(&recordHandler{logs: l}) }

func (l *testLogs) hclog(name string) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Info, Output: l})
}

// find returns the records at level whose message contains msg.
func (l *testLogs) find(level slog.Level, msg string) []logRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []logRecord
	for _, r := range l.recs {
		if r.level == level && strings.Contains(r.msg, msg) {
			out = append(out, r)
		}
	}
	return out
}

type recordHandler struct {
	logs  *testLogs
	attrs []slog.Attr
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	rec := logRecord{level: r.Level, msg: r.Message, attrs: make(map[string]string)}
	for _, a := range h.attrs {
		rec.attrs[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool {
		rec.attrs[a.Key] = a.Value.String()
		return true
	})
	h.logs.mu.Lock()
	defer h.logs.mu.Unlock()
	h.logs.recs = append(h.logs.recs, rec)
	fmt.Fprintf(&h.logs.text, "%s %s %v\n", rec.level, rec.msg, rec.attrs)
	return nil
}

func (h *recordHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &recordHandler{logs: h.logs, attrs: append(slices.Clip(h.attrs), as...)}
}

// WithGroup is not needed: the mux logs no groups.
func (h *recordHandler) WithGroup(string) slog.Handler { return h }
