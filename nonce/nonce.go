// Package nonce detects replayed OAuth 1.0 nonces. A nonce is remembered
// with add() semantics (the first add wins, every later one is a replay)
// for as long as its timestamp is acceptable. Nonces are DC-local by
// design: they go to the local memcached, never through Raft.
package nonce

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Sentinel errors of nonce checks.
var (
	// ErrReplayed means the nonce was seen before within its window.
	ErrReplayed = errors.New("nonce replayed")
	// ErrOutOfWindow means the timestamp is too far from now; the backend
	// was not touched.
	ErrOutOfWindow = errors.New("timestamp out of window")
	// ErrInvalid means scope or nonce is empty, too long or not text.
	ErrInvalid = errors.New("invalid nonce")
	// ErrUnavailable means the nonce store cannot answer (down, timing out,
	// the breaker open, or the local backend full).
	ErrUnavailable = errors.New("nonce store unavailable")
)

// MaxLen bounds scope and nonce.
const MaxLen = 256

// expiryMargin is how much longer than its timestamp stays acceptable a
// nonce is kept (see Check).
const expiryMargin = 5 * time.Second

// Backend remembers keys with add() semantics.
type Backend interface {
	// Add stores key for ttl unless it is present; it reports whether the
	// key was absent (fresh). A backend failure wraps ErrUnavailable.
	Add(key string, ttl time.Duration) (fresh bool, err error)
}

// Config configures a Checker.
type Config struct {
	DC       string        // part of every key: nonces are DC-local
	Window   time.Duration // accepted clock skew either way; default 5m
	FailOpen bool          // answer fresh when the store is unavailable
	Now      func() time.Time
	Registry prometheus.Registerer
}

// Checker validates nonce requests and records them in a Backend.
type Checker struct {
	backend Backend
	cfg     Config
	checks  *prometheus.CounterVec
}

// Close releases the backend's connections, if it holds any.
func (c *Checker) Close() error {
	if cl, ok := c.backend.(io.Closer); ok {
		return cl.Close()
	}
	return nil
}

// NewChecker returns a checker over backend.
func NewChecker(backend Backend, cfg Config) *Checker {
	if cfg.Window <= 0 {
		cfg.Window = 5 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	return &Checker{backend: backend, cfg: cfg, checks: promauto.With(cfg.Registry).NewCounterVec(prometheus.CounterOpts{
		Name: "tokenstore_nonce_checks_total",
		Help: "Nonce checks by outcome: fresh, replayed, out_of_window, invalid, unavailable, fail_open.",
	}, []string{"outcome"})}
}

// Window returns the accepted skew.
func (c *Checker) Window() time.Duration { return c.cfg.Window }

// Check records (scope, nonce) sent at timestamp (Unix seconds). It
// returns nil for a fresh nonce, or ErrReplayed, ErrOutOfWindow,
// ErrInvalid or ErrUnavailable. A timestamp outside the window is refused
// before the store is touched.
func (c *Checker) Check(scope, nonce string, timestamp int64) error {
	if err := checkText("scope", scope); err != nil {
		c.checks.WithLabelValues("invalid").Inc()
		return err
	}
	if err := checkText("nonce", nonce); err != nil {
		c.checks.WithLabelValues("invalid").Inc()
		return err
	}
	now := c.cfg.Now()
	w := int64(c.cfg.Window / time.Second)
	if timestamp < now.Unix()-w || timestamp > now.Unix()+w {
		c.checks.WithLabelValues("out_of_window").Inc()
		return fmt.Errorf("%w: %d is more than %s from now", ErrOutOfWindow, timestamp, c.cfg.Window)
	}
	// Remember the nonce for as long as its timestamp stays acceptable
	// (through the second timestamp + window): a forgotten nonce whose
	// timestamp still passes would be a replay. A margin more, because
	// memcached counts expiry on a one-second clock that a timer moves
	// on: it lags real time by a second, more on a starved CPU, and an
	// item set while it lags expires that much early.
	ttl := time.Unix(timestamp, 0).Add(c.cfg.Window + expiryMargin).Sub(now)
	fresh, err := c.backend.Add(Key(c.cfg.DC, scope, nonce), ttl)
	switch {
	case err != nil && c.cfg.FailOpen:
		c.checks.WithLabelValues("fail_open").Inc()
		return nil
	case err != nil:
		c.checks.WithLabelValues("unavailable").Inc()
		return err
	case !fresh:
		c.checks.WithLabelValues("replayed").Inc()
		return ErrReplayed
	}
	c.checks.WithLabelValues("fresh").Inc()
	return nil
}

func checkText(name, v string) error {
	if v == "" || len(v) > MaxLen {
		return fmt.Errorf("%w: %s must be 1 to %d bytes", ErrInvalid, name, MaxLen)
	}
	if !utf8.ValidString(v) {
		return fmt.Errorf("%w: %s must be valid UTF-8", ErrInvalid, name)
	}
	return nil
}

// Key is the store key of a nonce: a stable hash of (DC, scope, nonce),
// 48 characters, the same in every process, and never the nonce itself
// (a nonce may be derived from a secret, and memcached keys reach logs).
func Key(dc, scope, nonce string) string {
	// The digest is of "len:part" for each part: length-prefixed, so
	// ("a", "bc") and ("ab", "c") differ. Parts within MaxLen fit the
	// buffer on the stack; a longer DC name takes a heap one.
	var stack [3 * (MaxLen + 8)]byte
	msg := stack[:0]
	for _, part := range []string{dc, scope, nonce} {
		msg = strconv.AppendInt(msg, int64(len(part)), 10)
		msg = append(msg, ':')
		msg = append(msg, part...)
	}
	sum := sha256.Sum256(msg)
	var key [len(keyPrefix) + 43]byte // 43: 32 bytes in unpadded base64
	copy(key[:], keyPrefix)
	base64.RawURLEncoding.Encode(key[len(keyPrefix):], sum[:])
	return string(key[:])
}

const keyPrefix = "tsn1:"
