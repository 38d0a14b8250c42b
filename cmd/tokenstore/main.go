// Command tokenstore is the token store daemon and its tools:
//
//	tokenstore serve   run a node
//	tokenstore token   issue, look up, consume, revoke and list tokens
//	tokenstore nonce   record an OAuth 1.0 replay nonce
//	tokenstore route   the primary-DC router, and its ATS and Envoy exports
//
// The benchmarks are a command of their own, tokenstore-bench: the daemon
// links none of their tooling.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
)

const usage = `usage: tokenstore <command> [flags]

commands:
  serve    run a token store node (no flags: single node, data in ./data)
  token    issue | lookup | introspect | consume | revoke | get | list tokens
  nonce    record an OAuth 1.0 nonce (fresh, or an error for a replay)
  route    primary-DC router: proxy in front of the application servers;
           export its rules for Apache Traffic Server (tslua) or Envoy
  version  print the version

Run "tokenstore <command> -h" for the flags of a command.
`

var version = "dev"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "serve":
		err = serve(args)
	case "token":
		err = tokenCmd(args)
	case "nonce":
		err = nonceCmd(args)
	case "route":
		err = routeCmd(args)
	case "version":
		fmt.Println("tokenstore", version)
	case "-h", "--help", "help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "tokenstore: unknown command %q\n\n%s", cmd, usage)
		os.Exit(2)
	}
	if errors.Is(err, flag.ErrHelp) {
		return // -h: the flag set printed the usage
	}
	if errors.Is(err, errReported) {
		os.Exit(1)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tokenstore:", err)
		os.Exit(1)
	}
}

// errReported is an error the command has logged already.
var errReported = errors.New("reported")

// envOr is the environment variable name, or def when it is unset.
func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
