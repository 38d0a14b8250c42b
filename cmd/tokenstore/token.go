package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/client"
	"github.com/tokenstore/tokenstore/token"
)

const tokenUsage = `usage: tokenstore token <issue|lookup|introspect|consume|rotate|revoke|get|list> [flags] [TOKEN|-]

A TOKEN argument of "-" (or none) is read from standard input, which keeps
secrets out of the process list and shell history.`

func tokenCmd(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("%s", tokenUsage)
	}
	sub := args[0]
	if sub == "-h" || sub == "--help" || sub == "help" {
		fmt.Println(tokenUsage)
		return nil
	}
	fs := flag.NewFlagSet("token "+sub, flag.ContinueOnError)
	addr := fs.String("addr", envOr("TOKENSTORE_ADDR", "http://127.0.0.1:7400"), "node API address")
	key := fs.String("api-key", os.Getenv("TOKENSTORE_API_KEY"), "API key (or $TOKENSTORE_API_KEY)")
	var (
		req                      wire.IssueRequest
		scopes, data, id, reason string
		consistency              string
		limit                    int
		cursor                   string
		family                   string
		rot                      wire.RotateRequest
		access                   bool
		accessTTL, accessScopes  string
	)
	switch sub {
	case "issue":
		fs.StringVar(&req.Kind, "kind", token.KindAccess, "token kind")
		fs.StringVar(&req.Subject, "subject", "", "subject (user)")
		fs.StringVar(&req.ClientID, "client-id", "", "OAuth client id")
		fs.StringVar(&scopes, "scopes", "", "comma-separated scopes")
		fs.StringVar(&req.TTL, "ttl", "", "time to live (Go duration; default: the kind's)")
		fs.Int64Var(&req.MaxUses, "max-uses", 0, "uses before the token is consumed (0: the kind's default)")
		fs.StringVar(&req.Family, "family", "", "grant family")
		fs.StringVar(&data, "data", "", "opaque JSON data")
		fs.StringVar(&req.RLC, "rlc", "", "rate-limit class")
		fs.StringVar(&req.Title, "title", "", "title shown in session lists")
	case "lookup":
		fs.StringVar(&consistency, "consistency", "", "local or leader")
	case "introspect":
	case "consume":
		fs.StringVar(&req.Kind, "kind", "", "required kind")
		fs.StringVar(&req.ClientID, "client-id", "", "required client id")
	case "rotate":
		fs.StringVar(&rot.ClientID, "client-id", "", "required client id")
		fs.StringVar(&rot.TTL, "ttl", "", "time to live of the successor (default: the kind's)")
		fs.BoolVar(&access, "access", false, "issue an access token with the successor")
		fs.StringVar(&accessTTL, "access-ttl", "", "time to live of the access token (default: the kind's)")
		fs.StringVar(&accessScopes, "access-scopes", "", "comma-separated scopes of the access token (default: the grant's)")
	case "revoke":
		fs.StringVar(&id, "id", "", "revoke by public id instead of by token")
		fs.StringVar(&family, "family", "", "revoke every token of this grant family instead")
		fs.StringVar(&req.Kind, "kind", "", "with --family: revoke only the family's tokens of this kind, leaving it open")
		fs.StringVar(&reason, "reason", "", "reason, shown to whoever presents the token")
	case "get":
	case "list":
		fs.StringVar(&req.Subject, "subject", "", "subject whose tokens to list")
		fs.StringVar(&req.Kind, "kind", "", "only this kind")
		fs.IntVar(&limit, "limit", 0, "page size")
		fs.StringVar(&cursor, "cursor", "", "cursor of the next page")
	default:
		return fmt.Errorf("unknown token command %q\n%s", sub, tokenUsage)
	}
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	c := client.New(*addr, client.WithAPIKey(*key))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var out any
	var err error
	switch sub {
	case "issue":
		if scopes != "" {
			req.Scopes = strings.Split(scopes, ",")
		}
		if data != "" {
			req.Data = json.RawMessage(data)
		}
		out, err = c.Issue(ctx, req)
	case "lookup":
		out, _, err = withSecret(fs, func(s string) (any, client.Meta, error) {
			r, m, err := c.Lookup(ctx, s, client.LookupOptions{Consistency: consistency})
			return r, m, err
		})
	case "introspect":
		out, _, err = withSecret(fs, func(s string) (any, client.Meta, error) {
			r, err := c.Introspect(ctx, s)
			return r, client.Meta{}, err
		})
	case "consume":
		out, _, err = withSecret(fs, func(s string) (any, client.Meta, error) {
			r, err := c.Consume(ctx, wire.ConsumeRequest{Token: s, Kind: req.Kind, ClientID: req.ClientID})
			return r, client.Meta{}, err
		})
	case "rotate":
		if access || accessTTL != "" || accessScopes != "" {
			rot.Access = &wire.AccessRequest{TTL: accessTTL}
			if accessScopes != "" {
				rot.Access.Scopes = strings.Split(accessScopes, ",")
			}
		}
		out, _, err = withSecret(fs, func(s string) (any, client.Meta, error) {
			rot.Token = s
			r, err := c.Rotate(ctx, rot)
			return r, client.Meta{}, err
		})
	case "revoke":
		switch {
		case family != "" && id != "":
			return fmt.Errorf("--id and --family: one at a time")
		case req.Kind != "" && family == "":
			return fmt.Errorf("--kind goes with --family")
		case family != "":
			n, e := c.RevokeFamilyKind(ctx, family, req.Kind, reason)
			out, err = wire.BulkRevokeResponse{Revoked: n}, e
		case id != "":
			out, err = c.RevokeID(ctx, id, reason)
		}
		if family != "" || id != "" {
			break
		}
		out, _, err = withSecret(fs, func(s string) (any, client.Meta, error) {
			r, err := c.Revoke(ctx, s, reason)
			return r, client.Meta{}, err
		})
	case "get":
		if fs.NArg() != 1 {
			return fmt.Errorf("usage: tokenstore token get ID")
		}
		out, err = c.Get(ctx, fs.Arg(0))
	case "list":
		out, err = c.List(ctx, req.Subject, client.ListOptions{Kind: req.Kind, Limit: limit, Cursor: cursor})
	}
	if err != nil {
		return err
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// withSecret takes the token from the argument, or from stdin for "-" or
// no argument.
func withSecret(fs *flag.FlagSet, f func(string) (any, client.Meta, error)) (any, client.Meta, error) {
	s := fs.Arg(0)
	if fs.NArg() > 1 {
		return nil, client.Meta{}, fmt.Errorf("one token at a time")
	}
	if s == "" || s == "-" {
		line, err := bufio.NewReader(os.Stdin).ReadString('\n')
		if err != nil && line == "" {
			return nil, client.Meta{}, fmt.Errorf("read token from stdin: %w", err)
		}
		s = strings.TrimSpace(line)
	}
	return f(s)
}
