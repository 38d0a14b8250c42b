package cluster_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/api"
	"github.com/tokenstore/tokenstore/cluster"
	"github.com/tokenstore/tokenstore/fsm"
	"github.com/tokenstore/tokenstore/token"
)

// FuzzForwardedWrite feeds the leader's handlers of forwarded writes, one
// write or a batch, any body: they never panic; what they admit decodes,
// is admitted again unchanged (the checks are idempotent), and applies as
// a command, never as a bad entry.
func FuzzForwardedWrite(f *testing.F) {
	check := api.CommandChecker(token.DefaultPolicy(), time.Minute)
	hash := strings.Repeat("h", 32)
	var batch []cluster.ForwardedWrite
	seed := func(c fsm.Command) {
		b, err := fsm.Encode(c)
		if err != nil {
			f.Fatal(err)
		}
		w := cluster.ForwardedWrite{Req: fmt.Sprint("req-", len(batch)), Entry: b}
		batch = append(batch, w)
		f.Add(cluster.EncodeRPC(&w))
		f.Add(cluster.EncodeRPC(&cluster.ForwardedBatch{Writes: []cluster.ForwardedWrite{w}}))
	}
	// The two probes of the node port: one unknown byte, and a forged
	// never-expiring developer token.
	f.Add(cluster.EncodeRPC(&cluster.ForwardedWrite{Req: "probe", Entry: []byte{0x63}}))
	seed(&fsm.Issue{Record: fsm.Record{ID: "forged0000000000000000", Kind: "developer", Hash: hash,
		Subject: "user:admin\x00\x1b[31m", Generator: "nobody"}})
	seed(&fsm.Issue{TTL: int64(time.Hour), Record: fsm.Record{ID: "ok00000000000000000000", Kind: "access", Hash: hash,
		Subject: "user:1", Scopes: []string{"read"}, Data: []byte(`{"a":1}`), IP: "192.0.2.1"}})
	seed(&fsm.Consume{Hash: hash, Kind: "oauth2_code", ClientID: "app"})
	seed(&fsm.Revoke{ID: "ok00000000000000000000", Reason: "r"})
	seed(&fsm.RevokeSubject{Subject: "user:1", Kind: "access"})
	seed(&fsm.RevokeFamily{Family: "f"})
	seed(&fsm.Rotate{Hash: hash, Kind: "oauth2_refresh", Next: fsm.Record{ID: "n", Hash: hash},
		Access: &fsm.Issue{Record: fsm.Record{ID: "a", Hash: strings.Repeat("a", 32), Kind: "access"}}})
	seed(&fsm.Touch{Uses: []fsm.Use{{Hash: hash, At: 1, IP: "::1"}}})
	seed(&fsm.Batch{Entries: [][]byte{{0x63}}})
	seed(&fsm.Expire{Before: 1, IDs: []string{"x"}})
	seed(&fsm.RevokeFamilyKind{Family: "f", Kind: "access"})
	okIssue := mustEncode(f, &fsm.Issue{TTL: int64(time.Hour), Record: fsm.Record{ID: "ok00000000000000000001", Kind: "access", Hash: strings.Repeat("b", 32)}})
	okConsume := mustEncode(f, &fsm.Consume{Hash: hash})
	seed(&fsm.ClientBatch{Ops: [][]byte{okIssue, okConsume}})
	seed(&fsm.ClientBatch{Ops: [][]byte{okIssue, mustEncode(f, &fsm.ClientBatch{Ops: [][]byte{okConsume}})}})
	seed(&fsm.ClientBatch{Ops: [][]byte{mustEncode(f, &fsm.Batch{Entries: [][]byte{okConsume}})}})
	seed(&fsm.ClientBatch{Ops: make([][]byte, fsm.MaxBatchOps+1)})
	f.Add([]byte{0x82, 0xa1, 'q', 0xa1, 'x', 0xa1, 'e', 0xc4, 0x01, 0x63})
	// Every seed in one batch, refused writes among admitted ones, and a
	// batch larger than the leader takes.
	f.Add(cluster.EncodeRPC(&cluster.ForwardedBatch{Writes: batch}))
	f.Add(cluster.EncodeRPC(&cluster.ForwardedBatch{Writes: make([]cluster.ForwardedWrite, cluster.MaxForwardBatch+1)}))
	f.Add([]byte{0x81, 0xa1, 'w', 0xdd, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, body []byte) {
		if entry, err := cluster.DecodeForwarded(check, body); err == nil {
			checkAdmitted(t, check, entry)
		}
		entries, errs, err := cluster.DecodeForwardedBatch(check, body)
		if err != nil {
			return
		}
		if len(entries) > cluster.MaxForwardBatch || len(errs) != len(entries) {
			t.Fatalf("a batch decoded as %d entries and %d errors, at most %d", len(entries), len(errs), cluster.MaxForwardBatch)
		}
		for i, entry := range entries {
			if errs[i] == nil {
				checkAdmitted(t, check, entry)
			}
		}
	})
}

