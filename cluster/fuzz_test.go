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
