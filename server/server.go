// Package server wires one token store node: the Raft node of package
// cluster, the replay-nonce store, the HTTP API of package api behind an
// http.Server with its timeouts, the optional Go profiles, and the order
// of a graceful stop (drain the requests in flight, then close the node).
// tokenstore serve and the in-process test harness both build their
// nodes with New, so what a test runs is what an operator runs.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tokenstore/tokenstore/api"
	"github.com/tokenstore/tokenstore/cluster"
	"github.com/tokenstore/tokenstore/internal/logging"
	"github.com/tokenstore/tokenstore/nonce"
	"github.com/tokenstore/tokenstore/token"
)

// Server is one node with its API server.
type Server struct {
	cfg     Config
	log     *slog.Logger
	reg     *prometheus.Registry
	format  *token.Format
	hasher  token.Hasher
	node    *cluster.Node
	api     *api.Server
	http    *http.Server
	ln      net.Listener
	pprof   *http.Server
	pprofLn net.Listener // nil without PprofAddr
	// ownNonces is the nonce checker the server made (not one given in
	// Config), closed with it.
	ownNonces *nonce.Checker
	errs      chan error

	stopOnce sync.Once
	stopErr  error
}

// New checks cfg, opens the node and builds its API and HTTP servers; Start
// serves them. On an error nothing is left open, cfg.Listener included.
func New(cfg Config) (*Server, error) {
	s, err := build(cfg)
	if err != nil && cfg.Listener != nil {
		cfg.Listener.Close()
	}
	return s, err
}

func build(cfg Config) (*Server, error) {
	if cfg.LogOutput == nil {
		cfg.LogOutput = os.Stderr
	}
	log, err := logging.New(cfg.LogOutput, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return nil, err
	}
	if cfg.Policy == nil {
		cfg.Policy = token.DefaultPolicy()
	}
	format, err := token.NewFormat(cfg.Vendor, cfg.Policy)
	if err != nil {
		return nil, err
	}
	if err := cfg.check(log); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: log, format: format, hasher: token.NewHasher(cfg.HashKey), errs: make(chan error, 2)}
	s.reg = prometheus.NewRegistry()
	s.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	nonces := cfg.NonceChecker
	if nonces == nil {
		if s.ownNonces, err = newNonceChecker(cfg.Nonce, cfg.DC, log, s.reg); err != nil {
			return nil, err
		}
		nonces = s.ownNonces
	}
	// The API listens first, so that the address other nodes are told is
	// the one bound (port 0 allowed).
	if s.ln = cfg.Listener; s.ln == nil {
		if s.ln, err = net.Listen("tcp", cfg.APIAddr); err != nil {
			return nil, fmt.Errorf("api listen: %w", err)
		}
	}
	advertise := cfg.APIAdvertise
	if advertise == "" {
		advertise = s.ln.Addr().String()
	}
	if s.pprofLn, err = listenProfiles(cfg.PprofAddr); err != nil {
		s.closeListeners()
		return nil, err
	}
	ccfg := clusterConfig(&cfg, advertise, log)
	ccfg.Registry = s.reg
	ccfg.Check = api.CommandChecker(cfg.Policy, cfg.RotationGrace)
	if s.node, err = cluster.Open(ccfg); err != nil {
		s.closeListeners()
		return nil, err
	}
	apiNow := cfg.Now
	if apiNow == nil {
		apiNow = cfg.Clock
	}
	s.api = api.New(api.Config{
		Node: s.node, Policy: cfg.Policy, Format: format, Hasher: s.hasher, Keys: cfg.Keys,
		Nonces: nonces, DC: cfg.DC, Logger: log, Registry: s.reg, Gatherer: s.reg,
		RotationGrace: cfg.RotationGrace, Authz: cfg.Authz, Now: apiNow, MinIndexWait: cfg.MinIndexWait,
	})
	var handler http.Handler = s.api
	if cfg.Pprof {
		handler = withProfiles(s.api)
	}
	s.http = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ConnState:         cfg.ConnState,
	}
	s.pprof = profileServer(log)
	return s, nil
}

