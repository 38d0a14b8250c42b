// Package testnet picks loopback addresses for servers that tests start
// as separate processes (tokenstore nodes, memcached), which must be told
// their ports before they bind them.
package testnet

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// Addrs returns n distinct 127.0.0.1 addresses whose ports are free for
// both TCP and UDP (gossip uses both).
//
// The ports come from below the kernel's ephemeral range. A port picked
// by listening on :0 and closing is itself ephemeral: until the server
// binds it, any outgoing connection of any concurrent test may take it
// (seen as "address already in use" when packages run in parallel).
// Below the range only an explicit bind can collide, and the random
// choice from thousands of ports makes that unlikely.
func Addrs(t testing.TB, n int) []string {
	t.Helper()
	low := ephemeralLow()
	const floor = 10000
	if low-floor < 1000 {
		t.Fatalf("testnet: ephemeral ports start at %d, too low to pick test ports below them", low)
	}
	var held []io.Closer
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	var out []string
	for tries := 0; len(out) < n; tries++ {
		if tries > 50*n {
			t.Fatalf("testnet: found only %d of %d free loopback ports", len(out), n)
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(floor+rand.IntN(low-floor)))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		held = append(held, l)
		u, err := net.ListenPacket("udp", addr)
		if err != nil {
			continue
		}
		held = append(held, u)
		out = append(out, addr)
	}
	return out
}

// Addr returns one address as Addrs does.
func Addr(t testing.TB) string {
	t.Helper()
	return Addrs(t, 1)[0]
}

// ephemeralLow is the first port of the kernel's ephemeral range.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if low, err := strconv.Atoi(f[0]); err == nil {
				return low
			}
		}
	}
	fmt.Fprintln(os.Stderr, "testnet: cannot read the ephemeral port range; assuming 32768")
	return 32768
}
