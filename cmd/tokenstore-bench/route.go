package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/tokenstore/tokenstore/bench/load"
)

// echo is a small upstream for trials and benchmarks of the router: it
// answers every request with its DC.
func echo(args []string) error {
	fs := flag.NewFlagSet("echo", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:7481", "address to serve on")
	dc := fs.String("dc", "dc1", "DC name it answers with (X-Upstream-DC)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	body := []byte("served by " + *dc + "\n")
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("X-Upstream-DC", *dc)
		w.Header().Set("Content-Type", "text/plain")
		w.Write(body)
	})}
	fmt.Fprintf(os.Stderr, "tokenstore-bench echo: DC %s on %s\n", *dc, ln.Addr())
	return serveUntilSignal(srv, ln)
}

// routeBench compares the same request straight to an upstream and
// through the router in front of it, alternated.
func routeBench(args []string) error {
	fs := flag.NewFlagSet("route", flag.ContinueOnError)
	direct := fs.String("direct", "", "base URL of the upstream itself")
	via := fs.String("via", "", "base URL of the router in front of it")
	path := fs.String("path", "/wiki/Main_Page", "request path (and query) of each request")
	clients := fs.Int("clients", 64, "concurrent clients (closed loop)")
	duration := fs.Duration("duration", 10*time.Second, "measuring time of each half")
	rounds := fs.Int("rounds", 2, "alternations of direct and router runs (each runs duration/rounds)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *direct == "" || *via == "" || *rounds < 1 {
		return errors.New("usage: tokenstore-bench route --direct URL --via URL [--path P] [--clients N] [--duration D] [--rounds R]")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	return compareRoute(ctx, *direct, *via, *path, *clients, *duration, *rounds)
}

// compareRoute runs the same GET of path straight to the upstream at
// direct and through the router at via, in rounds alternations, and
// prints both results and their ratio.
func compareRoute(ctx context.Context, direct, via, path string, clients int, duration time.Duration, rounds int) error {
	// Alternate short runs so that drift of the machine hits both sides.
	var results [2][]*load.Result
	for range rounds {
		for i, base := range []string{direct, via} {
			name := [2]string{"direct", "router"}[i]
			r, err := load.RunHTTP(ctx, load.HTTPConfig{Name: name, URL: strings.TrimRight(base, "/") + path,
				Clients: clients, Duration: duration / time.Duration(rounds)}, io.Discard)
			if err != nil {
				return err
			}
			results[i] = append(results[i], r)
		}
	}
	var sum [2]*load.Result
	for i := range 2 {
		sum[i] = load.Merge(results[i])
		fmt.Println(sum[i])
	}
	if sum[0].OpsPerS > 0 && sum[1].OpsPerS > 0 {
		fmt.Printf("ratio    router/direct: throughput %.2f, p50 %+.0fµs, p99 %+.0fµs\n", sum[1].OpsPerS/sum[0].OpsPerS,
			float64(sum[1].P50-sum[0].P50)/1e3, float64(sum[1].P99-sum[0].P99)/1e3)
	}
	return nil
}
