package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"

	"github.com/tokenstore/tokenstore/fsm"
)

// Node-to-node calls ride HTTP over the RPC protocol of the node's one
// port (Mux), so they share its mutual TLS with Raft. A follower forwards
// writes (one or a batch per call) and leader reads to the leader here;
// any node answers status.
const (
	rpcApply      = "/rpc/v1/apply"
	rpcApplyBatch = "/rpc/v1/apply-batch"
	rpcReadIndex  = "/rpc/v1/read-index"
	rpcRead       = "/rpc/v1/read"
	rpcStatus     = "/rpc/v1/status"

	// maxRPCBody bounds what one RPC may send: a command is far smaller
	// (a record's data is at most 8 KiB).
	maxRPCBody = 1 << 20
	// maxRPCReply bounds what a node reads of a peer's answer: a batch of
	// forwarded writes is answered with every write's records.
	maxRPCReply = 16 << 20
)

// The node-to-node calls a node serves, by version, reported in its
// status (statusReply.RPC): a follower uses a call only with a leader
// that reports knowing it.
const (
	// rpcVersionBase is the first release's: one forwarded write per call.
	// A node of that release reports no version.
	rpcVersionBase = 1
	// rpcVersionBatch adds rpcApplyBatch.
	rpcVersionBatch = 2
	// rpcVersion is what this build serves.
	rpcVersion = rpcVersionBatch
)

type applyArgs struct {
	Req   string `codec:"q"`
	Entry []byte `codec:"e"`
}

// applyBatchArgs is a batch of forwarded writes; the leader answers one
// rpcReply per write, in order.
type applyBatchArgs struct {
	Writes []applyArgs `codec:"w"`
}

type applyBatchReply struct {
	Replies []rpcReply `codec:"r"`
}

type readArgs struct {
	Hash     string `codec:"h"`
	MinIndex uint64 `codec:"m"`
}

// rpcReply carries a result or the cluster error that prevented one, by
// name, so errors.Is works on the forwarding side as if local.
type rpcReply struct {
	Index uint64 `codec:"i"`
	fsm.Outcome
	Fail string `codec:"f,omitempty"` // clusterErrName of what failed
}

type statusReply struct {
	ID      string `codec:"id"`
	State   string `codec:"s"`
	Applied uint64 `codec:"a"`
	Commit  uint64 `codec:"c"`
	// Now is the node's wall clock, unix nanos, Types the command types
	// it knows, Version its fsm.Version and RPC the node-to-node calls
	// it serves (rpcVersion); a node of the first release sends none of
	// them.
	Now     int64   `codec:"n,omitempty"`
	Types   []uint8 `codec:"t,omitempty"`
	Version uint8   `codec:"v,omitempty"`
	RPC     uint8   `codec:"p,omitempty"`
}

var rpcHandle = &codec.MsgpackHandle{}

// Bodies of node-to-node calls are encoded and decoded with pooled codec
// state, and read into pooled buffers: a call carries up to a batch of
// writes, and its answer their records. Decoding copies out what it
// keeps (strings and byte slices alike), so a buffer goes back to its
// pool once its body is decoded.
var (
	rpcEncoders = sync.Pool{New: func() any {
		e := &rpcEncoder{buf: make([]byte, 0, 4096)}
		e.enc = codec.NewEncoderBytes(&e.buf, rpcHandle)
		return e
	}}
	rpcDecoders = sync.Pool{New: func() any { return codec.NewDecoderBytes(noRPCBody, rpcHandle) }}
	rpcBufs     = sync.Pool{New: func() any { return new(bytes.Buffer) }}
	noRPCBody   = []byte{}
)

// maxPooledRPCBuf bounds the buffers the pools keep: a larger body is
// rare, and its buffer is left to the collector.
const maxPooledRPCBuf = maxRPCBody

type rpcEncoder struct {
	enc *codec.Encoder
	buf []byte
}

// withEncoded encodes v into a pooled buffer and calls f with it; the
// buffer is reused once f returns.
func withEncoded(v any, f func([]byte)) error {
	e := rpcEncoders.Get().(*rpcEncoder)
	var err error
	if fast, ok := appendFastRPC(e.buf[:0], v); ok {
		e.buf = fast
	} else {
		e.enc.ResetBytes(&e.buf)
		err = e.enc.Encode(v)
	}
	if err == nil {
		f(e.buf)
	}
	if cap(e.buf) <= maxPooledRPCBuf {
		e.buf = e.buf[:0]
		rpcEncoders.Put(e)
	}
	return err
}

