package load

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/client"
	"github.com/tokenstore/tokenstore/token"
)

// Config describes one run of one workload against a running tokenstore.
type Config struct {
	// Addr is one node's API address, or several comma-separated:
	// requests are spread over them round-robin.
	Addr     string
	APIKey   string
	Workload string // one of Workloads
	Clients  int
	Duration time.Duration
	// Rate, when set, makes the run an open loop of Rate ops/s in total
	// with at most MaxInFlight requests outstanding (see Load).
	Rate        float64
	MaxInFlight int
	// Tokens is how many tokens consume and lookup issue before measuring.
	Tokens int
	// Memcached is the server the "memcached" workload adds to directly,
	// the peer of the "nonce" workload (which goes through the API).
	Memcached string
	// OAuthLookups is how many lookups of the access token one oauth
	// flow makes (default 3).
	OAuthLookups int
}

// Workloads lists what Run can drive.
var Workloads = []string{"issue", "consume", "rotate", "lookup", "lookup_leader", "introspect", "nonce", "memcached", "oauth", "oauth_batch"}

// PeerOps are the operations every system may have (a Target's methods).
var PeerOps = []string{"issue", "consume", "lookup", "nonce"}

func (c Config) load() Load {
	return Load{Clients: c.Clients, Duration: c.Duration, Rate: c.Rate, MaxInFlight: c.MaxInFlight}
}

// Run drives the workload against tokenstore (or, for "memcached", the
// memcached server) and reports latency percentiles. Progress lines go to
// progress once a second.
func Run(ctx context.Context, cfg Config, progress io.Writer) (*Result, error) {
	load := cfg.load()
	if err := load.Validate(); err != nil {
		return nil, err
	}
	if !slices.Contains(Workloads, cfg.Workload) {
		return nil, fmt.Errorf("bench: unknown workload %q (want one of %v)", cfg.Workload, Workloads)
	}
	system, t, err := runTarget(cfg)
	if err != nil {
		return nil, err
	}
	defer t.Close()
	var steps *stepSet
	var op Op
	switch ts, _ := t.(*Tokenstore); cfg.Workload {
	case "rotate":
		op, err = rotateOp(ctx, ts, cfg, progress)
	case "introspect":
		op, err = introspectOp(ctx, ts, cfg, progress)
	case "oauth", "oauth_batch":
		batch := cfg.Workload == "oauth_batch"
		steps = newStepSet(oauthSteps(batch))
		op = oauthOp(ts, cmpOr(cfg.OAuthLookups, 3), batch, steps)
	default:
		op, err = Prepare(ctx, t, targetOp(cfg.Workload), Prepared{Tokens: cfg.Tokens, Clients: cfg.Clients}, progress)
	}
	if err != nil {
		return nil, err
	}
	r := Drive(ctx, cfg.Workload, load, op, progress)
	r.System = system
	if steps != nil {
		r.Steps = steps.results(r)
	}
	return r, nil
}

// runTarget is the system a workload of Run drives.
func runTarget(cfg Config) (string, Target, error) {
	switch cfg.Workload {
	case "memcached":
		if cfg.Memcached == "" {
			return "", nil, fmt.Errorf("bench: the memcached workload needs --memcached host:port")
		}
		return "memcached", NewMemcached(cfg.Memcached, cfg.Clients), nil
	case "lookup_leader":
		t := NewTokenstore(cfg.Addr, cfg.APIKey, cfg.Clients)
		t.Consistency = wire.ConsistencyLeader
		return "tokenstore", t, nil
	}
	return "tokenstore", NewTokenstore(cfg.Addr, cfg.APIKey, cfg.Clients), nil
}

// targetOp maps a workload of Run to the Target operation it drives.
func targetOp(workload string) string {
	switch workload {
	case "lookup_leader":
		return "lookup"
	case "memcached":
		return "nonce"
	}
	return workload
}

// Prepared is what an operation has before measuring starts.
type Prepared struct {
	Tokens  int      // tokens to pre-issue for consume or lookup
	Clients int      // workers that pre-issue them
	Live    []string // tokens already issued, which lookup reads
}

// Prepare issues what op, one of PeerOps, needs on t and returns the
// timed operation.
func Prepare(ctx context.Context, t Target, op string, p Prepared, progress io.Writer) (Op, error) {
	switch op {
	case "issue":
		keys := newKeys()
		return func(ctx context.Context, _ int) error {
			_, err := t.Issue(ctx, keys.next())
			return err
		}, nil
	case "consume":
		toks, err := Preissue(ctx, t, p.Tokens, p.Clients, progress)
		if err != nil {
			return nil, err
		}
		return onceEach(toks, t.Consume), nil
	case "lookup":
		toks := p.Live
		if len(toks) == 0 {
			var err error
			if toks, err = Preload(ctx, t, p.Tokens, p.Clients, progress); err != nil {
				return nil, err
			}
		}
		var next atomic.Uint64
		return func(ctx context.Context, _ int) error {
			return t.Lookup(ctx, toks[int(next.Add(1)%uint64(len(toks)))])
		}, nil
	case "nonce":
		keys := newKeys()
		return func(ctx context.Context, _ int) error { return t.Nonce(ctx, keys.next()) }, nil
	}
	return nil, fmt.Errorf("bench: unknown operation %q (want one of %v)", op, PeerOps)
}

