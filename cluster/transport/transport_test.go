package transport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/tokenstore/tokenstore/internal/testpki"
)

// Both protocols work on the one port, with and without mutual TLS: a real
// three-node Raft group forms over the muxes and the RPC server answers.
func TestMuxRaftAndRPC(t *testing.T) {
	for _, tc := range []struct {
		name string
		tls  bool
	}{
		{"plain TCP", false},
		{"mutual TLS", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			confs := make([]*tls.Config, 3)
			if tc.tls {
				ca := testpki.New(t)
				for i := range confs {
					confs[i] = loadTLS(t, ca.Issue(t, fmt.Sprintf("node%d", i)))
				}
			}
			nodes := startRaftCluster(t, confs)
			for _, n := range nodes {
				serveOK(t, n.mux)
			}

			// A loaded machine can cost the first leader its lease; retry
			// until one leader commits. The FSM's reply is the count every
			// node must reach (a lost attempt may have committed too).
			var want uint64
			waitUntil(t, "a leader to commit an entry", func() bool {
				for _, n := range nodes {
					if n.raft.State() != raft.Leader {
						continue
					}
					f := n.raft.Apply([]byte("+1"), 5*time.Second)
					if err := f.Error(); err != nil {
						t.Logf("apply on %s: %v; retrying", n.mux.Addr(), err)
						return false
					}
					want = f.Response().(uint64)
					return true
				}
				return false
			})
			for i, n := range nodes {
				waitUntil(t, fmt.Sprintf("node%d to apply %d entries", i, want), func() bool {
					return n.fsm.applied.Load() == want
				})
			}

			for _, from := range nodes {
				for _, to := range nodes {
					body, err := rpcGet(from.mux, to.mux.Addr())
					if err != nil || body != "ok" {
						t.Fatalf("RPC %s -> %s: got %q, %v; want \"ok\"", from.mux.Addr(), to.mux.Addr(), body, err)
					}
				}
			}
		})
	}
}

// Only peers holding a certificate from the cluster CA get through, in
// either direction; everyone else is cut off at the handshake.
func TestMuxRejectsUntrustedPeers(t *testing.T) {
	ca, other := testpki.New(t), testpki.New(t)
	goodConf := loadTLS(t, ca.Issue(t, "good"))
	good, goodLogs := newMux(t, goodConf)
	goodTrans := newTransport(t, good, goodLogs)
	goodVotes := answerRPCs(t, goodTrans)
	serveOK(t, good)

	// A member of the cluster gets through: the failures below are the
	// certificates' doing, not the harness's.
	friend, friendLogs := newMux(t, loadTLS(t, ca.Issue(t, "friend")))
	if err := requestVote(newTransport(t, friend, friendLogs), good.Addr()); err != nil {
		t.Fatalf("raft RPC from a cluster member: %v", err)
	}
	if body, err := rpcGet(friend, good.Addr()); err != nil || body != "ok" {
		t.Fatalf("RPC from a cluster member: got %q, %v; want \"ok\"", body, err)
	}

	noCert := goodConf.Clone()
	noCert.Certificates = nil
	for _, tc := range []struct {
		name string
		conf *tls.Config
	}{
		{"certificate from another CA", loadTLS(t, other.Issue(t, "intruder"))},
		{"certificate without client auth", withoutLoadCheck(t, goodConf, ca.IssueWithUsage(t, "server-only", x509.ExtKeyUsageServerAuth))},
		{"certificate without server auth", withoutLoadCheck(t, goodConf, ca.IssueWithUsage(t, "client-only", x509.ExtKeyUsageClientAuth))},
		{"no certificate", noCert},
		{"plain TCP", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			warned := len(goodLogs.find(slog.LevelWarn, "handshake failed"))
			m, logs := newMux(t, tc.conf)
			if err := requestVote(newTransport(t, m, logs), good.Addr()); err == nil {
				t.Errorf("raft RPC succeeded; want it rejected")
			}
			if body, err := rpcGet(m, good.Addr()); err == nil {
				t.Errorf("RPC got %q; want it rejected", body)
			}
			waitUntil(t, "the rejected handshake to be logged", func() bool {
				return len(goodLogs.find(slog.LevelWarn, "handshake failed")) > warned
			})
			rec := goodLogs.find(slog.LevelWarn, "handshake failed")[warned]
			if host, _, err := net.SplitHostPort(rec.attrs["remote"]); err != nil || host != "127.0.0.1" {
				t.Errorf("handshake warning has remote %q; want the peer's 127.0.0.1:port", rec.attrs["remote"])
			}
		})
	}
	if n := goodVotes.Load(); n != 1 {
		t.Errorf("raft RPCs reaching the good node: %d; want 1 (the member's)", n)
	}

	// The dialing side checks the server too: a server outside the CA gets
	// nothing from a cluster member, even one that would accept any client.
	impostor := loadTLS(t, other.Issue(t, "intruder-server"))
	impostor.ClientAuth = tls.RequireAnyClientCert
	impostor.VerifyConnection = nil
	intruder, intruderLogs := newMux(t, impostor)
	intruderVotes := answerRPCs(t, newTransport(t, intruder, intruderLogs))
	serveOK(t, intruder)
	if err := requestVote(goodTrans, intruder.Addr()); err == nil {
		t.Errorf("raft RPC to a server outside the CA succeeded; want it rejected")
	}
	if body, err := rpcGet(good, intruder.Addr()); err == nil {
		t.Errorf("RPC to a server outside the CA got %q; want it rejected", body)
	}
	if n := intruderVotes.Load(); n != 0 {
		t.Errorf("raft RPCs reaching the outside server: %d; want 0", n)
	}
}

