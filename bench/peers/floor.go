package peers

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/tokenstore/tokenstore/api/wire"
	"github.com/tokenstore/tokenstore/bench/load"
	"github.com/tokenstore/tokenstore/internal/proccluster"
)

// floorRequests are the API calls the load driver makes, by path, each
// with the request type a tokenstore node decodes its body into.
var floorRequests = map[string]func() any{
	"/v1/tokens":         func() any { return new(wire.IssueRequest) },
	"/v1/tokens/consume": func() any { return new(wire.ConsumeRequest) },
	"/v1/tokens/lookup":  func() any { return new(wire.LookupRequest) },
	"/v1/nonces":         func() any { return new(wire.NonceRequest) },
}

// floorAnswer is the floor's one answer, about the size of a token
// record (a node's answers are 15 to 450 bytes): its fields are those
// of a record and of an issue answer, and "fresh" for a nonce check, so
// that the Go client decodes it whatever it asked.
var floorAnswer = []byte(`{"token":"tks_ac_QRmn83c1NtddDWnslKazTKpZ4kwGG0WT3IXukvfxmaS3PWtKG",` +
	`"id":"4jN15fUFUhSf6eiYfEkBEr","kind":"oauth2_code","status":"active","subject":"bench",` +
	`"client_id":"bench-app","expires_at":"2026-12-01T12:17:12.076137584Z","index":5,"fresh":true}` + "\n")

// FloorHandler is the HTTP floor: the least a JSON-over-HTTP token
// service does for a request. It decodes the body of each API call the
// load driver makes into that call's request type with encoding/json and
// writes floorAnswer; it stores nothing. A body that does not decode is
// answered 400, an unknown path 404.
func FloorHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, ok := floorRequests[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(req()); err != nil {
			http.Error(w, "bad JSON: "+err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(floorAnswer)
	})
}

// StartFloor runs bin (tokenstore-bench) floor on a free loopback port,
// its log in dir/floor.log, and waits until it accepts connections.
func StartFloor(ctx context.Context, bin, dir string) (*Server, error) {
	if bin == "" {
		return nil, fmt.Errorf("floor: no tokenstore-bench binary to serve it: %w", proccluster.ErrNotInstalled)
	}
	addrs, err := proccluster.FreeAddrs(1)
	if err != nil {
		return nil, err
	}
	return startOne(ctx, dir, load.FloorSystem, addrs[0], bin, "floor", "--listen", addrs[0])
}

// newFloor is the floor's Target: tokenstore's own, so that the floor
// gets the requests a node gets, body for body, from the same client.
func newFloor(srv *Server, clients int) load.Target {
	return load.NewTokenstore("http://"+srv.Addrs[0], "", clients)
}

// NewFloorServer is the floor's HTTP server: keep-alive on, and the
// timeouts of a node's API server, which cost the same per request.
func NewFloorServer() *http.Server {
	s := &http.Server{Handler: FloorHandler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	s.SetKeepAlivesEnabled(true)
	return s
}
