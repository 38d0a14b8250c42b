package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// The first byte of every node-to-node connection (inside TLS when it is
// on) selects the protocol, so Raft and RPC share the one Raft port.
// Neither value is 0x16, the first byte of a TLS record, so a TLS client
// reaching a plain-TCP port is refused as an unknown protocol.
const (
	protoRaft byte = 0x01
	protoRPC  byte = 0x02
)

// handshakeTimeout bounds the TLS handshake and the protocol byte, so a
// silent peer holds one goroutine for at most this long.
const handshakeTimeout = 10 * time.Second

// Mux is a node's one listener for Raft and RPC. Closing the Raft transport
// or the RPC server closes only its sub-listener; close them before the Mux
// so that neither sees accept errors while it still runs.
type Mux struct {
	ln   net.Listener
	addr net.Addr
	tls  *tls.Config
	log  *slog.Logger
	raft *raftLayer
	rpc  *subListener

	mu      sync.Mutex
	closed  bool
	pending map[net.Conn]struct{} // accepted, protocol not known yet

	closing   chan struct{}
	closeOnce sync.Once
	closeErr  error
	wg        sync.WaitGroup
}

// Listen binds addr ("127.0.0.1:0" allowed) and returns the mux on it. advertise, when non-nil, is
// the address peers dial and must be a specific IP; by default it is the
// bound address. tlsConf nil means plain TCP; otherwise it is used for both
// accepted and dialed connections (see LoadTLS). A nil logger means
// slog.Default().
func Listen(addr string, advertise net.Addr, tlsConf *tls.Config, logger *slog.Logger) (*Mux, error) {
	if logger == nil {
		logger = slog.Default()
	}
	if advertise != nil {
		if err := checkAdvertisable(advertise); err != nil {
			return nil, fmt.Errorf("advertise address %s: %w", advertise, err)
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for raft and rpc on %s: %w", addr, err)
	}
	if advertise == nil {
		advertise = ln.Addr()
		if err := checkAdvertisable(advertise); err != nil {
			ln.Close()
			return nil, fmt.Errorf("bound address %s needs an advertise address: %w", advertise, err)
		}
	}
	m := &Mux{
		ln:      ln,
		addr:    advertise,
		tls:     tlsConf,
		log:     logger.With("raft_addr", advertise.String()),
		pending: make(map[net.Conn]struct{}),
		closing: make(chan struct{}),
	}
	m.raft = &raftLayer{subListener: newSubListener("raft", advertise), mux: m}
	m.rpc = newSubListener("rpc", advertise)
	m.wg.Go(m.acceptLoop)
	return m, nil
}

func checkAdvertisable(a net.Addr) error {
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		return errors.New("must be an IP address peers can reach")
	}
	return nil
}

// Addr returns the advertised address.
func (m *Mux) Addr() net.Addr { return m.addr }

// RPCListener returns the listener for connections that began with the RPC
// byte, for http.Server.Serve. Its Close closes only the RPC side.
func (m *Mux) RPCListener() net.Listener { return m.rpc }

// RaftTransport builds Raft's network transport on the mux.
func (m *Mux) RaftTransport(logger hclog.Logger) *raft.NetworkTransport {
	return raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:          m.raft,
		MaxPool:         3,
		MaxRPCsInFlight: maxRPCsInFlight,
		Timeout:         10 * time.Second,
		Logger:          logger,
	})
}

// DialRPC connects to a peer's RPC protocol at addr, over TLS if configured.
func (m *Mux) DialRPC(ctx context.Context, addr string) (net.Conn, error) {
	return m.dial(ctx, addr, protoRPC)
}

// Close stops accepting. Accept on both sub-listeners returns an error
// wrapping net.ErrClosed afterwards. Connections already handed out stay
// open: they belong to whoever accepted them. Close is idempotent.
func (m *Mux) Close() error {
	m.closeOnce.Do(func() {
		m.mu.Lock()
		m.closed = true
		pending := m.pending
		m.pending = nil
		m.mu.Unlock()
		close(m.closing)
		if err := m.ln.Close(); err != nil {
			m.closeErr = fmt.Errorf("close listener %s: %w", m.ln.Addr(), err)
		}
		// Interrupts handshakes and protocol-byte reads in progress.
		for c := range pending {
			c.Close()
		}
		m.raft.Close()
		m.rpc.Close()
		m.wg.Wait()
	})
	return m.closeErr
}

func (m *Mux) acceptLoop() {
	var delay time.Duration
	for {
		conn, err := m.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// E.g. out of file descriptors: back off rather than spin.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			m.log.Warn("accept node connection", "err", err, "retry_in", delay)
			select {
			case <-m.closing:
				return
			case <-time.After(delay):
			}
			continue
		}
		delay = 0
		if !m.track(conn) {
			conn.Close()
			return
		}
		// The handshake runs apart so a slow peer never stalls the loop.
		m.wg.Go(func() { m.route(conn) })
	}
}

// track records conn as pending; false if the mux is closed.
func (m *Mux) track(conn net.Conn) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false
	}
	m.pending[conn] = struct{}{}
	return true
}