func TestMuxUnknownProtocolByte(t *testing.T) {
	ca := testpki.New(t)
	for _, tc := range []struct {
		name           string
		server, client *tls.Config
	}{
		{name: "plain TCP"},
		{name: "mutual TLS", server: loadTLS(t, ca.Issue(t, "server")), client: loadTLS(t, ca.Issue(t, "client"))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, logs := newMux(t, tc.server)
			serveOK(t, m)
			conn := dialRaw(t, m.Addr(), tc.client)
			if _, err := conn.Write([]byte{0xff}); err != nil {
				t.Fatalf("write protocol byte: %v", err)
			}
			if err := conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
				t.Fatal(err)
			}
			n, err := conn.Read(make([]byte, 1))
			var ne net.Error
			switch {
			case err == nil:
				t.Fatalf("read %d bytes; want the connection closed", n)
			case errors.As(err, &ne) && ne.Timeout():
				t.Fatalf("connection still open after 5s; want it closed")
			}
			waitUntil(t, "the unknown byte to be logged", func() bool {
				for _, r := range logs.find(slog.LevelDebug, "unknown protocol byte") {
					if r.attrs["byte"] == "0xff" {
						return true
					}
				}
				return false
			})

			client, _ := newMux(t, tc.client)
			if body, err := rpcGet(client, m.Addr()); err != nil || body != "ok" {
				t.Fatalf("RPC after an unknown byte: got %q, %v; want \"ok\"", body, err)
			}
		})
	}
}

// Connections that never send anything must not hold up the others. The
// client's timeout (5s) is shorter than the handshake deadline (10s), so a
// blocked accept loop fails the test.
func TestMuxSilentConnectionDoesNotBlock(t *testing.T) {
	ca := testpki.New(t)
	for _, tc := range []struct {
		name           string
		server, client *tls.Config
	}{
		{name: "plain TCP"},
		{name: "mutual TLS", server: loadTLS(t, ca.Issue(t, "server")), client: loadTLS(t, ca.Issue(t, "client"))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, logs := newMux(t, tc.server)
			serveOK(t, m)
			answerRPCs(t, newTransport(t, m, logs))
			for range 3 {
				c, err := net.Dial("tcp", m.Addr().String())
				if err != nil {
					t.Fatalf("dial: %v", err)
				}
				t.Cleanup(func() { c.Close() })
			}

			client, clientLogs := newMux(t, tc.client)
			if body, err := rpcGet(client, m.Addr()); err != nil || body != "ok" {
				t.Fatalf("RPC behind silent connections: got %q, %v; want \"ok\"", body, err)
			}
			if err := requestVote(newTransport(t, client, clientLogs), m.Addr()); err != nil {
				t.Fatalf("raft RPC behind silent connections: %v", err)
			}
		})
	}
}