// checkAdmitted fails t unless entry, a forwarded write the leader
// admitted, is admitted again unchanged and applies as a command.
func checkAdmitted(t *testing.T, check func(fsm.Command) error, entry []byte) {
	t.Helper()
	again, err := cluster.DecodeForwarded(check, cluster.EncodeRPC(&cluster.ForwardedWrite{Req: "r", Entry: entry}))
	if err != nil || !bytes.Equal(again, entry) {
		t.Fatalf("an admitted write admitted again: %v, changed %v", err, !bytes.Equal(again, entry))
	}
	batch, err := fsm.Encode(&fsm.Batch{Now: int64(time.Hour), Entries: [][]byte{entry}, Reqs: []string{"r"}})
	if err != nil {
		t.Fatal(err)
	}
	res := fsm.New().Apply(1, batch)
	if len(res.Batch) != 1 || errors.Is(res.Batch[0].Err, fsm.ErrBadEntry) {
		t.Fatalf("an admitted write applied as %+v", res)
	}
}

// FuzzReadCall feeds the decoder of leader reads any body: it never
// panics, and what it decodes encodes and decodes back to the same call.
func FuzzReadCall(f *testing.F) {
	f.Add(cluster.EncodeRPC(&cluster.ReadCall{Hash: strings.Repeat("h", 32), MinIndex: 7}))
	f.Add([]byte{0x63})
	f.Fuzz(func(t *testing.T, body []byte) {
		hash, min, err := cluster.DecodeRead(body)
		if err != nil {
			return
		}
		h2, m2, err := cluster.DecodeRead(cluster.EncodeRPC(&cluster.ReadCall{Hash: hash, MinIndex: min}))
		if err != nil || h2 != hash || m2 != min {
			t.Fatalf("read call (%q, %d) round trip: (%q, %d), %v", hash, min, h2, m2, err)
		}
	})
}

// A client batch is admitted from a peer as a client write, its ops
// checked as the API checks them; a batch of either kind among its ops,
// an op no client writes, too many ops or an op the checks refuse is
// refused.
func TestForwardedClientBatch(t *testing.T) {
	check := api.CommandChecker(token.DefaultPolicy(), time.Minute)
	hash := strings.Repeat("h", 32)
	issue := mustEncode(t, &fsm.Issue{TTL: int64(time.Hour), Record: fsm.Record{ID: "ok00000000000000000001", Kind: "access", Hash: hash}})
	consume := mustEncode(t, &fsm.Consume{Hash: hash})
	forward := func(c fsm.Command) ([]byte, error) {
		return cluster.DecodeForwarded(check, cluster.EncodeRPC(&cluster.ForwardedWrite{Req: "r", Entry: mustEncode(t, c)}))
	}
	entry, err := forward(&fsm.ClientBatch{Ops: [][]byte{issue, consume}})
	if err != nil {
		t.Fatalf("a client batch forwarded: %v", err)
	}
	checkAdmitted(t, check, entry)
	c, _ := fsm.Decode(entry)
	ops, err := c.(*fsm.ClientBatch).DecodeOps()
	if err != nil || ops[0].(*fsm.Issue).Record.MaxUses != 0 || ops[0].(*fsm.Issue).TTL != int64(time.Hour) {
		t.Fatalf("admitted ops %+v, %v: want them as the policy makes them", ops, err)
	}
	many := make([][]byte, fsm.MaxBatchOps+1)
	for i := range many {
		many[i] = consume
	}
	for name, cb := range map[string]*fsm.ClientBatch{
		"no op":             {},
		"too many":          {Ops: many},
		"a nested batch":    {Ops: [][]byte{issue, mustEncode(t, &fsm.ClientBatch{Ops: [][]byte{consume}})}},
		"a coalesced batch": {Ops: [][]byte{mustEncode(t, &fsm.Batch{Entries: [][]byte{consume}})}},
		"an expiry":         {Ops: [][]byte{mustEncode(t, &fsm.Expire{IDs: []string{"x"}})}},
		"a touch":           {Ops: [][]byte{mustEncode(t, &fsm.Touch{Uses: []fsm.Use{{Hash: hash}}})}},
		"a bad op":          {Ops: [][]byte{consume, mustEncode(t, &fsm.Consume{Hash: "short"})}},
		"an undecodable op": {Ops: [][]byte{{byte(fsm.TypeIssue), 0xc1}}},
	} {
		if _, err := forward(cb); !errors.Is(err, cluster.ErrRefused) {
			t.Errorf("%s: forwarded as %v, want ErrRefused", name, err)
		}
	}
}
