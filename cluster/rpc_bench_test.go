package cluster

import (
	"strings"
	"testing"

	"github.com/tokenstore/tokenstore/fsm"
)

// BenchmarkForwardedReply encodes and decodes the leader's answer to a
// batch of 32 forwarded issue writes, each with its record; the figures
// are per write.
func BenchmarkForwardedReply(b *testing.B) {
	const n = 32
	reply := &applyBatchReply{Replies: make([]rpcReply, n)}
	for i := range reply.Replies {
		rec := &fsm.Record{ID: strings.Repeat("i", 22), Hash: strings.Repeat("h", 32), Kind: "oauth2_code",
			Subject: "user:42", ClientID: "app1", Scopes: []string{"read"}, Family: "grant-7",
			IP: "198.51.100.7", UserAgent: "bench/1.0", Generator: "key:bench", CreatedAt: 1, ExpiresAt: 2,
			CreateIndex: 77, ModifyIndex: 77}
		reply.Replies[i] = *resultReply(fsm.Result{Record: rec}, 77, nil)
	}
	b.ReportAllocs()
	for b.Loop() {
		body, err := encodeRPC(reply)
		if err != nil {
			b.Fatal(err)
		}
		var back applyBatchReply
		if err := decodeRPC(body, &back); err != nil || len(back.Replies) != n {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/write")
}
