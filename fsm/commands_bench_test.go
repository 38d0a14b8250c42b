package fsm_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/fsm"
)

// benchIssue is an issue command of the size the API proposes for an
// authorization code.
func benchIssue(i int) *fsm.Issue {
	return &fsm.Issue{TTL: int64(10 * time.Minute), Record: fsm.Record{
		ID: fmt.Sprintf("id%020d", i), Hash: strings.Repeat("h", 32), Kind: "oauth2_code",
		Subject: "user:42", ClientID: "app1", Scopes: []string{"read", "write"}, Family: "grant-7",
		IP: "198.51.100.7", UserAgent: "bench/1.0", Generator: "key:bench",
	}}
}

// benchBatch is a batch of n encoded issue commands with request ids, as
// the leader's coalescer forms one.
func benchBatch(b *testing.B, n int) *fsm.Batch {
	batch := &fsm.Batch{Now: time.Now().UnixNano()}
	for i := range n {
		e, err := fsm.Encode(benchIssue(i))
		if err != nil {
			b.Fatal(err)
		}
		batch.Entries = append(batch.Entries, e)
		batch.Reqs = append(batch.Reqs, fmt.Sprintf("AbCdEfGhIjKlMnOp.%d", i))
	}
	return batch
}

// BenchmarkEncodeIssue is the encoding of one command, once per write.
func BenchmarkEncodeIssue(b *testing.B) {
	c := benchIssue(1)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := fsm.Encode(c); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeIssue is the decoding of one command, on every replica
// and on the leader for a forwarded write.
func BenchmarkDecodeIssue(b *testing.B) {
	e, err := fsm.Encode(benchIssue(1))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := fsm.Decode(e); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodeBatch is the encoding of the log entry of 64 writes;
// the figures are per write.
func BenchmarkEncodeBatch(b *testing.B) {
	const n = 64
	batch := benchBatch(b, n)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := fsm.Encode(batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/write")
}

// BenchmarkDecodeBatch is the decoding of the log entry of 64 writes,
// without its commands; the figures are per write.
func BenchmarkDecodeBatch(b *testing.B) {
	const n = 64
	e, err := fsm.Encode(benchBatch(b, n))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := fsm.Decode(e); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/write")
}

// BenchmarkDecodeConsume is the decoding of a consume command.
func BenchmarkDecodeConsume(b *testing.B) {
	e, err := fsm.Encode(&fsm.Consume{Hash: strings.Repeat("h", 32), Kind: "oauth2_code", ClientID: "app1", FamilyHold: int64(time.Hour)})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := fsm.Decode(e); err != nil {
			b.Fatal(err)
		}
	}
}
