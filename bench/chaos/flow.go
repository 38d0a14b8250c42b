package chaos

import (
	"context"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/bench/history"
	"github.com/tokenstore/tokenstore/client"
	"github.com/tokenstore/tokenstore/token"
)

// Token kinds of an authorization-code flow.
const (
	flowCode    = token.KindOAuth2Code
	flowRefresh = token.KindOAuth2Refresh
	flowAccess  = token.KindAccess
)

// flow is the authorization-code flow of one user: issue a code, consume
// it, issue a refresh and an access token in the code's family, read the
// access token from the leader and rotate the refresh token with a new
// access token. About one flow in four consumes the code twice at once
// instead, and ends there. A step without a definite answer, or with a
// business error where success was needed, ends the flow.
func (c *chaosClient) flow(ctx context.Context) {
	id := c.r.h.NextFlow()
	race := c.rng.IntN(4) == 0
	code, ok := c.issueFlow(ctx, id, history.OpFlowIssueCode, wire.IssueRequest{Kind: flowCode})
	if !ok {
		return
	}
	if race {
		c.race(ctx, id, code.Token)
		return
	}
	n := c.node()
	op := c.do(ctx, history.Op{Kind: history.OpFlowConsume, Key: code.Token, Flow: id}, history.ResultUsed, func(ctx context.Context) error {
		_, err := n.Consume(ctx, wire.ConsumeRequest{Token: code.Token, Kind: flowCode, ClientID: benchClient})
		return err
	})
	if !definite(op, history.ResultUsed) {
		return
	}
	refresh, ok := c.issueFlow(ctx, id, history.OpFlowIssueRefresh, wire.IssueRequest{Kind: flowRefresh, Family: code.Family})
	if !ok {
		return
	}
	access, ok := c.issueFlow(ctx, id, history.OpFlowIssueAccess, wire.IssueRequest{Kind: flowAccess, Family: code.Family})
	if !ok {
		return
	}
	n = c.node()
	op = c.do(ctx, history.Op{Kind: history.OpFlowLookup, Key: access.Token, Flow: id}, history.ResultActive, func(ctx context.Context) error {
		_, _, err := n.Lookup(ctx, access.Token, client.LookupOptions{Consistency: wire.ConsistencyLeader})
		return err
	})
	if !definite(op, history.ResultActive) {
		return
	}
	n = c.node()
	c.do(ctx, history.Op{Kind: history.OpFlowRotate, Key: refresh.Token, Flow: id}, history.ResultUsed, func(ctx context.Context) error {
		_, err := n.Rotate(ctx, wire.RotateRequest{Token: refresh.Token, ClientID: benchClient, Access: &wire.AccessRequest{}})
		return err
	})
}

// definite reports whether op was answered with success.
func definite(op history.Op, success string) bool {
	return op.Outcome == history.OutcomeOK && op.Result == success
}

// race consumes the code twice at the same time, through a node of the
// client's DC and a node of another DC (another node of the same DC when
// there is only one), and records both. The client goes on once its own
// DC answered: a far consume held up by a partition must not stall a
// client of the side that still works.
func (c *chaosClient) race(ctx context.Context, id int, code string) {
	consume := func(n *client.Client) {
		c.do(ctx, history.Op{Kind: history.OpFlowRace, Key: code, Flow: id}, history.ResultUsed, func(ctx context.Context) error {
			_, err := n.Consume(ctx, wire.ConsumeRequest{Token: code, Kind: flowCode, ClientID: benchClient})
			return err
		})
	}
	near, far := c.node(), c.farNode()
	c.r.background.Add(1)
	go func() {
		defer c.r.background.Done()
		consume(far)
	}()
	consume(near)
}

// farNode is a random node of another DC, or with a single DC the next
// node of the client's own.
func (c *chaosClient) farNode() *client.Client {
	var dcs []string
	for _, dc := range c.r.cfg.DCs {
		if dc.Name != c.dc {
			dcs = append(dcs, dc.Name)
		}
	}
	if len(dcs) == 0 {
		return c.node()
	}
	nodes := c.r.nodesOf(dcs[c.rng.IntN(len(dcs))])
	if len(nodes) == 0 {
		return c.node()
	}
	return nodes[c.rng.IntN(len(nodes))]
}

// issueFlow issues a server-minted token of a flow (subject "chaos",
// client benchClient, the chaos TTL) and records it under the token the
// answer names, the key of an issue being unknown before. It reports
// whether the issue was acknowledged.
func (c *chaosClient) issueFlow(ctx context.Context, id int, kind string, req wire.IssueRequest) (*wire.IssueResponse, bool) {
	req.Subject, req.ClientID, req.TTL = "chaos", benchClient, tokenTTL.String()
	n := c.node()
	op := history.Op{Kind: kind, Flow: id}
	var res *wire.IssueResponse
	c.call(ctx, &op, history.ResultCreated, func(ctx context.Context) (err error) {
		if res, err = n.Issue(ctx, req); err == nil {
			op.Key = res.Token
		}
		return err
	})
	c.r.h.Add(op)
	return res, definite(op, history.ResultCreated)
}
