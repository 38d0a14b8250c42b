package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/api"
	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/cluster"
	"github.com/tokenstore/tokenstore/fsm"
	"github.com/tokenstore/tokenstore/internal/testcluster"
	"github.com/tokenstore/tokenstore/token"
)

// forwardedBody is the body of a batch of n forwarded issue writes, as a
// follower sends it to the leader.
func forwardedBody(b *testing.B, n int) []byte {
	args := &cluster.ForwardedBatch{}
	for i := range n {
		e, err := fsm.Encode(&fsm.Issue{TTL: int64(10 * time.Minute), Record: fsm.Record{
			ID: fmt.Sprintf("id%020d", i), Hash: strings.Repeat("h", 32), Kind: "oauth2_code",
			Subject: "user:42", ClientID: "app1", Scopes: []string{"read"}, Family: "grant-7",
			IP: "198.51.100.7", UserAgent: "bench/1.0", Generator: "key:bench",
		}})
		if err != nil {
			b.Fatal(err)
		}
		args.Writes = append(args.Writes, cluster.ForwardedWrite{Req: fmt.Sprintf("AbCdEfGhIjKlMnOp.%d", i), Entry: e})
	}
	return cluster.EncodeRPC(args)
}

// BenchmarkAdmitForwardedBatch is what the leader does with the body of a
// batch of 32 forwarded writes before it queues them: decode the call,
// decode, check and re-encode each write. The figures are per write.
func BenchmarkAdmitForwardedBatch(b *testing.B) {
	const n = 32
	check := api.CommandChecker(token.DefaultPolicy(), time.Minute)
	body := forwardedBody(b, n)
	b.ReportAllocs()
	for b.Loop() {
		_, errs, err := cluster.DecodeForwardedBatch(check, body)
		if err != nil || errs[0] != nil {
			b.Fatal(err, errs[0])
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/write")
	b.ReportMetric(float64(testing.AllocsPerRun(10, func() { cluster.DecodeForwardedBatch(check, body) }))/n, "allocs/write")
}

// startForBench starts an in-process 3-node cluster and returns its
// leader and a follower, both ready.
func startForBench(b *testing.B) (leader, follower *testcluster.Node) {
	c := testcluster.StartCluster(b, testcluster.Options{}, testcluster.Options{}, testcluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	leader, err := c.WaitForLeader(ctx)
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range c.Nodes() {
		if n != leader {
			follower = n
		}
	}
	waitFor(b, "the cluster ready", time.Minute, func() error { return errors.Join(leader.Ready(), follower.Ready()) })
	return leader, follower
}

var benchIssue = wire.IssueRequest{Kind: "oauth2_code", Subject: "user:42", ClientID: "app1", Scopes: []string{"read"},
	Family: "grant-7", IP: "198.51.100.7", UserAgent: "bench/1.0"}

// reportCPU resets b's timer and returns a function that reports the
// process's CPU time (user and system, every node and the client) per
// operation since, as cpu-µs/op: less moved by other work on the machine
// than ns/op.
func reportCPU(b *testing.B) func() {
	var before syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	b.ResetTimer()
	return func() {
		b.StopTimer()
		var after syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &after)
		cpu := after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano()
		b.ReportMetric(float64(cpu)/1e3/float64(b.N), "cpu-µs/op")
	}
}

// BenchmarkConsumeThroughFollower consumes, through a follower, tokens
// issued before the clock; as BenchmarkIssueThroughFollower otherwise.
func BenchmarkConsumeThroughFollower(b *testing.B) {
	leader, f := startForBench(b)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	secrets := make(chan string, b.N)
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for len(secrets) < cap(secrets) {
				out, err := leader.Client.Issue(ctx, benchIssue)
				if err != nil {
					b.Error(err)
					return
				}
				select {
				case secrets <- out.Token:
				default:
				}
			}
		})
	}
	wg.Wait()
	b.SetParallelism(32)
	b.ReportAllocs()
	defer reportCPU(b)()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := f.Client.Consume(ctx, wire.ConsumeRequest{Token: <-secrets, ClientID: "app1"}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkIssueThroughFollower issues tokens through a follower of an
// in-process 3-node cluster, 64 at a time: the whole write path, HTTP
// client included, on all three nodes. allocs/op and B/op are per write
// summed over the nodes; ns/op is noisy (one machine plays every part).
// Run it with a fixed count, e.g. -benchtime 20000x.
func BenchmarkIssueThroughFollower(b *testing.B) {
	_, f := startForBench(b)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	req := benchIssue
	// A warm-up, so that connections and pools are made before the clock.
	for range 64 {
		if _, err := f.Client.Issue(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
	b.SetParallelism(32)
	b.ReportAllocs()
	defer reportCPU(b)()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := f.Client.Issue(ctx, req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