// keys makes keys unique across runs within their TTL.
type keys struct {
	prefix string
	seq    atomic.Int64
}

func newKeys() *keys {
	return &keys{prefix: "bench-" + strconv.FormatInt(time.Now().UnixNano(), 36) + "-"}
}

func (k *keys) next() string { return k.prefix + strconv.FormatInt(k.seq.Add(1), 36) }

// onceEach returns an operation that hands each token to op once, until
// they run out.
func onceEach(toks []string, op func(ctx context.Context, tok string) error) Op {
	var next atomic.Int64
	return func(ctx context.Context, _ int) error {
		i := next.Add(1) - 1
		if int(i) >= len(toks) {
			return errExhausted
		}
		return op(ctx, toks[i])
	}
}

// Preissue issues n tokens on t from clients workers and returns their
// handles.
func Preissue(ctx context.Context, t Target, n, clients int, progress io.Writer) ([]string, error) {
	return issueWith(ctx, n, clients, progress, func(ctx context.Context, key string) (string, error) { return t.Issue(ctx, key) })
}

// issueWith issues n tokens with issue from clients workers.
func issueWith(ctx context.Context, n, clients int, progress io.Writer, issue func(ctx context.Context, key string) (string, error)) ([]string, error) {
	if n < 1 {
		return nil, fmt.Errorf("bench: need --tokens >= 1 to pre-issue")
	}
	fmt.Fprintf(progress, "issuing %d tokens...\n", n)
	var done, failed atomic.Int64
	fillCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := reportProgress(fillCtx, progress, "pre-issue", &done, &failed)
	defer stop()
	toks := make([]string, n)
	keys := newKeys()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for range max(1, clients) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < n && fillCtx.Err() == nil; i = int(next.Add(1) - 1) {
				tok, err := retryUnavailable(fillCtx, func() (string, error) { return issue(fillCtx, keys.next()) })
				if err != nil {
					errs <- fmt.Errorf("bench: pre-issue: %w", err)
					cancel()
					return
				}
				toks[i] = tok
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	return toks, ctx.Err()
}

// unavailableFor is how long a pre-issue retries a write the cluster
// answered 503 to (no leader, an election under way): a filling run
// outlives a leader change, which a busy machine makes likely over
// minutes of writes.
const unavailableFor = 30 * time.Second

// retryUnavailable runs issue until it succeeds, fails otherwise, or 503s
// have gone on for unavailableFor. A retried write may have committed
// before its answer was lost; the filler then holds one token more than
// it returns, which no measurement reads.
func retryUnavailable(ctx context.Context, issue func() (string, error)) (string, error) {
	var since time.Time
	wait := 10 * time.Millisecond
	for {
		tok, err := issue()
		var e *client.Error
		if err == nil || !errors.As(err, &e) || e.Status != http.StatusServiceUnavailable {
			return tok, err
		}
		if since.IsZero() {
			since = time.Now()
		} else if time.Since(since) > unavailableFor {
			return "", err
		}
		select {
		case <-ctx.Done():
			return "", err
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

// rotateOp rotates fresh refresh tokens, each once, taking an access
// token with the successor: the refresh grant's write.
func rotateOp(ctx context.Context, ts *Tokenstore, cfg Config, progress io.Writer) (Op, error) {
	toks, err := issueWith(ctx, cfg.Tokens, cfg.Clients, progress, func(ctx context.Context, _ string) (string, error) {
		res, err := ts.node().Issue(ctx, wire.IssueRequest{Kind: token.KindOAuth2Refresh, Subject: "bench", ClientID: benchClient})
		if err != nil {
			return "", err
		}
		return res.Token, nil
	})
	if err != nil {
		return nil, err
	}
	return onceEach(toks, func(ctx context.Context, tok string) error {
		_, err := ts.node().Rotate(ctx, wire.RotateRequest{Token: tok, Access: &wire.AccessRequest{}})
		return err
	}), nil
}

// introspectOp introspects pre-issued tokens round-robin.
func introspectOp(ctx context.Context, ts *Tokenstore, cfg Config, progress io.Writer) (Op, error) {
	toks, err := Preload(ctx, ts, cfg.Tokens, cfg.Clients, progress)
	if err != nil {
		return nil, err
	}
	var next atomic.Uint64
	return func(ctx context.Context, _ int) error {
		r, err := ts.node().Introspect(ctx, toks[int(next.Add(1)%uint64(len(toks)))])
		if err == nil && !r.Active {
			err = fmt.Errorf("bench: an issued token introspects inactive")
		}
		return err
	}, nil
}

// oauthSteps are the steps of one oauth flow, in order, named after the
// workload; with batch, the code's exchange is one step.
func oauthSteps(batch bool) []string {
	if batch {
		return []string{"oauth_batch.issue_code", "oauth_batch.exchange", "oauth_batch.lookup", "oauth_batch.rotate"}
	}
	return []string{"oauth.issue_code", "oauth.consume_code", "oauth.issue_refresh", "oauth.issue_access", "oauth.lookup", "oauth.rotate"}
}

// stepSet holds a histogram per step of a composite operation.
type stepSet struct {
	names []string
	hists map[string]*hist
	fail  map[string]*failures
}

func newStepSet(names []string) *stepSet {
	s := &stepSet{names: names, hists: map[string]*hist{}, fail: map[string]*failures{}}
	for _, n := range names {
		s.hists[n], s.fail[n] = newHist(), &failures{}
	}
	return s
}

// time runs f as step name and records its latency.
func (s *stepSet) time(name string, f func() error) error {
	t := time.Now()
	err := f()
	s.hists[name].record(time.Since(t))
	if err != nil {
		s.fail[name].add(err)
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// results returns one Result per step, over the whole flow's run.
func (s *stepSet) results(flow *Result) []*Result {
	var out []*Result
	for _, n := range s.names {
		r := &Result{System: flow.System, Workload: n, Mode: flow.Mode, Clients: flow.Clients, Rate: flow.Rate, Elapsed: flow.Elapsed}
		s.fail[n].fill(r)
		r.summarize(s.hists[n].snapshot())
		out = append(out, r)
	}
	return out
}

// oauthOp is the authorization-code flow of one user: issue a code,
// exchange it (consume it, issue a refresh and an access token in the
// code's family), look the access token up lookups times (reading its own
// write through min_index on whichever node answers), then rotate the
// refresh token with a new access token. With batch the exchange is one
// atomic batch, as an OAuth server's storage adapter makes it; without,
// three writes in a row.
func oauthOp(ts *Tokenstore, lookups int, batch bool, s *stepSet) Op {
	flow := "oauth."
	if batch {
		flow = "oauth_batch."
	}
	return func(ctx context.Context, w int) error {
		subject := "user:" + strconv.Itoa(w)
		issueReq := func(kind, family string) wire.IssueRequest {
			return wire.IssueRequest{Kind: kind, Subject: subject, ClientID: benchClient, Scopes: []string{"read"}, Family: family}
		}
		issue := func(step, kind, family string) (res *wire.IssueResponse, err error) {
			err = s.time(step, func() error {
				res, err = ts.node().Issue(ctx, issueReq(kind, family))
				return err
			})
			return res, err
		}
		code, err := issue(flow+"issue_code", token.KindOAuth2Code, "")
		if err != nil {
			return err
		}
		consume := wire.ConsumeRequest{Token: code.Token, Kind: token.KindOAuth2Code, ClientID: benchClient}
		var refresh, access *wire.IssueResponse
		if batch {
			err = s.time(flow+"exchange", func() error {
				res, err := ts.node().Batch(ctx, client.ConsumeOp(consume),
					client.IssueOp(issueReq(token.KindOAuth2Refresh, code.Family)), client.IssueOp(issueReq(token.KindAccess, code.Family)))
				if err == nil {
					refresh, access = res.Results[1].Issue, res.Results[2].Issue
				}
				return err
			})
		} else {
			err = s.time(flow+"consume_code", func() error {
				_, err := ts.node().Consume(ctx, consume)
				return err
			})
			if err == nil {
				refresh, err = issue(flow+"issue_refresh", token.KindOAuth2Refresh, code.Family)
			}
			if err == nil {
				access, err = issue(flow+"issue_access", token.KindAccess, code.Family)
			}
		}
		if err != nil {
			return err
		}
		for range lookups {
			if err := s.time(flow+"lookup", func() error {
				_, _, err := ts.node().Lookup(ctx, access.Token, client.LookupOptions{MinIndex: access.Index})
				return err
			}); err != nil {
				return err
			}
		}
		return s.time(flow+"rotate", func() error {
			_, err := ts.node().Rotate(ctx, wire.RotateRequest{Token: refresh.Token, ClientID: benchClient, Access: &wire.AccessRequest{}})
			return err
		})
	}
}