func TestMuxCloseUnblocksAccept(t *testing.T) {
	m, err := Listen("127.0.0.1:0", nil, nil, newTestLogs(t).slog())
	if err != nil {
		t.Fatalf("listen mux: %v", err)
	}
	errs := make(chan error, 2)
	for _, ln := range []net.Listener{m.raft, m.RPCListener()} {
		go func() {
			c, err := ln.Accept()
			if c != nil {
				c.Close()
			}
			errs <- err
		}()
	}
	if err := m.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	for range 2 {
		if err := <-errs; !errors.Is(err, net.ErrClosed) {
			t.Errorf("accept during close: %v; want net.ErrClosed", err)
		}
	}
	if err := m.Close(); err != nil {
		t.Errorf("second close: %v; want nil", err)
	}
	for name, ln := range map[string]net.Listener{"raft": m.raft, "rpc": m.RPCListener()} {
		if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("%s accept after close: %v; want net.ErrClosed", name, err)
		}
	}
	if _, err := m.DialRPC(context.Background(), "127.0.0.1:1"); !errors.Is(err, net.ErrClosed) {
		t.Errorf("dial after close: %v; want net.ErrClosed", err)
	}
}

// Close ends every goroutine of the mux, including those still in a
// handshake or waiting to hand a connection over, and closes their
// connections.
func TestMuxCloseLeavesNoGoroutines(t *testing.T) {
	if n := muxGoroutines(); n != 0 {
		t.Fatalf("%d mux goroutines before the test; want 0", n)
	}
	m, err := Listen("127.0.0.1:0", nil, nil, newTestLogs(t).slog())
	if err != nil {
		t.Fatalf("listen mux: %v", err)
	}
	silent, err := net.Dial("tcp", m.Addr().String())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer silent.Close()
	// Nobody accepts RPC connections: this one waits in hand-over.
	waiting, err := m.DialRPC(context.Background(), m.Addr().String())
	if err != nil {
		t.Fatalf("dial rpc: %v", err)
	}
	defer waiting.Close()
	waitUntil(t, "the accept loop and both connections' goroutines", func() bool { return muxGoroutines() == 3 })

	if err := m.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if n := muxGoroutines(); n != 0 {
		t.Errorf("%d mux goroutines after close; want 0", n)
	}
	for name, c := range map[string]net.Conn{"silent": silent, "waiting": waiting} {
		if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
			t.Fatal(err)
		}
		var ne net.Error
		if _, err := c.Read(make([]byte, 1)); err == nil || errors.As(err, &ne) && ne.Timeout() {
			t.Errorf("%s connection after close: read %v; want it closed", name, err)
		}
	}
}

// Raft's shutdown closes its stream layer; RPC must keep working.
func TestMuxSubListenerCloseIsIndependent(t *testing.T) {
	m, logs := newMux(t, nil)
	serveOK(t, m)
	if err := m.RaftTransport(logs.hclog("raft")).Close(); err != nil {
		t.Fatalf("close transport: %v", err)
	}
	if _, err := m.raft.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("raft accept after its close: %v; want net.ErrClosed", err)
	}
	client, clientLogs := newMux(t, nil)
	if body, err := rpcGet(client, m.Addr()); err != nil || body != "ok" {
		t.Fatalf("RPC after raft closed: got %q, %v; want \"ok\"", body, err)
	}
	if err := requestVote(newTransport(t, client, clientLogs), m.Addr()); err == nil {
		t.Errorf("raft RPC to a closed raft layer succeeded; want an error")
	}
}

