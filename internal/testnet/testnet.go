// Package testnet picks loopback addresses for servers that tests start
// as separate processes (tokenstore nodes, memcached).
package testnet

import (
	"testing"

	"github.com/tokenstore/tokenstore/internal/freeport"
)

// Addrs returns n distinct free 127.0.0.1 addresses (freeport.Addrs).
func Addrs(t testing.TB, n int) []string {
	t.Helper()
	addrs, err := freeport.Addrs(n)
	if err != nil {
		t.Fatal(err)
	}
	return addrs
}

// Addr returns one address as Addrs does.
func Addr(t testing.TB) string {
	t.Helper()
	return Addrs(t, 1)[0]
}
