package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"

	"github.com/tokenstore/tokenstore/fsm"
)

// Node-to-node calls ride HTTP over the RPC protocol of the node's one
// port (Mux), so they share its mutual TLS with Raft. A follower forwards
// writes and leader reads to the leader here; any node answers status.
const (
	rpcApply     = "/rpc/v1/apply"
	rpcReadIndex = "/rpc/v1/read-index"
	rpcRead      = "/rpc/v1/read"
	rpcStatus    = "/rpc/v1/status"

	// maxRPCBody bounds what one RPC may send: a command is far smaller
	// (a record's data is at most 8 KiB).
	maxRPCBody = 1 << 20
)

type applyArgs struct {
	Req   string `codec:"q"`
	Entry []byte `codec:"e"`
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
	// it knows, and Version its fsm.Version; a node of the first release
	// sends none of them.
	Now     int64   `codec:"n,omitempty"`
	Types   []uint8 `codec:"t,omitempty"`
	Version uint8   `codec:"v,omitempty"`
}

var rpcHandle = &codec.MsgpackHandle{}

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
		entry, err := admitForwarded(n.cfg.Check, args.Req, args.Entry)
		if err != nil {
			n.metrics.refused.Inc()
			n.log.Warn("refused a forwarded write", "remote", r.RemoteAddr, "err", err)
			writeRPC(w, resultReply(fsm.Result{}, 0, refused(err)))
			return
		}
		// The leader applies once; retrying is the forwarding node's job,
		// under the same request id.
		res, index, err := n.applyLocal(r.Context(), args.Req, entry)
		writeRPC(w, resultReply(res, index, err))
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

func resultReply(res fsm.Result, index uint64, err error) *rpcReply {
	if err != nil {
		return &rpcReply{Fail: clusterErrName(err)}
	}
	return &rpcReply{Index: index, Outcome: res.Outcome()}
}

func readRPC(w http.ResponseWriter, r *http.Request, v any) bool {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRPCBody))
	if err == nil {
		err = decodeRPC(body, v)
	}
	if err != nil {
		http.Error(w, "bad rpc body: "+err.Error(), http.StatusBadRequest)
		return false
	}
	return true
}

// decodeRPC decodes the msgpack body of a node-to-node call into v.
func decodeRPC(body []byte, v any) error {
	return codec.NewDecoderBytes(body, rpcHandle).Decode(v)
}

func writeRPC(w http.ResponseWriter, v any) {
	var b []byte
	if err := codec.NewEncoderBytes(&b, rpcHandle).Encode(v); err != nil {
		http.Error(w, "encode rpc reply: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/msgpack")
	w.Write(b)
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
		var b []byte
		if err := codec.NewEncoderBytes(&b, rpcHandle).Encode(args); err != nil {
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
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxRPCBody))
	if err != nil {
		return fmt.Errorf("%w: %s: %v", errUnreachable, raftAddr, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("rpc %s on %s: %s: %s", path, raftAddr, resp.Status, bytes.TrimSpace(b))
	}
	return codec.NewDecoderBytes(b, rpcHandle).Decode(reply)
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

// forward sends one command to the leader at raftAddr.
func (n *Node) forward(ctx context.Context, raftAddr, req string, entry []byte) (fsm.Result, uint64, error) {
	var reply rpcReply
	if err := n.callLeader(ctx, raftAddr, rpcApply, &applyArgs{Req: req, Entry: entry}, &reply); err != nil {
		if errors.Is(err, errUnreachable) {
			return fsm.Result{}, 0, fmt.Errorf("%w: forwarding to the leader: %v", ErrOutcomeUnknown, err)
		}
		return fsm.Result{}, 0, err
	}
	if reply.Fail != "" {
		return fsm.Result{}, 0, remoteErr(reply.Fail)
	}
	n.metrics.forwarded.Inc()
	return reply.Result(), reply.Index, nil
}