// Start serves the API, and the profiles on their own listener if any, in
// the background. Call it once.
func (s *Server) Start() {
	s.log.Info("tokenstore serving", "node", s.node.ID(), "dc", s.cfg.DC, "api_addr", s.APIAddr(),
		"raft_addr", s.node.RaftAddr(), "data_dir", s.cfg.DataDir, "auth", s.cfg.Keys != nil, "hmac", len(s.cfg.HashKey) > 0,
		"node_tls", s.cfg.TLS != nil)
	go func() { s.errs <- fmt.Errorf("api: %w", s.http.Serve(s.ln)) }()
	if s.pprofLn != nil {
		s.log.Info("serving Go profiles", "pprof_addr", s.pprofLn.Addr().String())
		go func() { s.errs <- fmt.Errorf("pprof: %w", s.pprof.Serve(s.pprofLn)) }()
	}
}

// Err delivers the error of a listener that stopped serving: one that
// failed, or http.ErrServerClosed once the server is stopped.
func (s *Server) Err() <-chan error { return s.errs }

// Shutdown stops the node gracefully: it stops accepting requests, waits
// for those in flight (up to DrainTimeout, or until ctx is done), then
// closes the node, handing leadership over. Profiles are not requests to
// drain: their listener closes at once. Later stops do nothing.
func (s *Server) Shutdown(ctx context.Context) error {
	return s.stop(func() error {
		s.pprof.Close()
		ctx, cancel := context.WithTimeout(ctx, s.cfg.DrainTimeout)
		defer cancel()
		// Requests still in flight after the drain keep running while the
		// node hands leadership over; the process exit ends them.
		if err := s.http.Shutdown(ctx); err != nil {
			s.log.Warn("drain incomplete", "err", err)
		}
		return s.closeNode()
	})
}

// Close stops the node without waiting for requests in flight: their
// connections are cut, then the node closes gracefully.
func (s *Server) Close() error {
	return s.stop(func() error {
		s.http.Close()
		s.pprof.Close()
		return s.closeNode()
	})
}

// Kill stops the node as a crash would: connections cut, no leadership
// transfer, no gossip goodbye. The data directory is left as it is.
func (s *Server) Kill() {
	s.stop(func() error {
		s.http.Close()
		s.pprof.Close()
		s.node.Kill()
		return nil
	})
}

// stop runs the first stop asked for; the listeners close with it even if
// Start never ran.
func (s *Server) stop(f func() error) error {
	s.stopOnce.Do(func() {
		s.stopErr = f()
		s.closeListeners()
		if s.ownNonces != nil {
			s.ownNonces.Close()
		}
	})
	return s.stopErr
}

func (s *Server) closeNode() error {
	if err := s.node.Close(); err != nil && !errors.Is(err, cluster.ErrShutdown) {
		return fmt.Errorf("close raft: %w", err)
	}
	return nil
}

func (s *Server) closeListeners() {
	s.ln.Close()
	if s.pprofLn != nil {
		s.pprofLn.Close()
	}
}

// Node returns the Raft node.
func (s *Server) Node() *cluster.Node { return s.node }

// APIAddr returns the address the API listens on.
func (s *Server) APIAddr() string { return s.ln.Addr().String() }

// URL returns the API's base URL, http://APIAddr.
func (s *Server) URL() string { return "http://" + s.APIAddr() }

// Logger returns the node's logger.
func (s *Server) Logger() *slog.Logger { return s.log }

// Registry returns the registry of the node's metrics, served at /metrics.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// Format returns the format of the secrets the node mints and accepts.
func (s *Server) Format() *token.Format { return s.format }

// Hasher returns the hash the node stores secrets under.
func (s *Server) Hasher() token.Hasher { return s.hasher }
