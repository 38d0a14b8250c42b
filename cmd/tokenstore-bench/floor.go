package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/tokenstore/tokenstore/bench/peers"
)

// floor serves the HTTP floor of bench peers (peers.FloorHandler) until
// SIGTERM or SIGINT: a process of its own, as a node is.
func floor(args []string) error {
	fs := flag.NewFlagSet("floor", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:7482", "address to serve on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := peers.NewFloorServer()
	fmt.Fprintf(os.Stderr, "tokenstore-bench floor on %s\n", ln.Addr())
	return serveUntilSignal(srv, ln)
}

// serveUntilSignal serves srv on ln until SIGTERM or SIGINT.
func serveUntilSignal(srv *http.Server, ln net.Listener) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() { <-ctx.Done(); srv.Close() }()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
