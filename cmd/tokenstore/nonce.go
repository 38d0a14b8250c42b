package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/tokenstore/tokenstore/client"
)

const nonceUsage = `usage: tokenstore nonce --scope SCOPE [--timestamp UNIX] NONCE

Records an OAuth 1.0 nonce: prints "fresh" the first time and exits 0;
a replay, a timestamp out of the window or a nonce store that cannot
answer is an error (exit 1).`

func nonceCmd(args []string) error {
	fs := flag.NewFlagSet("nonce", flag.ContinueOnError)
	addr := fs.String("addr", envOr("TOKENSTORE_ADDR", "http://127.0.0.1:7400"), "node API address")
	key := fs.String("api-key", os.Getenv("TOKENSTORE_API_KEY"), "API key (or $TOKENSTORE_API_KEY)")
	scope := fs.String("scope", "", "scope of the nonce, e.g. the OAuth consumer key")
	ts := fs.Int64("timestamp", 0, "oauth_timestamp in Unix seconds (default: now)")
	fs.Usage = func() { fmt.Fprintln(fs.Output(), nonceUsage); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("%s", nonceUsage)
	}
	if *ts == 0 {
		*ts = time.Now().Unix()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := client.New(*addr, client.WithAPIKey(*key)).CheckNonce(ctx, *scope, fs.Arg(0), *ts); err != nil {
		return err
	}
	fmt.Println("fresh")
	return nil
}