// encodeRPC returns v encoded as a node-to-node body, in a slice of its
// own.
func encodeRPC(v any) ([]byte, error) {
	var out []byte
	err := withEncoded(v, func(b []byte) { out = bytes.Clone(b) })
	return out, err
}

// readBody reads r into a pooled buffer, sized at once when the length
// is known; putBody returns the buffer.
func readBody(r io.Reader, length int64) (*bytes.Buffer, error) {
	buf := rpcBufs.Get().(*bytes.Buffer)
	buf.Reset()
	if length > 0 && length <= maxPooledRPCBuf {
		buf.Grow(int(length) + bytes.MinRead) // ReadFrom wants room to see EOF
	}
	_, err := buf.ReadFrom(r)
	return buf, err
}

func putBody(buf *bytes.Buffer) {
	if buf.Cap() <= maxPooledRPCBuf+bytes.MinRead {
		rpcBufs.Put(buf)
	}
}

// clusterErrs names the cluster errors that cross the wire.
var clusterErrs = map[string]error{
	"not_leader":      ErrNotLeader,
	"no_leader":       ErrNoLeader,
	"outcome_unknown": ErrOutcomeUnknown,
	"shutdown":        ErrShutdown,
	"busy":            ErrBusy,
	"behind":          ErrBehind,
	"unsupported":     ErrUnsupported,
}

// refusedPrefix starts the name of ErrRefused on the wire; the reason follows.
const refusedPrefix = "refused: "

// refused makes err, which failed the checks, an ErrRefused, unless it is
// for now only (ErrUnsupported).
func refused(err error) error {
	if errors.Is(err, ErrRefused) || errors.Is(err, ErrUnsupported) {
		return err
	}
	return fmt.Errorf("%w: %v", ErrRefused, err)
}

func clusterErrName(err error) string {
	if errors.Is(err, ErrRefused) {
		return refusedPrefix + err.Error()
	}
	if errors.Is(err, ErrHalted) {
		return "halted"
	}
	for name, e := range clusterErrs {
		if errors.Is(err, e) {
			return name
		}
	}
	return "internal: " + err.Error()
}

// remoteErr turns a failure named by the leader back into its sentinel. A
// leader shutting down is a leader going away: for the caller, no leader.
func remoteErr(name string) error {
	if reason, ok := strings.CutPrefix(name, refusedPrefix); ok {
		return fmt.Errorf("%w by the leader: %s", ErrRefused, strings.TrimPrefix(reason, ErrRefused.Error()+": "))
	}
	if name == "halted" {
		return fmt.Errorf("%w on the leader", ErrHalted)
	}
	switch e, ok := clusterErrs[name]; {
	case !ok:
		return fmt.Errorf("leader: %s", name)
	case errors.Is(e, ErrShutdown):
		return fmt.Errorf("%w: the leader is shutting down", ErrNoLeader)
	default:
		return fmt.Errorf("%w (reported by the leader)", e)
	}
}

