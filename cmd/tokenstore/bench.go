package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/tokenstore/tokenstore/bench"
)

func benchCmd(args []string) error {
	if len(args) == 0 || args[0] != "run" {
		return fmt.Errorf("usage: tokenstore bench run [flags]")
	}
	fs := flag.NewFlagSet("bench run", flag.ContinueOnError)
	var cfg bench.Config
	var workloads string
	var asJSON bool
	fs.StringVar(&cfg.Addr, "addr", envOr("TOKENSTORE_ADDR", "http://127.0.0.1:7400"), "node API address")
	fs.StringVar(&cfg.APIKey, "api-key", os.Getenv("TOKENSTORE_API_KEY"), "API key (or $TOKENSTORE_API_KEY)")
	fs.StringVar(&workloads, "workload", "issue,consume", "comma-separated: "+strings.Join(bench.Workloads, ", "))
	fs.IntVar(&cfg.Clients, "clients", 64, "concurrent clients (closed loop)")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "measuring time per workload")
	fs.IntVar(&cfg.Tokens, "tokens", 200000, "tokens issued before a consume or lookup run")
	fs.StringVar(&cfg.Memcached, "memcached", "", "memcached host:port for the direct memcached workload")
	fs.BoolVar(&asJSON, "json", false, "print results as JSON lines")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	opsPerS := map[string]float64{}
	for _, w := range strings.Split(workloads, ",") {
		cfg.Workload = strings.TrimSpace(w)
		res, err := bench.Run(ctx, cfg, os.Stderr)
		if err != nil {
			return err
		}
		opsPerS[res.Workload] = res.OpsPerS
		if asJSON {
			json.NewEncoder(os.Stdout).Encode(res)
		} else {
			fmt.Println(res)
		}
	}
	// The API's nonce check against the same add() made directly.
	if api, direct := opsPerS["nonce"], opsPerS["memcached"]; api > 0 && direct > 0 && !asJSON {
		fmt.Printf("ratio    nonce/memcached = %.2f\n", api/direct)
	}
	return nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
