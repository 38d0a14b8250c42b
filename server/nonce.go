package server

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenstore/tokenstore/nonce"
)

// newNonceChecker builds the replay-nonce checker on its backend: memcached
// when servers are given, else the in-process one of the embedded default.
func newNonceChecker(c NonceConfig, dc string, log *slog.Logger, reg prometheus.Registerer) (*nonce.Checker, error) {
	if c.Window < time.Second {
		return nil, fmt.Errorf("--nonce-window %s: want at least 1s", c.Window)
	}
	var backend nonce.Backend
	if len(c.Memcached) > 0 {
		mc, err := nonce.NewMemcached(nonce.MemcachedConfig{Servers: c.Memcached, Timeout: c.Timeout, Registry: reg})
		if err != nil {
			return nil, err
		}
		backend = mc
		log.Info("replay nonces in memcached", "servers", c.Memcached, "window", c.Window)
	} else {
		if c.LocalMax < 1 {
			return nil, fmt.Errorf("--nonce-local-max %d: want at least 1", c.LocalMax)
		}
		backend = nonce.NewLocal(c.LocalMax)
		log.Warn("replay nonces are node-local: in-process store, not shared with other nodes (use --memcached)",
			"window", c.Window, "max", c.LocalMax)
	}
	if c.FailOpen {
		log.Warn("NONCE CHECKS FAIL OPEN: while the nonce store is down every nonce is accepted and replays pass unnoticed (--nonce-fail-open)")
	}
	return nonce.NewChecker(backend, nonce.Config{DC: dc, Window: c.Window, FailOpen: c.FailOpen, Registry: reg}), nil
}