// rpcServer serves the node-to-node calls.
func (n *Node) rpcServer() *http.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+rpcApply, func(w http.ResponseWriter, r *http.Request) {
		var args applyArgs
		if !readRPC(w, r, &args) {
			return
		}
		p, err := n.queueForwarded(r.Context(), r.RemoteAddr, args)
		if err != nil {
			writeRPC(w, resultReply(fsm.Result{}, 0, err))
			return
		}
		// The leader applies once; retrying is the forwarding node's job,
		// under the same request id.
		res, index, err := n.await(r.Context(), p)
		writeRPC(w, resultReply(res, index, err))
	})
	mux.HandleFunc("POST "+rpcApplyBatch, func(w http.ResponseWriter, r *http.Request) {
		if n.servesRPC() < rpcVersionBatch {
			http.NotFound(w, r)
			return
		}
		var args applyBatchArgs
		err := readRPCBody(w, r, &args)
		if err == nil {
			err = checkBatch(&args)
		}
		if err != nil {
			if tooMany := errTooMany(0); errors.As(err, &tooMany) {
				n.metrics.refused.Add(float64(tooMany))
				n.log.Warn("refused a batch of forwarded writes", "remote", r.RemoteAddr, "err", err)
			}
			http.Error(w, "bad rpc body: "+err.Error(), http.StatusBadRequest)
			return
		}
		writeRPC(w, n.applyForwardedBatch(r.Context(), r.RemoteAddr, args.Writes))
	})
	mux.HandleFunc("POST "+rpcReadIndex, func(w http.ResponseWriter, r *http.Request) {
		index, err := n.readIndex(r.Context())
		writeRPC(w, resultReply(fsm.Result{}, index, err))
	})
	mux.HandleFunc("POST "+rpcRead, func(w http.ResponseWriter, r *http.Request) {
		var args readArgs
		if !readRPC(w, r, &args) {
			return
		}
		rec, index, err := n.leaderRead(r.Context(), args.Hash, args.MinIndex)
		writeRPC(w, resultReply(fsm.Result{Record: rec}, index, err))
	})
	mux.HandleFunc("GET "+rpcStatus, func(w http.ResponseWriter, r *http.Request) {
		writeRPC(w, n.localStatus())
	})
	return &http.Server{Handler: n.mux.PeersOnly(mux), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
}

// queueForwarded admits a write a peer forwarded and queues it for the
// coalescer; a write it refuses is counted, logged and answered
// ErrRefused (or ErrUnsupported), each write of a batch alike.
func (n *Node) queueForwarded(ctx context.Context, remote string, args applyArgs) (*pending, error) {
	entry, err := admitForwarded(n.cfg.Check, args.Req, args.Entry)
	if err != nil {
		n.metrics.refused.Inc()
		n.log.Warn("refused a forwarded write", "remote", remote, "err", err)
		return nil, refused(err)
	}
	return n.enqueue(ctx, args.Req, entry)
}

// checkBatch refuses a batch larger than a follower sends.
func checkBatch(args *applyBatchArgs) error {
	if k := len(args.Writes); k > maxForwardBatch {
		return errTooMany(k)
	}
	return nil
}

// applyForwardedBatch admits and queues every write of a batch in order,
// so that they share the coalescer's log entries, then waits for each: a
// write refused fails alone.
func (n *Node) applyForwardedBatch(ctx context.Context, remote string, writes []applyArgs) *applyBatchReply {
	replies := make([]rpcReply, len(writes))
	queued := make([]*pending, len(writes))
	for i, args := range writes {
		p, err := n.queueForwarded(ctx, remote, args)
		if err != nil {
			replies[i] = *resultReply(fsm.Result{}, 0, err)
			continue
		}
		queued[i] = p
	}
	for i, p := range queued {
		if p != nil {
			res, index, err := n.await(ctx, p)
			replies[i] = *resultReply(res, index, err)
		}
	}
	return &applyBatchReply{Replies: replies}
}

func resultReply(res fsm.Result, index uint64, err error) *rpcReply {
	if err != nil {
		return &rpcReply{Fail: clusterErrName(err)}
	}
	return &rpcReply{Index: index, Outcome: res.Outcome()}
}

func readRPC(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := readRPCBody(w, r, v); err != nil {
		http.Error(w, "bad rpc body: "+err.Error(), http.StatusBadRequest)
		return false
	}
	return true
}

// readRPCBody reads and decodes r's body into v.
func readRPCBody(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := readBody(http.MaxBytesReader(w, r.Body, maxRPCBody), r.ContentLength)
	if err == nil {
		err = decodeRPC(body.Bytes(), v)
	}
	putBody(body)
	return err
}

// errTooMany refuses a call holding more writes or answers than one may
// (maxForwardBatch): the count it claims. It is not ErrRefused: on an
// answer, the writes may well have been applied.
type errTooMany int

func (e errTooMany) Error() string {
	return fmt.Sprintf("a batch of %d forwarded writes or answers, at most %d", int(e), maxForwardBatch)
}