func TestLoadTLS(t *testing.T) {
	ca, other := testpki.New(t), testpki.New(t)
	good := ca.Issue(t, "node")
	notPEM := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	serverOnly := ca.IssueWithUsage(t, "server-only", x509.ExtKeyUsageServerAuth)
	clientOnly := ca.IssueWithUsage(t, "client-only", x509.ExtKeyUsageClientAuth)
	for _, tc := range []struct {
		name    string
		files   TLSFiles
		wantErr string
	}{
		{"valid", TLSFiles(good), ""},
		{"missing certificate", TLSFiles{Cert: good.Cert + ".missing", Key: good.Key, CA: good.CA}, "load node certificate"},
		{"key of another certificate", TLSFiles{Cert: good.Cert, Key: serverOnly.Key, CA: good.CA}, "load node certificate"},
		{"missing CA", TLSFiles{Cert: good.Cert, Key: good.Key, CA: good.CA + ".missing"}, "read cluster CA"},
		{"CA file without a certificate", TLSFiles{Cert: good.Cert, Key: good.Key, CA: notPEM}, "no PEM certificate"},
		{"certificate from another CA", TLSFiles{Cert: good.Cert, Key: good.Key, CA: other.Issue(t, "x").CA}, "unknown authority"},
		{"certificate without client auth", TLSFiles(serverOnly), "key usage"},
		{"certificate without server auth", TLSFiles(clientOnly), "key usage"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conf, err := LoadTLS(tc.files)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("LoadTLS: %v; want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadTLS: %v", err)
			}
			if conf.MinVersion != tls.VersionTLS12 || conf.ClientAuth != tls.RequireAndVerifyClientCert || conf.VerifyConnection == nil {
				t.Errorf("config: min version %#x, client auth %v, verify connection set %v; want TLS 1.2, RequireAndVerifyClientCert, true",
					conf.MinVersion, conf.ClientAuth, conf.VerifyConnection != nil)
			}
		})
	}
}

// Two members agree on TLS 1.3 and see each other's certificate, with no
// server name involved.
func TestLoadTLSHandshake(t *testing.T) {
	ca := testpki.New(t)
	a, b := loadTLS(t, ca.Issue(t, "a")), loadTLS(t, ca.Issue(t, "b"))
	p1, p2 := net.Pipe()
	defer p1.Close()
	defer p2.Close()
	server, client := tls.Server(p1, a), tls.Client(p2, b)
	errs := make(chan error, 1)
	go func() { errs <- server.Handshake() }()
	if err := client.Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if err := <-errs; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	for side, cs := range map[string]tls.ConnectionState{"server": server.ConnectionState(), "client": client.ConnectionState()} {
		want := map[string]string{"server": "b", "client": "a"}[side]
		if cs.Version != tls.VersionTLS13 || len(cs.PeerCertificates) == 0 || cs.PeerCertificates[0].Subject.CommonName != want {
			t.Errorf("%s side: version %#x, peer certificates %d; want TLS 1.3 and peer %q", side, cs.Version, len(cs.PeerCertificates), want)
		}
	}
}

func TestListenAdvertise(t *testing.T) {
	adv := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2), Port: 7000}
	m, err := Listen("127.0.0.1:0", adv, nil, nil)
	if err != nil {
		t.Fatalf("listen with advertise %s: %v", adv, err)
	}
	t.Cleanup(func() { m.Close() })
	trans := m.RaftTransport(hclog.NewNullLogger())
	t.Cleanup(func() { trans.Close() })
	for name, got := range map[string]string{
		"mux": m.Addr().String(), "raft layer": m.raft.Addr().String(),
		"rpc listener": m.RPCListener().Addr().String(), "transport": string(trans.LocalAddr()),
	} {
		if got != adv.String() {
			t.Errorf("%s address %s; want %s", name, got, adv)
		}
	}

	for _, tc := range []struct {
		name string
		bind string
		adv  net.Addr
	}{
		{"unspecified advertise", "127.0.0.1:0", &net.TCPAddr{IP: net.IPv4zero, Port: 7000}},
		{"unspecified bind without advertise", "0.0.0.0:0", nil},
	} {
		if m, err := Listen(tc.bind, tc.adv, nil, nil); err == nil {
			m.Close()
			t.Errorf("%s: Listen succeeded; want an error", tc.name)
		}
	}
}
