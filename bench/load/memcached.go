package load

import (
	"context"
	"errors"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/tokenstore/tokenstore/nonce"
)

// Memcached is the Target of one memcached server: the nonce add() a
// tokenstore node makes, sent directly.
type Memcached struct {
	Unsupported
	mc *memcache.Client
}

// NewMemcached returns the Target of the server at addr.
func NewMemcached(addr string, clients int) *Memcached {
	mc := memcache.New(addr)
	mc.MaxIdleConns = clients
	mc.Timeout = 2 * time.Second
	return &Memcached{Unsupported: Unsupported{System: "memcached"}, mc: mc}
}

// Nonce adds the key a node would add for the nonce.
func (m *Memcached) Nonce(_ context.Context, key string) error {
	err := m.mc.Add(&memcache.Item{Key: nonce.Key("bench", "bench", key), Value: []byte{'1'}, Expiration: 301})
	if errors.Is(err, memcache.ErrNotStored) {
		err = ErrExists
	}
	return err
}

// Close closes the connections.
func (m *Memcached) Close() error { return m.mc.Close() }
