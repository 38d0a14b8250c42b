package server

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/tokenstore/tokenstore/api"
)

// checkProfiles refuses profiles where anyone could read them: on a
// non-loopback API address without API keys (Insecure or not), or on a
// PprofAddr that is not loopback.
func checkProfiles(c *Config, apiAddr string) error {
	if c.Pprof && c.Keys == nil && !isLoopback(apiAddr) {
		return fmt.Errorf("refusing --pprof on the non-loopback API address %s without --api-keys, even with --insecure: use --pprof-addr on loopback", apiAddr)
	}
	if c.PprofAddr != "" && !isLoopback(c.PprofAddr) {
		return fmt.Errorf("refusing --pprof-addr %s: profiles are served on loopback only", c.PprofAddr)
	}
	return nil
}

// profiles serves the Go profiles under /debug/pprof/. The command line
// (pprof.Cmdline) is left out: it may hold a --gossip-key.
func profiles() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// withProfiles adds the profiles to the API's handler, behind the API's
// key check.
//
// It dispatches on the path as sent, not through a ServeMux, which would
// redirect a path that is not clean (as Envoy's authz checks send them,
// "/v1/authz/envoy/a//b") instead of handing it to the API.
func withProfiles(apiSrv *api.Server) http.Handler {
	prof := apiSrv.RequireKey("/debug/pprof/", profiles())
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/debug/pprof/") {
			prof.ServeHTTP(w, r)
			return
		}
		apiSrv.ServeHTTP(w, r)
	})
}

// profileServer serves the profiles on a listener of their own. It has no
// write timeout: a CPU profile or trace takes as long as it is asked to.
func profileServer(log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           profiles(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// listenProfiles binds PprofAddr; nil without it.
func listenProfiles(addr string) (net.Listener, error) {
	if addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("pprof listen: %w", err)
	}
	return ln, nil
}
