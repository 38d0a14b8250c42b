package main

import (
	"context"
	"flag"
	"os"
	"time"

	"github.com/tokenstore/tokenstore/bench/expiry"
)

func benchExpiry(args []string) error {
	fs := flag.NewFlagSet("bench expiry", flag.ContinueOnError)
	var cfg expiry.Config
	var sf serverFlags
	var jsonOut string
	fs.IntVar(&cfg.Nodes, "nodes", 1, "tokenstore nodes")
	fs.IntVar(&cfg.Tokens, "tokens", 1000000, "tokens preloaded to expire within --window")
	fs.DurationVar(&cfg.Window, "window", time.Minute, "the preloaded tokens' expiries are spread evenly over this window")
	fs.DurationVar(&cfg.ExpireAfter, "expire-after", 0, "the first expiry this long after the preload starts (0: estimated from the live tokens' issue rate, with room to spare)")
	fs.DurationVar(&cfg.GCGrace, "gc-grace", 10*time.Second, "the nodes' --gc-grace")
	fs.IntVar(&cfg.Live, "live", 10000, "live tokens (an hour's TTL), the ones looked up")
	fs.IntVar(&cfg.Clients, "clients", 64, "concurrent clients of the preload")
	fs.Float64Var(&cfg.LookupRate, "lookup-rate", 1000, "lookups of live tokens per second (open loop), from the end of the preload on")
	fs.DurationVar(&cfg.Segment, "segment", 5*time.Second, "lookup latencies are taken in segments this long")
	fs.DurationVar(&cfg.After, "after", 20*time.Second, "how long lookups go on once only the live tokens are left")
	fs.DurationVar(&cfg.MaxWait, "max-wait", 15*time.Minute, "give up this long after the last token's GC time")
	fs.StringVar(&jsonOut, "json", "", "write the results as JSON to this file")
	sf.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	rep, err := runReport(&sf, jsonOut, func(bin, dir string, args []string) { cfg.Binary, cfg.Dir, cfg.NodeArgs = bin, dir, args },
		func(ctx context.Context) (*expiry.Report, error) { return expiry.Run(ctx, cfg, os.Stderr) })
	if err != nil {
		return err
	}
	if rep.CleanS < 0 {
		return expiry.ErrNotClean
	}
	return nil
}