func (m *Mux) untrack(conn net.Conn) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.pending, conn)
}

// route completes the handshake, reads the protocol byte and hands the
// connection to the sub-listener it asked for.
func (m *Mux) route(raw net.Conn) {
	conn, proto, err := m.handshake(raw)
	m.untrack(raw)
	if err != nil {
		raw.Close()
		return
	}
	var sub *subListener
	switch proto {
	case protoRaft:
		sub = m.raft.subListener
	case protoRPC:
		sub = m.rpc
	default:
		m.log.Debug("unknown protocol byte, closing connection",
			"remote", raw.RemoteAddr().String(), "byte", fmt.Sprintf("0x%02x", proto))
		conn.Close()
		return
	}
	if !sub.deliver(conn, m.closing) {
		conn.Close()
	}
}

func (m *Mux) handshake(raw net.Conn) (net.Conn, byte, error) {
	if err := raw.SetDeadline(time.Now().Add(handshakeTimeout)); err != nil {
		return nil, 0, err
	}
	conn := raw
	if m.tls != nil {
		tc := tls.Server(raw, m.tls)
		if err := tc.Handshake(); err != nil {
			if !m.isClosed() {
				m.log.Warn("node-to-node TLS handshake failed",
					"remote", raw.RemoteAddr().String(), "err", err)
			}
			return nil, 0, err
		}
		conn = tc
	}
	var b [1]byte
	if _, err := io.ReadFull(conn, b[:]); err != nil {
		if !m.isClosed() {
			m.log.Debug("no protocol byte", "remote", raw.RemoteAddr().String(), "err", err)
		}
		return nil, 0, err
	}
	// The deadline was for the handshake only; the protocol sets its own.
	if err := raw.SetDeadline(time.Time{}); err != nil {
		return nil, 0, err
	}
	return conn, b[0], nil
}

func (m *Mux) isClosed() bool {
	select {
	case <-m.closing:
		return true
	default:
		return false
	}
}

func (m *Mux) dial(ctx context.Context, addr string, proto byte) (net.Conn, error) {
	if m.isClosed() {
		return nil, fmt.Errorf("dial %s: %w", addr, net.ErrClosed)
	}
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	conn := raw
	if m.tls != nil {
		tc := tls.Client(raw, m.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, fmt.Errorf("TLS handshake with %s: %w", addr, err)
		}
		conn = tc
	}
	if dl, ok := ctx.Deadline(); ok {
		if err := raw.SetWriteDeadline(dl); err != nil {
			conn.Close()
			return nil, fmt.Errorf("set deadline to %s: %w", addr, err)
		}
	}
	if _, err := conn.Write([]byte{proto}); err != nil {
		conn.Close()
		return nil, fmt.Errorf("send protocol byte to %s: %w", addr, err)
	}
	if err := raw.SetWriteDeadline(time.Time{}); err != nil {
		conn.Close()
		return nil, fmt.Errorf("clear deadline to %s: %w", addr, err)
	}
	return conn, nil
}

// subListener is the net.Listener for one protocol; the mux's connection
// goroutines hand it connections.
type subListener struct {
	name      string
	addr      net.Addr
	ch        chan net.Conn
	done      chan struct{}
	closeOnce sync.Once
}

func newSubListener(name string, addr net.Addr) *subListener {
	return &subListener{name: name, addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

// Accept waits for the next connection of this protocol.
func (s *subListener) Accept() (net.Conn, error) {
	// Checked first so that Accept after Close never yields a connection.
	select {
	case <-s.done:
		return nil, fmt.Errorf("accept %s connection: %w", s.name, net.ErrClosed)
	default:
	}
	select {
	case c := <-s.ch:
		return c, nil
	case <-s.done:
		return nil, fmt.Errorf("accept %s connection: %w", s.name, net.ErrClosed)
	}
}

// Close stops this protocol's Accept; the mux keeps serving the other.
func (s *subListener) Close() error {
	s.closeOnce.Do(func() { close(s.done) })
	return nil
}

// Addr returns the mux's advertised address.
func (s *subListener) Addr() net.Addr { return s.addr }

// deliver waits for Accept to take conn; false if this listener or the mux
// closed first.
func (s *subListener) deliver(conn net.Conn, closing <-chan struct{}) bool {
	select {
	case s.ch <- conn:
		return true
	case <-s.done:
		return false
	case <-closing:
		return false
	}
}

// raftLayer is the mux's raft.StreamLayer.
type raftLayer struct {
	*subListener
	mux *Mux
}

// Dial connects to a peer's Raft protocol, over TLS if configured.
func (r *raftLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx := context.Background()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	return r.mux.dial(ctx, string(address), protoRaft)
}

// maxRPCsInFlight is how many AppendEntries a leader has in flight to one
// follower (Raft's default is 2). A follower learns that an entry is
// committed only from a later AppendEntries; with two in flight over a
// 40 ms round trip, a follower in another DC learned it up to a round trip
// late under load, and a lookup with min_index after a write through it
// waited that long (BENCHMARKS.md, across datacenters). On loopback the
// deeper pipeline changed neither throughput nor CPU per write.
const maxRPCsInFlight = 16