// decodeRPC decodes the msgpack body of a node-to-node call into v.
func decodeRPC(body []byte, v any) error {
	if ok, tooMany := readFastRPC(body, v); ok {
		return nil
	} else if tooMany != 0 {
		return errTooMany(tooMany)
	}
	if body == nil {
		body = noRPCBody // a decoder reset to nil would read its last input
	}
	d := rpcDecoders.Get().(*codec.Decoder)
	d.ResetBytes(body)
	err := d.Decode(v)
	d.ResetBytes(noRPCBody) // keeps nothing of body
	rpcDecoders.Put(d)
	return err
}

func writeRPC(w http.ResponseWriter, v any) {
	err := withEncoded(v, func(b []byte) {
		w.Header().Set("Content-Type", "application/msgpack")
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		w.Write(b)
	})
	if err != nil {
		http.Error(w, "encode rpc reply: "+err.Error(), http.StatusInternalServerError)
	}
}

// rpcClient returns the HTTP client whose connections are RPC streams of
// the mux (mutual TLS when configured).
func (n *Node) rpcClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return n.mux.DialRPC(ctx, addr)
		},
		MaxIdleConnsPerHost: 128,
		IdleConnTimeout:     time.Minute,
	}}
}

// call makes one RPC to the node at raftAddr. A failure to reach it or to
// read its answer is errUnreachable: for a write, its outcome is unknown.
func (n *Node) call(ctx context.Context, raftAddr, path string, args, reply any) error {
	method, body := http.MethodGet, io.Reader(nil)
	if args != nil {
		// Not a pooled buffer: the transport may read a request's body
		// after Do has returned, and again to retry it.
		b, err := encodeRPC(args)
		if err != nil {
			return err
		}
		method, body = http.MethodPost, bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+raftAddr+path, body)
	if err != nil {
		return err
	}
	resp, err := n.rpc.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", errUnreachable, raftAddr, err)
	}
	defer resp.Body.Close()
	buf, err := readBody(io.LimitReader(resp.Body, maxRPCReply+1), resp.ContentLength)
	defer putBody(buf)
	b := buf.Bytes()
	if err != nil {
		return fmt.Errorf("%w: %s: %v", errUnreachable, raftAddr, err)
	}
	if len(b) > maxRPCReply {
		return fmt.Errorf("rpc %s on %s: an answer over %d bytes", path, raftAddr, maxRPCReply)
	}
	if resp.StatusCode == http.StatusNotFound {
		return fmt.Errorf("%w: rpc %s on %s", errNoRoute, path, raftAddr)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("rpc %s on %s: %s: %s", path, raftAddr, resp.Status, bytes.TrimSpace(b))
	}
	return decodeRPC(b, reply)
}

// callLeader is call to the leader, given up once this node has known no
// leader for noLeaderBound (a leader cut off may never answer).
func (n *Node) callLeader(ctx context.Context, raftAddr, path string, args, reply any) error {
	ctx, cancel := n.untilNoLeader(ctx)
	defer cancel()
	return n.call(ctx, raftAddr, path, args, reply)
}

// errUnreachable is returned when an RPC did not complete: what it asked
// may or may not have happened.
var errUnreachable = errors.New("node unreachable")

// errNoRoute is returned when the node called does not serve the call (a
// node of an earlier release): nothing was done.
var errNoRoute = errors.New("no such call")

// forward sends one command to the leader at raftAddr.
func (n *Node) forward(ctx context.Context, raftAddr, req string, entry []byte) (fsm.Result, uint64, error) {
	var reply rpcReply
	if err := n.callLeader(ctx, raftAddr, rpcApply, &applyArgs{Req: req, Entry: entry}, &reply); err != nil {
		if errors.Is(err, errUnreachable) {
			return fsm.Result{}, 0, fmt.Errorf("%w: forwarding to the leader: %v", ErrOutcomeUnknown, err)
		}
		return fsm.Result{}, 0, err
	}
	a := n.forwardedReply(&reply)
	return a.res, a.index, a.err
}

// forwardedReply is what the leader answered for one forwarded write.
func (n *Node) forwardedReply(reply *rpcReply) applied {
	if reply.Fail != "" {
		return applied{err: remoteErr(reply.Fail)}
	}
	n.metrics.forwarded.Inc()
	return applied{res: reply.Result(), index: reply.Index}
}
